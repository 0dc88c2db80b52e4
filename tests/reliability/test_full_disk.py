"""A disk that fills up while chip writes: one line naming the path and the space needed, nothing
complete lost, no half-written file left where a later run would trust it, and the same command
(after freeing space) finishing the work.

Each test runs chip on a real 64 MB tmpfs filled until a set number of bytes is free
(`tests/reliability/small_disk.py`); without permission to mount, the tests are skipped with the
reason. `chip eval --model` answers and `chip pairs` output are covered in
tests/evaluation/test_eval_faults.py and tests/pairs/test_pairs_faults.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from chip.files import DiskFullError, append_text, write_json_atomic, write_text_atomic
from chip.pairs.output import PAIRS_FILE, REPORT_JSON, SAMPLES_FILE
from chip.training.precompute import SHARD_SIZE_ENV
from chip.training.reference_cache import ReferenceCache
from tests.conftest import random_image
from tests.reliability.conftest import Run, assert_one_line_error, log_history
from tests.reliability.small_disk import SmallDisk, small_disk  # noqa: F401 (a fixture)
from tests.train_helpers import train_args, write_pairs

KB = 1024
NEEDS = re.compile(r"needs about [\d.]+ [KM]?B, [\d.]+ [KM]?B free")


def leftovers(folder: Path) -> list[Path]:
    """Temporary or staging files a failed write could leave behind."""
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp") or p.name == ".final-partial"]


# ------------------------------------------------------------------------------------ chip.files
def test_atomic_write_on_a_full_disk_keeps_the_old_file(small_disk: SmallDisk) -> None:  # noqa: F811
    target = small_disk.root / "results.json"
    write_json_atomic(target, {"run": 1})
    small_disk.leave(8 * KB)
    with pytest.raises(DiskFullError) as caught:
        write_text_atomic(target, "x" * 64 * KB)
    assert str(caught.value).startswith(f"disk full writing {target}: needs about 64.0 KB, 8.0 KB free; ")
    assert json.loads(target.read_text()) == {"run": 1}
    assert leftovers(small_disk.root) == []


def test_append_on_a_full_disk_cuts_the_partial_lines_off(small_disk: SmallDisk) -> None:  # noqa: F811
    """Answers, samples and judgments are appended: a write that does not fit is removed whole, so the
    file still ends with a complete line and a resumed run redoes only that write. The write is 100
    lines of 414 bytes: 41,400 bytes = 40.4 KB, five times the 8 KB left."""
    log = small_disk.root / "answers.jsonl"
    append_text(log, '{"id": 1}\n')
    small_disk.leave(8 * KB)
    with pytest.raises(DiskFullError, match=r"answers\.jsonl: needs about 40\.4 KB, 8\.0 KB free"):
        append_text(log, "".join(json.dumps({"id": i % 10, "answer": "y" * 390}) + "\n" for i in range(100)))
    assert log.read_text() == '{"id": 1}\n'


# ------------------------------------------------------------------------------------- training
def test_full_disk_while_saving_a_checkpoint_keeps_the_last_complete_one(
    tiny_model: Callable[..., Path],
    tmp_path: Path,
    small_disk: SmallDisk,  # noqa: F811
    run_chip: Callable[..., Run],
) -> None:
    """A tiny LLaVA checkpoint (weights + Adam moments) takes ~1.5 MB: with 2.5 MB free checkpoint-1
    fits and checkpoint-2 fills the disk. The torn checkpoint-2 is removed, checkpoint-1 is kept, and
    after freeing space ``--resume_from_checkpoint last`` ends at step 3."""
    data = write_pairs(tmp_path / "data", n=4)
    out = small_disk.root / "out"
    argv = [
        "train",
        *train_args(
            tiny_model("llava"),
            data,
            out,
            max_steps=3,
            save_strategy="steps",
            save_steps=1,
            per_device_train_batch_size=2,
        ),
    ]
    small_disk.leave(2500 * KB)
    message = assert_one_line_error(run_chip(argv))
    assert message.startswith(f"disk full writing {out / 'checkpoint-2'} (checkpoint): ")
    assert NEEDS.search(message)
    assert message.endswith(
        f"{out / 'checkpoint-1'} is complete: free some space and add --resume_from_checkpoint last"
    )
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1"]

    small_disk.free()
    assert run_chip([*argv, "--resume_from_checkpoint", "last"]).code == 0
    assert [entry["step"] for entry in log_history(out)] == [1, 2, 3]
    assert leftovers(out) == []


def test_full_disk_at_the_final_save_keeps_the_previous_model(
    tiny_model: Callable[..., Path],
    tmp_path: Path,
    small_disk: SmallDisk,  # noqa: F811
    run_chip: Callable[..., Run],
) -> None:
    """The final save is staged and moved in only when whole: a rerun into a folder holding a finished
    model (557 KB of weights) with 300 KB free fails with one line and leaves that model byte for byte."""
    data = write_pairs(tmp_path / "data", n=4)
    out = small_disk.root / "out"
    first = ["train", *train_args(tiny_model("llava"), data, out, max_steps=1, per_device_train_batch_size=2)]
    assert run_chip(first).code == 0
    weights = (out / "model.safetensors").read_bytes()
    state = (out / "trainer_state.json").read_text()

    small_disk.leave(300 * KB)
    second = [*first, "--learning_rate", "1e-2", "--overwrite_output_dir", "true"]
    message = assert_one_line_error(run_chip(second))
    assert message.startswith(f"disk full writing {out} (final model): ")
    assert NEEDS.search(message)
    assert (out / "model.safetensors").read_bytes() == weights
    assert (out / "trainer_state.json").read_text() == state
    assert leftovers(out) == []

    small_disk.free()
    assert run_chip(second).code == 0
    assert (out / "model.safetensors").read_bytes() != weights
    assert leftovers(out) == []


# ------------------------------------------------------------------------------ reference cache
def test_full_disk_while_precomputing_keeps_finished_shards(
    tiny_model: Callable[..., Path],
    tmp_path: Path,
    small_disk: SmallDisk,  # noqa: F811
    run_chip: Callable[..., Run],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Shards of 2 examples: the disk fills after some of them. The finished shards stay as they are,
    no temporary file is left, and the rerun completes a cache equal to one written on a roomy disk."""
    monkeypatch.setenv(SHARD_SIZE_ENV, "2")
    model, data = tiny_model("llava"), write_pairs(tmp_path / "data", n=8)

    def precompute(cache: Path) -> Run:
        args = train_args(
            model, data, tmp_path / "unused", reference_cache=cache, per_device_eval_batch_size=1
        )
        return run_chip(["data", "precompute", *args])

    roomy = tmp_path / "roomy"
    assert precompute(roomy).code == 0
    shard_bytes = (roomy / "shard-00000.safetensors").stat().st_size

    cache = small_disk.root / "cache"
    small_disk.leave(2 * shard_bytes + 32 * KB)  # two shards and their small JSON files fit
    message = assert_one_line_error(precompute(cache))
    assert re.match(rf"disk full writing {re.escape(str(cache))}/shard-0000[23]\.safetensors: ", message)
    assert NEEDS.search(message)
    finished = {p.name: p.read_bytes() for p in cache.glob("shard-*.safetensors")}
    assert len(finished) >= 2 and not (cache / "manifest.json").exists()
    assert leftovers(cache) == []

    small_disk.free()
    assert precompute(cache).code == 0
    assert all((cache / name).read_bytes() == data for name, data in finished.items())
    got, expected = ReferenceCache.open(cache), ReferenceCache.open(roomy)
    assert got.entries.keys() == expected.entries.keys()
    for example_id, tensors in expected.entries.items():
        for name, value in tensors.items():
            torch.testing.assert_close(got.entries[example_id][name], value)
    assert (
        load_file(str(cache / "shard-00003.safetensors")).keys()
        == load_file(str(roomy / "shard-00003.safetensors")).keys()
    )


# ------------------------------------------------------------------------------- evaluation answers
def pope_questions(folder: Path, n: int) -> Path:
    """``n`` POPE questions over two small images in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(2):
        random_image(i).save(folder / f"{i}.png")
    rows = [
        {
            "question_id": i,
            "image": f"{i % 2}.png",
            "text": "Is there a cat?",
            "label": "yes",
            "category": "random",
        }
        for i in range(n)
    ]
    path = folder / "pope.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_full_disk_while_answering_keeps_whole_batches_and_resumes(
    tiny_model: Callable[..., Path],
    tmp_path: Path,
    small_disk: SmallDisk,  # noqa: F811
    run_chip: Callable[..., Run],
) -> None:
    """`chip eval --model` appends each batch of answers: with 8 KB free (two pages) the answers file
    fills after a few batches of 4. What is on disk is whole batches of complete lines; after freeing
    space the same command answers the rest, each question once, and writes the results."""
    questions = pope_questions(tmp_path / "pope", 40)
    out = small_disk.root / "pope.json"
    argv = ["eval", "--bench", "pope", "--model", tiny_model("llava"), "--questions", questions]
    argv += ["--image-root", questions.parent, "--output", out, "--batch-size", "4", "--max-new-tokens", "4"]
    small_disk.leave(8 * KB)
    message = assert_one_line_error(run_chip(argv))
    answers = small_disk.root / "pope.answers.jsonl"
    assert message.startswith(f"disk full writing {answers}: ")
    assert NEEDS.search(message)
    kept = [json.loads(line) for line in answers.read_text().splitlines()]
    assert 0 < len(kept) < 40 and len(kept) % 4 == 0
    assert not out.exists()

    small_disk.free()
    assert run_chip(argv).code == 0
    ids = [json.loads(line)["question_id"] for line in answers.read_text().splitlines()]
    assert sorted(ids, key=int) == [str(i) for i in range(40)]
    assert json.loads(out.read_text())["n_answers"] == 40


# ------------------------------------------------------------------------------------ chip pairs
def test_full_disk_while_sampling_pairs_keeps_whole_samples_and_resumes(
    tiny_model: Callable[..., Path],
    tmp_path: Path,
    small_disk: SmallDisk,  # noqa: F811
    run_chip: Callable[..., Run],
) -> None:
    """`chip pairs` appends each batch of samples: with 8 KB free the samples file fills part way. It
    holds whole lines only, no pairs file or report claims a finished run, and after freeing space
    the same command draws only the missing samples and writes pairs and report."""
    data = write_pairs(tmp_path / "data", n=4)
    objects = tmp_path / "objects.json"
    objects.write_text(json.dumps({f"img{i}.png": ["cat"] for i in range(4)}))
    out = small_disk.root / "pairs"
    argv = ["pairs", "--model", tiny_model("llava"), "--images", data.parent, "--objects", objects]
    argv += ["--output", out, "--samples", "6", "--batch_size", "2", "--max_new_tokens", "48"]
    small_disk.leave(8 * KB)
    message = assert_one_line_error(run_chip(argv))
    samples = out / SAMPLES_FILE
    assert message.startswith(f"disk full writing {samples}: ")
    assert NEEDS.search(message)
    kept = [json.loads(line) for line in samples.read_text().splitlines()]
    assert 0 < len(kept) < 24
    assert not (out / PAIRS_FILE).exists() and not (out / REPORT_JSON).exists()

    small_disk.free()
    assert run_chip(argv).code == 0
    units = [json.loads(line)["unit"] for line in samples.read_text().splitlines()]
    assert len(units) == len(set(units)) == 24
    assert units[: len(kept)] == [row["unit"] for row in kept]
    assert (out / PAIRS_FILE).is_file() and json.loads((out / REPORT_JSON).read_text())["samples"][
        "drawn"
    ] == 24


# ---------------------------------------------------------------------------------- chip data view
def test_full_disk_while_writing_the_data_view_is_one_line(
    tmp_path: Path,
    small_disk: SmallDisk,  # noqa: F811
    run_chip: Callable[..., Run],
) -> None:
    """The page is written last and every file through a temporary name: with 4 KB free the view
    stops with one line, leaves no page pointing at missing files and no temporary file."""
    data = write_pairs(tmp_path / "data", n=4)
    page = small_disk.root / "view.html"
    small_disk.leave(4 * KB)
    message = assert_one_line_error(run_chip(["data", "view", data, "--output", page]))
    assert message.startswith(f"disk full writing {small_disk.root}/view_files/")
    assert not page.exists()
    assert leftovers(small_disk.root) == []

    small_disk.free()
    assert run_chip(["data", "view", data, "--output", page]).code == 0
    assert page.is_file()
