"""`chip eval --model` under `accelerate launch` with two CPU processes (gloo): each answers the
questions whose id hashes to its rank, and the main process merges their parts into the file one
process writes, also when a rank is SIGKILLed mid-run and the launch is started again.

The one-process file is made in this process; the launched one by real ``python -m chip`` ranks
(tests/launch_chip.py). Pair sampling: tests/pairs/test_pairs_launched.py; the reference cache:
tests/training/test_precompute_launched.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from chip.cli import main as chip_main
from chip.ranks import part_files
from tests.launch_chip import finished, kill_one_rank_when, parts_rows, rows_on_disk, run_launch

QUESTIONS = 8


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
    code = kill_one_rank_when(argv("two"), lambda: parts_rows(answers) >= 2, tmp_path / "killed.log")
    assert code != 0 and not (tmp_path / "two.json").exists()
    done = rows_on_disk(answers)
    assert 2 <= done < QUESTIONS, done
    assert part_files(answers)  # each rank wrote its own share

    result = run_launch(argv("two"))
    finished(result)
    assert answers.read_bytes() == (tmp_path / "one.jsonl").read_bytes()
    assert not part_files(answers)
    one, two = (json.loads((tmp_path / f"{name}.json").read_text()) for name in ("one", "two"))
    assert {**two, "answers": None} == {**one, "answers": None}
