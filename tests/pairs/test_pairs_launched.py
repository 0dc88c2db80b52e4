"""`chip pairs` under `accelerate launch` with two CPU processes (gloo): each samples the items whose
id hashes to its rank, the main process merges the samples, judges and pairs; the files equal one
process's, also through a SIGKILLed rank and a restarted launch (slow: two launches of a captioner)."""

from __future__ import annotations

from pathlib import Path

import pytest

from chip.cli import main as chip_main
from chip.ranks import part_files
from tests.launch_chip import finished, kill_one_rank_when, parts_rows, rows_on_disk, run_launch
from tests.pairs.conftest import PROMPT


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
    code = kill_one_rank_when(argv(launched), lambda: parts_rows(samples) >= 2, tmp_path / "killed.log")
    assert code != 0 and not (launched / "pairs.jsonl").exists()
    assert 2 <= rows_on_disk(samples) < 16
    assert part_files(samples)  # each rank wrote its own share

    finished(run_launch(argv(launched)))
    for name in ("samples.ndjson", "pairs.jsonl", "pairs_report.json"):
        assert (launched / name).read_bytes() == (reference / name).read_bytes().replace(
            str(reference).encode(), str(launched).encode()
        ), name
    assert PROMPT in (launched / "pairs.jsonl").read_text()
