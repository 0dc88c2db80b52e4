"""MME: the eval_tool's reading and scores worked by hand, its results layout, and bad input."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from chip.errors import ConfigError, DataError
from chip.evaluation import mme
from chip.evaluation.benchmarks import BENCHMARKS
from chip.evaluation.cli import main


def write_task(folder: Path, task: str, lines: list[tuple[str, ...]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{task}.txt"
    path.write_text("".join("\t".join(line) + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("answer", "reading"),
    [
        ("Yes", "yes"),
        ("NO", "no"),
        ("Yes, there is.", "yes"),
        ("Not really", "no"),  # "not " holds "no"
        ("eyes", "yes"),  # "eyes" holds "yes"
        ("snow", "no"),
        ("I think yes", "other"),  # "i th": neither
        (" yes", "yes"),  # " yes" is four characters holding "yes"
        ("  yes", "other"),  # "  ye"
        ("", "other"),
        ("y\nes", "yes"),  # line breaks are deleted first, as the tool's readme asks
    ],
)
def test_answer_reading(answer, reading) -> None:
    assert mme.read_answer(answer) == reading


def test_scores_by_hand(tmp_path) -> None:
    """existence: image 1 answered "Yes" (truth yes) and "no" (truth no): both right; image 2
    answered "I think yes" (truth yes: other, wrong) and "Nope" (truth no: right).
    acc = 3/4, acc+ = 1/2 (image 1 only), score = 75 + 50 = 125; perception = 125, cognition = 0,
    the other 13 subtasks missing."""
    write_task(
        tmp_path,
        "existence",
        [
            ("1.jpg", "Is there a dog?", "Yes", "Yes"),
            ("1.jpg", "Is there a cat?", "No", "no"),
            ("2.jpg", "Is there a bus?", "yes", "I think yes"),
            ("2.jpg", "Is there a car?", "NO", "Nope"),
        ],
    )
    metrics = mme.mme_scores(*mme.read_results_folder(tmp_path))
    assert metrics["tasks"]["existence"] == {
        "accuracy": 0.75,
        "accuracy_plus": 0.5,
        "score": 125.0,
        "n_other": 1,
        "n": 4,
    }
    assert (metrics["perception"], metrics["cognition"]) == (125.0, 0.0)
    assert len(metrics["tasks_missing"]) == 13 and "existence" not in metrics["tasks_missing"]


def test_unanswered_questions_are_wrong_and_counted(tmp_path) -> None:
    """Template lines (three fields) with one answer: "Yes" right, the other unanswered (other).
    acc = 1/2, acc+ = 0, score 50, one unanswered."""
    write_task(tmp_path, "OCR", [("a.png", "Q1?", "Yes"), ("a.png", "Q2?", "No")])
    questions, answers = mme.read_results_folder(tmp_path)
    assert answers == {}
    metrics = mme.mme_scores(questions, {questions[0].id: "Yes"})
    assert metrics["cognition"] == 0.0 and metrics["perception"] == 50.0
    assert metrics["n_unanswered"] == 1 and metrics["n_other"] == 1


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([("a.jpg", "Q?", "Yes", "yes", "extra")], r"OCR.txt:1: expected 3 or 4 tab-separated fields.*got 5"),
        ([("a.jpg", "Q?", "Maybe", "yes"), ("a.jpg", "R?", "No", "no")], r"OCR.txt:1: field 'ground truth'"),
        ([("a.jpg", "Q?", "Yes", "yes")], r"1 lines; MME has two questions per image"),
        (
            [("a.jpg", "Q?", "Yes", "y"), ("b.jpg", "R?", "No", "n")],
            r"OCR.txt:2: image 'b.jpg' follows 'a.jpg'",
        ),
        (
            [("a.jpg", "Q?", "Yes", "y"), ("a.jpg", "Q?", "No", "n")],
            r"question 'Q\?' of image 'a.jpg' is repeated",
        ),
    ],
)
def test_bad_results_files_name_file_and_line(tmp_path, lines, message) -> None:
    write_task(tmp_path, "OCR", lines)
    with pytest.raises(DataError, match=message):
        mme.read_results_folder(tmp_path)


def test_folder_checks(tmp_path) -> None:
    write_task(tmp_path / "a", "existance", [("a.jpg", "Q?", "Yes"), ("a.jpg", "R?", "No")])
    with pytest.raises(DataError, match="existance.txt names no MME subtask"):
        mme.read_results_folder(tmp_path / "a")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no MME subtask files"):
        mme.read_results_folder(tmp_path / "empty")
    with pytest.raises(DataError, match="not a folder"):
        mme.read_results_folder(tmp_path / "missing")


def test_cli_errors(tmp_path) -> None:
    template = tmp_path / "template"
    write_task(template, "color", [("a.jpg", "Red?", "Yes"), ("a.jpg", "Blue?", "No")])
    answers = tmp_path / "a.jsonl"
    answers.write_text(json.dumps({"question_id": "color/a.jpg/Red?", "answer": "yes"}) + "\n")
    out = str(tmp_path / "m.json")
    with pytest.raises(ConfigError, match="needs --questions"):
        main(["--bench", "mme", "--answers", str(answers), "--output", out])
    with pytest.raises(DataError, match="2 line\\(s\\) have no prediction"):
        main(["--bench", "mme", "--answers", str(template), "--output", out])
    with pytest.raises(ConfigError, match="only the reference's reading"):
        main(
            [
                "--bench",
                "mme",
                "--answers",
                str(answers),
                "--questions",
                str(template),
                "--output",
                out,
                "--reading",
                "corrected",
            ]
        )
    answers.write_text(json.dumps({"question_id": "color/b.jpg/Red?", "answer": "yes"}) + "\n")
    with pytest.raises(DataError, match="answer\\(s\\) to questions the MME files do not hold"):
        main(["--bench", "mme", "--answers", str(answers), "--questions", str(template), "--output", out])


def test_generation_questions_use_llava_prompts_and_the_release_layout(tmp_path) -> None:
    """LLaVA-1.5's MME prompt replaces "Please answer yes or no." by its short-answer instruction;
    images are found under TASK/images/ where the release has that folder, else beside TASK.txt."""
    template = tmp_path / "template"
    write_task(
        template,
        "artwork",
        [
            ("1.jpg", "Is it a painting? Please answer yes or no.", "Yes"),
            ("1.jpg", "Is it a statue?  Please answer yes or no.", "No"),
        ],
    )
    write_task(
        template,
        "OCR",
        [
            ("2.jpg", "Is the word 'exit'? Please answer yes or no.", "Yes"),
            ("2.jpg", "Is the word 'stop'? Please answer yes or no.", "No"),
        ],
    )
    (tmp_path / "release" / "artwork" / "images").mkdir(parents=True)
    (tmp_path / "release" / "artwork" / "images" / "1.jpg").write_bytes(b"")
    args = argparse.Namespace(bench="mme", questions=[str(template)], image_root=str(tmp_path / "release"))
    questions = BENCHMARKS["mme"].questions(args)
    assert [(q.id, q.prompt, q.image) for q in questions] == [
        (
            "artwork/1.jpg/Is it a painting? Please answer yes or no.",
            "Is it a painting?\nAnswer the question using a single word or phrase.",
            "artwork/images/1.jpg",
        ),
        (
            "artwork/1.jpg/Is it a statue?  Please answer yes or no.",
            "Is it a statue?\nAnswer the question using a single word or phrase.",
            "artwork/images/1.jpg",
        ),
        (
            "OCR/2.jpg/Is the word 'exit'? Please answer yes or no.",
            "Is the word 'exit'?\nAnswer the question using a single word or phrase.",
            "OCR/2.jpg",
        ),
        (
            "OCR/2.jpg/Is the word 'stop'? Please answer yes or no.",
            "Is the word 'stop'?\nAnswer the question using a single word or phrase.",
            "OCR/2.jpg",
        ),
    ]
