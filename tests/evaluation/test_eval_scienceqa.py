"""ScienceQA-IMG: LLaVA's option-letter reading and accuracy by hand; input checks; prompts."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from chip.errors import DataError
from chip.evaluation import scienceqa
from chip.evaluation.benchmarks import BENCHMARKS
from chip.evaluation.cli import main


@pytest.mark.parametrize(
    ("answer", "letter"),
    [
        ("B", "B"),
        ("B. cat", "B"),
        ("The answer is B.", "B"),
        ("The answer is B!", "B"),  # "." in the pattern is any character
        ("The answer is BC", "B"),
        ("The answer is B", None),  # nothing after the letter
        ("the answer is B.", None),  # case matters
        ("The answer is A. The answer is B.", None),  # two matches
        ("B.", None),  # neither one letter nor "B. " with text after
        ("(B)", None),
        ("b", None),
        (" B", None),
        ("", None),
    ],
)
def test_read_letter(answer, letter) -> None:
    assert scienceqa.read_letter(answer) == letter


def test_choice_index() -> None:
    assert scienceqa.choice_index("C", 3) == 2
    assert scienceqa.choice_index("D", 3) == -1  # past the last choice
    assert scienceqa.choice_index(None, 3) == -1


@pytest.fixture
def folder(tmp_path) -> Path:
    """Test problems 1 (2 choices, answer A, image), 2 (3 choices, answer B), 3 (answer A, image);
    validation problem 9."""
    problems = {
        "1": {"choices": ["x", "y"], "answer": 0, "image": "image.png"},
        "2": {"choices": ["x", "y", "z"], "answer": 1, "image": None},
        "3": {"choices": ["x", "y"], "answer": 0, "image": "image.png"},
        "9": {"choices": ["x", "y"], "answer": 0, "image": None},
    }
    (tmp_path / "problems.json").write_text(json.dumps(problems))
    (tmp_path / "pid_splits.json").write_text(json.dumps({"test": ["1", "2", "3"], "val": ["9"]}))
    return tmp_path


def test_scores_by_hand(folder) -> None:
    """Problem 1 answered "A" (right, image); 2 answered "The answer is B" (no letter read: wrong);
    3 unanswered; validation problem 9 answered "A" (not scored). Accuracy = 1/3; IMG = right
    answered image problems / answered image problems = 1/1 (3 is unanswered, as in the reference)."""
    problems, test_ids = scienceqa.read_problems(folder)
    metrics = scienceqa.scienceqa_scores(problems, test_ids, {"1": "A", "2": "The answer is B", "9": "A"})
    assert metrics == {
        "accuracy": pytest.approx(1 / 3),
        "img_accuracy": 1.0,
        "n": 3,
        "n_img": 1,
        "n_unread": 1,
        "n_unanswered": 1,
        "n_outside_split": 1,
    }
    assert "img_accuracy" not in scienceqa.scienceqa_scores(problems, test_ids, {"2": "B"})


def test_input_errors(folder, tmp_path) -> None:
    problems, test_ids = scienceqa.read_problems(folder)
    with pytest.raises(DataError, match="not in problems.json, e.g. '42'"):
        scienceqa.scienceqa_scores(problems, test_ids, {"42": "A"})
    (folder / "pid_splits.json").write_text(json.dumps({"test": ["1", "8"]}))
    with pytest.raises(DataError, match="split 'test' names '8'"):
        scienceqa.read_problems(folder)
    (folder / "problems.json").write_text(json.dumps({"1": {"choices": ["x"]}}))
    with pytest.raises(DataError, match="problem '1': field 'answer': missing"):
        scienceqa.read_problems(folder)
    with pytest.raises(DataError, match="problems.json: file not found"):
        scienceqa.read_problems(tmp_path / "nowhere")


def test_generation_questions_as_model_vqa_science_asks(tmp_path) -> None:
    entries = [
        {
            "id": "5",
            "image": "5/image.png",
            "conversations": [{"from": "human", "value": "<image>\nWhich?\nA. x\nB. y"}],
        },
        {"id": "6", "conversations": [{"from": "human", "value": "Context: c\nWhich?\nA. x\nB. y"}]},
    ]
    path = tmp_path / "llava_test_CQM-A.json"
    path.write_text(json.dumps(entries))
    args = argparse.Namespace(bench="scienceqa", questions=[str(path)], image_root=".")
    questions = BENCHMARKS["scienceqa"].questions(args)
    instruction = "\nAnswer with the option's letter from the given choices directly."
    assert [(q.id, q.prompt, q.image) for q in questions] == [
        ("5", "Which?\nA. x\nB. y" + instruction, "5/image.png"),
        ("6", "Context: c\nWhich?\nA. x\nB. y" + instruction, None),
    ]
    path.write_text(json.dumps([{"id": "7", "conversations": []}]))
    with pytest.raises(DataError, match="item 0: expected LLaVA's question layout"):
        BENCHMARKS["scienceqa"].questions(args)


def test_cli(folder, tmp_path) -> None:
    answers = tmp_path / "a.jsonl"
    answers.write_text(
        "".join(json.dumps({"question_id": k, "text": v}) + "\n" for k, v in [("1", "A"), ("3", "B")])
    )
    out = tmp_path / "m.json"
    main(
        [
            "--bench",
            "scienceqa",
            "--answers",
            str(answers),
            "--annotations",
            str(folder),
            "--output",
            str(out),
        ]
    )
    metrics = json.loads(out.read_text())
    assert metrics["accuracy"] == pytest.approx(1 / 3) and metrics["img_accuracy"] == 0.5
    assert metrics["kind"] == "general" and metrics["scorer"].startswith(
        "rule-based (LLaVA eval_science_qa.py"
    )
