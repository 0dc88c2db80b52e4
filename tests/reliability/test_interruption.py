"""Interruption: SIGKILL during training or reference precompute loses no finished work, and no
half-written file is ever read as valid.

- Training is killed (a real ``python -m chip train`` process, SIGKILL, no chance to clean up) at a
  random checkpointed step and resumed with ``--resume_from_checkpoint last``; it ends at the same
  step with the same metrics and weights as an uninterrupted run.
- Reference precompute is killed after some shards; the restart leaves those shard files untouched
  (same inode, same mtime) and ends with the same cache as an uninterrupted run.
- Damaged files (a manifest or shard cut short, a shard missing, a checkpoint torn while saving)
  are refused with one line, or recomputed/skipped on resume, never half-read.

Evaluation's kill/resume (answers file, torn last line) is tested in
tests/evaluation/test_eval_generate.py (test_killed_process_resumes, test_torn_last_line_is_repaired).
Set CHIP_TEST_KILL_STEP to replay a given kill step.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from chip.training.cli import parse_config, run_precompute
from chip.training.precompute import SHARD_SIZE_ENV
from chip.training.reference_cache import ReferenceCache, StaleCacheError
from tests.reliability.conftest import Run, assert_one_line_error, log_history
from tests.train_helpers import train_args, write_pairs

MAX_STEPS = 10  # 8 pairs, batch 2: 4 steps per epoch, so the kill and the resume may cross epochs
PRECOMPUTE_PAIRS = 16  # 8 shards of 2: seconds of work left after the kill point
WAIT_S = 300  # generous: the child imports torch and transformers on a shared machine


def wait_for(condition: Callable[[], bool], child: subprocess.Popen, what: str) -> None:
    """Poll a marker on disk until ``condition()``, failing if the child exits or time runs out."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert child.poll() is None, f"the child process ended (code {child.returncode}) before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def sigkill(child: subprocess.Popen) -> None:
    assert child.poll() is None, "the child process finished before it could be killed"
    os.kill(child.pid, signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL


def spawn_chip(argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``python -m chip ARGV`` in a separate process, its output kept in ``log`` for failures."""
    with log.open("wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "chip", *map(str, argv)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )


def complete_checkpoint(folder: Path) -> bool:
    """Trainer writes trainer_state.json last: once it parses, the checkpoint is whole."""
    try:
        return "global_step" in json.loads((folder / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False


# ---------------------------------------------------------------------------------- training
@pytest.mark.parametrize(
    "use_peft",
    [
        pytest.param(True, id="lora"),
        pytest.param(False, id="full", marks=pytest.mark.slow),
    ],
)
def test_training_killed_at_a_random_step_resumes_to_the_uninterrupted_result(
    use_peft: bool,
    tiny_model: Callable[..., Path],
    tmp_path: Path,
    run_chip: Callable[..., Run],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="chip")
    model, data = tiny_model("llava"), write_pairs(tmp_path / "data", n=8)
    common = dict(
        max_steps=MAX_STEPS,
        save_strategy="steps",
        save_steps=1,
        per_device_train_batch_size=2,
        use_peft=use_peft,
        lora_r=4,
        lora_alpha=8,
    )
    full = tmp_path / "full"
    assert run_chip(["train", *train_args(model, data, full, **common)]).code == 0

    kill_after = int(os.environ.get("CHIP_TEST_KILL_STEP", random.randint(1, MAX_STEPS // 2)))
    killed = tmp_path / "killed"
    argv = ["train", *train_args(model, data, killed, **common)]
    child = spawn_chip(argv, tmp_path / "killed.log")
    wait_for(
        lambda: complete_checkpoint(killed / f"checkpoint-{kill_after}"), child, f"checkpoint-{kill_after}"
    )
    sigkill(child)
    assert not (killed / "trainer_state.json").exists(), (
        f"the run finished before the kill (step {kill_after})"
    )

    resumed = run_chip([*argv, "--resume_from_checkpoint", "last"])
    assert resumed.code == 0, resumed.err[-2000:]
    [resumed_from] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("resuming from ")]
    assert int(resumed_from.rpartition("-")[2]) >= kill_after

    expected, got = log_history(full), log_history(killed)
    assert [h["step"] for h in got] == [h["step"] for h in expected] == list(range(1, MAX_STEPS + 1))
    for name in (
        "loss",
        "rewards/margins",
        "logps/chosen",
        "logps/rejected",
        "visual/margins",
        "kl/rejected",
    ):
        assert got[-1][name] == pytest.approx(expected[-1][name], rel=1e-4, abs=1e-6), (name, kill_after)
    weights_file = "adapter_model.safetensors" if use_peft else "model.safetensors"
    weights, reference = load_file(killed / weights_file), load_file(full / weights_file)
    assert weights.keys() == reference.keys()
    for key in reference:
        torch.testing.assert_close(
            weights[key], reference[key], rtol=1e-4, atol=1e-6, msg=f"{key} (kill {kill_after})"
        )


def test_resume_last_skips_a_checkpoint_torn_while_saving(
    tiny_model: Callable[..., Path],
    tmp_path: Path,
    run_chip: Callable[..., Run],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A kill while Trainer writes checkpoint-3 leaves it without a whole trainer_state.json: ``last``
    passes over it to checkpoint-2, and naming it explicitly is refused in one line."""
    caplog.set_level(logging.INFO, logger="chip")
    model, data = tiny_model("llava"), write_pairs(tmp_path / "data", n=4)
    out = tmp_path / "out"
    argv = [
        "train",
        *train_args(
            model, data, out, max_steps=3, save_strategy="steps", save_steps=1, per_device_train_batch_size=2
        ),
    ]
    assert run_chip(argv).code == 0
    state = out / "checkpoint-3" / "trainer_state.json"
    state.write_text(state.read_text()[:100])  # torn mid-write
    (out / "trainer_state.json").unlink()

    message = assert_one_line_error(
        run_chip([*argv, "--resume_from_checkpoint", out / "checkpoint-3"]), code=2
    )
    assert "incomplete checkpoint" in message

    caplog.clear()
    assert run_chip([*argv, "--resume_from_checkpoint", "last"]).code == 0
    logged = [r.getMessage() for r in caplog.records]
    assert "ignoring incomplete checkpoint(s) checkpoint-3 (killed while saving?)" in logged
    assert f"resuming from {out / 'checkpoint-2'}" in logged
    assert [h["step"] for h in log_history(out)] == [1, 2, 3]


def test_resume_last_without_any_checkpoint_starts_from_step_zero(
    tiny_model: Callable[..., Path], tmp_path: Path, run_chip: Callable[..., Run]
) -> None:
    """One command line serves a preemptible job's first start and each restart."""
    data = write_pairs(tmp_path / "data", n=4)
    out = tmp_path / "out"
    argv = [
        "train",
        *train_args(tiny_model("llava"), data, out, max_steps=1),
        "--resume_from_checkpoint",
        "last",
    ]
    assert run_chip(argv).code == 0
    assert [h["step"] for h in log_history(out)] == [1]


# ---------------------------------------------------------------------------------- precompute
def shard_stats(cache: Path) -> dict[str, tuple[int, int, int]]:
    """(inode, mtime_ns, size) of every finished shard: one whose ids file is also written."""
    return {
        file.name: (file.stat().st_ino, file.stat().st_mtime_ns, file.stat().st_size)
        for file in sorted(cache.glob("shard-*.safetensors"))
        if file.with_suffix(".ids.json").exists()
    }


def assert_same_cache(got: Path, expected: Path) -> None:
    a, b = ReferenceCache.open(got), ReferenceCache.open(expected)
    assert a.manifest["fingerprint"] == b.manifest["fingerprint"]
    assert a.manifest["num_examples"] == b.manifest["num_examples"]
    assert a.entries.keys() == b.entries.keys()
    for example_id, tensors in b.entries.items():
        assert a.entries[example_id].keys() == tensors.keys()
        for name, value in tensors.items():
            torch.testing.assert_close(a.entries[example_id][name], value, rtol=1e-5, atol=1e-6)


def precompute_args(model: Path, data: Path, tmp: Path, cache: Path) -> list[str]:
    return [
        str(a)
        for a in train_args(model, data, tmp / "unused", reference_cache=cache, per_device_eval_batch_size=1)
    ]


def test_precompute_killed_resumes_without_recomputing_finished_shards(
    tiny_model: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SHARD_SIZE_ENV, "2")
    model, data = tiny_model("llava"), write_pairs(tmp_path / "data", n=PRECOMPUTE_PAIRS)
    full, killed = tmp_path / "full", tmp_path / "killed"
    run_precompute(parse_config(precompute_args(model, data, tmp_path, full)))

    child = spawn_chip(
        ["data", "precompute", *precompute_args(model, data, tmp_path, killed)],
        tmp_path / "killed.log",
        env={SHARD_SIZE_ENV: "2"},
    )
    wait_for(lambda: (killed / "shard-00001.ids.json").exists(), child, "two finished shards")
    sigkill(child)
    finished = shard_stats(killed)
    assert 2 <= len(finished) < PRECOMPUTE_PAIRS // 2 and not (killed / "manifest.json").exists()

    run_precompute(parse_config(precompute_args(model, data, tmp_path, killed)))
    after = shard_stats(killed)
    assert {name: after[name] for name in finished} == finished  # untouched: same inode, mtime, size
    assert len(after) == PRECOMPUTE_PAIRS // 2
    assert not list(killed.glob("*.tmp"))
    assert_same_cache(killed, full)


@pytest.fixture(scope="module")
def small_cache(
    tiny_model: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, list[str]]:
    """A finished cache of 6 pairs in 3 shards of 2, and the argv that wrote it (read-only)."""
    tmp = tmp_path_factory.mktemp("small_cache")
    data = write_pairs(tmp / "data", n=6)
    cache = tmp / "cache"
    argv = precompute_args(tiny_model("llava"), data, tmp, cache)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(SHARD_SIZE_ENV, "2")
        run_precompute(parse_config(argv))
    return cache, argv


def _cut(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _scramble(path: Path) -> None:
    path.write_bytes(b"\0" * path.stat().st_size)


DAMAGES: dict[str, tuple[Callable[[Path], None], str]] = {
    "manifest_cut_short": (lambda cache: _cut(cache / "manifest.json"), "manifest.json is damaged"),
    "manifest_not_an_object": (lambda cache: (cache / "manifest.json").write_text("[]"), "not a JSON object"),
    "shard_cut_short": (lambda cache: _cut(cache / "shard-00001.safetensors"), "the manifest recorded"),
    "shard_scrambled": (lambda cache: _scramble(cache / "shard-00001.safetensors"), "fails its checksum"),
    "shard_missing": (lambda cache: (cache / "shard-00002.safetensors").unlink(), "is missing"),
}


@pytest.mark.parametrize("damage", DAMAGES, ids=list(DAMAGES))
def test_damaged_cache_is_refused_not_half_read(
    small_cache: tuple[Path, list[str]], tmp_path: Path, damage: str
) -> None:
    cache = shutil.copytree(small_cache[0], tmp_path / "cache")
    harm, fragment = DAMAGES[damage]
    harm(cache)
    with pytest.raises(StaleCacheError, match=fragment):
        ReferenceCache.open(cache)


def test_damaged_cache_stops_training_with_one_line(
    small_cache: tuple[Path, list[str]], tmp_path: Path, run_chip: Callable[..., Run]
) -> None:
    cache = shutil.copytree(small_cache[0], tmp_path / "cache")
    _cut(cache / "manifest.json")
    argv = [
        *small_cache[1],
        "--reference",
        "precomputed",
        "--reference_cache",
        str(cache),
        "--output_dir",
        str(tmp_path / "out"),
    ]
    assert "manifest.json is damaged" in assert_one_line_error(run_chip(["train", *argv]))


def test_resumed_precompute_redoes_only_damaged_shards(
    small_cache: tuple[Path, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shard 0 cut short (e.g. a copy that ran out of disk), shard 1 killed between its two files
    with a half-written ``.tmp`` beside it: both are recomputed, shard 2 is reused as is."""
    monkeypatch.setenv(SHARD_SIZE_ENV, "2")
    cache = shutil.copytree(small_cache[0], tmp_path / "cache")
    (cache / "manifest.json").unlink()
    _cut(cache / "shard-00000.safetensors")
    (cache / "shard-00001.ids.json").unlink()
    (cache / "shard-00001.safetensors.tmp").write_bytes(b"half a shard")
    kept = shard_stats(cache)["shard-00002.safetensors"]

    run_precompute(parse_config([*small_cache[1][:-2], "--reference_cache", str(cache)]))

    assert shard_stats(cache)["shard-00002.safetensors"] == kept
    assert not list(cache.glob("*.tmp"))
    assert_same_cache(cache, small_cache[0])


def test_precompute_with_another_shard_size_does_not_mix_shards(
    small_cache: tuple[Path, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shards written 2 per file are not mistaken for shards of 4: ids are checked before reuse."""
    cache = shutil.copytree(small_cache[0], tmp_path / "cache")
    monkeypatch.setenv(SHARD_SIZE_ENV, "4")
    run_precompute(parse_config([*small_cache[1][:-2], "--reference_cache", str(cache)]))
    manifest = json.loads((cache / "manifest.json").read_text())
    assert [len(shard["ids"]) for shard in manifest["shards"]] == [4, 2]
    assert_same_cache(cache, small_cache[0])


def test_invalid_shard_size_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from chip.errors import ConfigError
    from chip.training.precompute import resolve_shard_size

    monkeypatch.setenv(SHARD_SIZE_ENV, "zero")
    with pytest.raises(ConfigError, match=SHARD_SIZE_ENV):
        resolve_shard_size()
    assert resolve_shard_size(3) == 3


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # inside the last tensor's values: the file still parses
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["flipped_byte", "cut_short"])
def test_damaged_shard_is_named_before_training_and_repair_recomputes_only_it(
    damage: str,
    small_cache: tuple[Path, list[str]],
    tmp_path: Path,
    run_chip: Callable[..., Run],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One flipped byte (safetensors still parses it) or a shard cut short: `chip train` refuses the
    cache before training, naming shard-00001 and its examples ex2, ex3; ``chip data precompute
    --repair`` rewrites that shard alone (the other two keep inode and mtime), and training runs."""
    monkeypatch.setenv(SHARD_SIZE_ENV, "2")
    cache = shutil.copytree(small_cache[0], tmp_path / "cache")
    shard = cache / "shard-00001.safetensors"
    (_flip_byte if damage == "flipped_byte" else _cut)(shard)
    if damage == "flipped_byte":
        load_file(str(shard))  # the damage is invisible to the format: only the checksum finds it
    kept = {name: stat for name, stat in shard_stats(cache).items() if name != shard.name}
    argv = [*small_cache[1][:-2], "--reference_cache", str(cache)]
    train = ["train", *argv, "--reference", "precomputed", "--output_dir", str(tmp_path / "out")]

    message = assert_one_line_error(run_chip(train))
    reason = "fails its checksum (altered on disk)" if damage == "flipped_byte" else "the manifest recorded"
    assert message.startswith(
        f"{cache}: damaged reference cache: shard-00001.safetensors (examples ex2, ex3) "
    )
    assert reason in message and message.endswith(
        "with the same settings and --repair to recompute only these shards"
    )
    assert not (tmp_path / "out" / "trainer_state.json").exists()

    assert run_chip(["data", "precompute", *argv, "--repair"]).code == 0
    assert {name: stat for name, stat in shard_stats(cache).items() if name != shard.name} == kept
    assert_same_cache(cache, small_cache[0])
    assert run_chip(train).code == 0


def test_repair_without_a_finished_cache_is_one_line(tmp_path: Path) -> None:
    from chip.training.precompute import repair_cache

    with pytest.raises(StaleCacheError, match="no manifest.json, nothing to repair"):
        repair_cache(tmp_path)


def test_a_rank_rng_state_missing_or_cut_short_makes_a_checkpoint_incomplete(tmp_path: Path) -> None:
    """Two ranks: rank 0 writes trainer_state.json with no barrier after rank 1's rng_state_1.pth, so
    a kill can leave rank 1's file missing or cut short; ``last`` must not take such a folder."""
    from chip.training.checkpoints import is_complete_checkpoint

    folder = tmp_path / "checkpoint-2"
    folder.mkdir()
    (folder / "trainer_state.json").write_text('{"global_step": 2}')
    torch.save({"cpu": torch.get_rng_state()}, folder / "rng_state_0.pth")
    assert not is_complete_checkpoint(folder, world_size=2)  # rank 1's file not written yet
    torch.save({"cpu": torch.get_rng_state()}, folder / "rng_state_1.pth")
    assert is_complete_checkpoint(folder, world_size=2)
    whole = (folder / "rng_state_1.pth").read_bytes()
    (folder / "rng_state_1.pth").write_bytes(whole[: len(whole) // 2])  # cut short mid-write
    assert not is_complete_checkpoint(folder, world_size=2)
    assert is_complete_checkpoint(folder.parent / "missing") is False
