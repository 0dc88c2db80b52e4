"""`chip data precompute`, `chip eval --model` and `chip pairs` under `accelerate launch` with two CPU
processes (gloo) write what one process writes, also when one rank is SIGKILLed mid-run and the
launch is started again; `chip data precompute` and `chip train` also as two machines on this host.

The one-process output is made in this process; the launched one by real ``python -m chip``
ranks (tests/launch_chip.py). The eval test runs by default; the others are slow.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from chip.cli import main as chip_main
from chip.ranks import part_files
from chip.training.cli import parse_config, run_precompute
from tests.launch_chip import kill_one_rank_when, run_launch, run_two_machines
from tests.pairs.conftest import PROMPT
from tests.train_helpers import train, train_args, write_pairs
from tests.training.launch_helpers import assert_same_history, log_history

QUESTIONS = 8


def _finished(result) -> None:
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]


def _rows_on_disk(path: Path) -> int:
    """Complete rows of ``path`` and of its parts."""
    files = [path, *part_files(path)] if path.exists() else part_files(path)
    return sum(file.read_bytes().count(b"\n") for file in files)


def _pope(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "images"
    root.mkdir()
    for i in range(4):
        pixels = np.random.default_rng(i).integers(0, 256, size=(32 + 8 * i, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"{i}.png")
    rows = [
        {
            "question_id": i,
            "image": f"{i % 4}.png",
            "text": "Is there a dog in the image?" * (1 + i % 3),  # unequal lengths: padded batches
            "label": "yes" if i % 2 else "no",
            "category": "random",
        }
        for i in range(QUESTIONS)
    ]
    questions = tmp_path / "pope.jsonl"
    questions.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return questions, root


def test_eval_generation_two_processes_killed_and_restarted_equal_one(tiny_model, tmp_path) -> None:
    """8 POPE questions, batch 2: one rank is killed once 2 answers are on disk; the restarted
    launch answers only the rest (no question twice) and the answers file is byte for byte the
    one-process file, so are the metrics (but for the answers path they name)."""
    questions, root = _pope(tmp_path)

    def argv(name: str) -> list[str]:
        args = [
            *("eval", "--bench", "pope", "--model", tiny_model("llava"), "--questions", questions),
            *("--image-root", root, "--batch-size", "2", "--max-new-tokens", "16"),
            *("--answers", tmp_path / f"{name}.jsonl", "--output", tmp_path / f"{name}.json"),
        ]
        return [str(arg) for arg in args]

    assert chip_main(argv("one")) == 0
    answers = tmp_path / "two.jsonl"
    code = kill_one_rank_when(argv("two"), lambda: _rows_on_disk(answers) >= 2, tmp_path / "killed.log")
    assert code != 0 and not (tmp_path / "two.json").exists()
    done = _rows_on_disk(answers)
    assert 2 <= done < QUESTIONS, done

    result = run_launch(argv("two"))
    _finished(result)
    assert answers.read_bytes() == (tmp_path / "one.jsonl").read_bytes()
    assert not part_files(answers)
    one, two = (json.loads((tmp_path / f"{name}.json").read_text()) for name in ("one", "two"))
    assert {**two, "answers": None} == {**one, "answers": None}


def _cache_equal(expected: Path, got: Path) -> None:
    manifest = json.loads((expected / "manifest.json").read_text())
    assert json.loads((got / "manifest.json").read_text()) == manifest
    for shard in manifest["shards"]:
        one, two = load_file(expected / shard["file"]), load_file(got / shard["file"])
        assert one.keys() == two.keys()
        for name in one:
            torch.testing.assert_close(two[name], one[name], rtol=0, atol=1e-6, msg=name)


@pytest.mark.slow
def test_precompute_two_processes_killed_and_restarted_equal_one(tiny_model, tmp_path) -> None:
    """8 pairs in shards of one: a rank is killed once 3 shards are on disk; the restarted launch
    keeps them and the cache equals the one-process cache (log-probs and top-k within 1e-6)."""
    model, data = tiny_model("llava"), write_pairs(tmp_path / "data")
    env = {"CHIP_REFERENCE_SHARD_SIZE": "1"}
    single = tmp_path / "single"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CHIP_REFERENCE_SHARD_SIZE", "1")
        run_precompute(parse_config(train_args(model, data, tmp_path / "o", reference_cache=single)))
    multi = tmp_path / "multi"
    args = ["data", "precompute", *train_args(model, data, tmp_path / "o2", reference_cache=multi)]
    code = kill_one_rank_when(
        args, lambda: len(list(multi.glob("shard-*.ids.json"))) >= 3, tmp_path / "killed.log", env
    )
    assert code != 0 and not (multi / "manifest.json").exists()
    kept = {file.name: file.stat().st_mtime_ns for file in multi.glob("shard-*.safetensors")}
    assert 3 <= len(kept) < 8

    _finished(run_launch(args, env=env))
    _cache_equal(single, multi)
    assert all((multi / name).stat().st_mtime_ns == time for name, time in kept.items())  # not redone


@pytest.mark.slow
def test_pairs_two_processes_killed_and_restarted_equal_one(captioner, coco, tmp_path) -> None:
    """`chip pairs`, 4 prompts x 4 samples: a rank killed once 2 samples are on disk, the launch
    restarted; samples, pairs and report are the one-process files."""

    def argv(out: Path) -> list[str]:
        args = [
            *("pairs", "--model", captioner("llava"), "--images", coco.images, "--annotations"),
            *(coco.annotations, "--prompts", coco.prompts, "--samples", "4", "--max_new_tokens", "40"),
            *("--batch_size", "2", "--output", out),
        ]
        return [str(arg) for arg in args]

    reference, launched = tmp_path / "one", tmp_path / "two"
    assert chip_main(argv(reference)) == 0
    samples = launched / "samples.ndjson"
    code = kill_one_rank_when(argv(launched), lambda: _rows_on_disk(samples) >= 2, tmp_path / "killed.log")
    assert code != 0 and not (launched / "pairs.jsonl").exists()
    assert 2 <= _rows_on_disk(samples) < 16

    _finished(run_launch(argv(launched)))
    for name in ("samples.ndjson", "pairs.jsonl", "pairs_report.json"):
        assert (launched / name).read_bytes() == (reference / name).read_bytes().replace(
            str(reference).encode(), str(launched).encode()
        ), name
    assert PROMPT in (launched / "pairs.jsonl").read_text()


@pytest.mark.slow
def test_precompute_on_two_machines_equals_one_process(tiny_model, tmp_path) -> None:
    """Machine ranks 0 and 1 on this host write into one folder (a shared file system): the cache
    is the one-process cache."""
    model, data = tiny_model("llava"), write_pairs(tmp_path / "data")
    single, multi = tmp_path / "single", tmp_path / "multi"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CHIP_REFERENCE_SHARD_SIZE", "2")
        run_precompute(parse_config(train_args(model, data, tmp_path / "o", reference_cache=single)))
    args = ["data", "precompute", *train_args(model, data, tmp_path / "o2", reference_cache=multi)]
    run_two_machines(lambda rank: args, env={"CHIP_REFERENCE_SHARD_SIZE": "2"})
    _cache_equal(single, multi)


@pytest.mark.slow
@pytest.mark.parametrize("save_on_each_node", [False, True])
def test_training_on_two_machines_equals_one_process(save_on_each_node, tiny_model, tmp_path) -> None:
    """Two machines x batch 2 against one process x batch 4, 3 steps: the same losses and metrics.
    A shared file system (one output_dir, written once by the main process) and per-node ones (an
    output_dir per machine, `--save_on_each_node`: each gets the whole model)."""
    model, data = tiny_model("llava"), write_pairs(tmp_path / "data")
    single = train(model, data, tmp_path / "single", per_device_train_batch_size=4, max_steps=3)

    def out(rank: int) -> Path:
        return tmp_path / (f"node{rank}" if save_on_each_node else "shared")

    def args(rank: int) -> list[str]:
        settings = {"per_device_train_batch_size": 2, "max_steps": 3, "save_on_each_node": save_on_each_node}
        return ["train", *train_args(model, data, out(rank), **settings)]

    run_two_machines(args)
    assert_same_history(single, log_history(out(0)))
    writers = {out(0), out(1)}
    for folder in writers:
        assert (folder / "model.safetensors").is_file(), folder
    if not save_on_each_node:
        assert not (tmp_path / "node1").exists()
