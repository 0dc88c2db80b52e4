"""The default (official) reading against the reference scorers' own output.

Each folder under data/official/ holds COCO-style annotations, CHAIR captions, POPE questions and
answers per split, and `expected.json`: what the reference code printed and returned on them —
per caption the mentioned words, their classes, the hallucinated (word, class) pairs and the
ground truth; per POPE answer its yes/no reading; and the headline metrics. data/official/README.md
says how it was produced; data/official_amber/ does the same for AMBER's counting. Every folder of that layout is checked, so another fixture of the same
kind can be dropped in beside the two there.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chip.evaluation.amber import load_amber_annotations
from chip.evaluation.amber_official import amber_official_scores
from chip.evaluation.chair import chair_scores, load_coco_truth, official_coco_reader, score_response
from chip.evaluation.cli import main as eval_main
from chip.evaluation.official_text import pattern_singularize, word_tokenize
from chip.evaluation.pope import pope_scores
from chip.evaluation.yesno import reads_as_yes_official

FIXTURES = sorted(p.parent for p in (Path(__file__).parent / "data" / "official").glob("*/expected.json"))
SPLITS = ("random", "popular", "adversarial")
POPE_METRICS = ("accuracy", "precision", "recall", "f1", "yes_ratio")
TOLERANCE = 1e-6


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module", params=FIXTURES, ids=[p.name for p in FIXTURES])
def fixture(request) -> tuple[Path, dict]:
    return request.param, json.loads((request.param / "expected.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def chair_truth(fixture) -> dict[int, set[str]]:
    folder, expected = fixture
    ids = [c["image_id"] for c in expected["chair"]["captions"]]
    return load_coco_truth(folder / "coco", image_ids=ids, vocab=official_coco_reader())


def test_fixtures_are_big_enough() -> None:
    assert FIXTURES, "no official fixture found"
    for folder in FIXTURES:
        expected = json.loads((folder / "expected.json").read_text(encoding="utf-8"))
        assert len(expected["chair"]["captions"]) >= 80
        assert len(expected["pope"]["answers"]) >= 60


def test_chair_per_caption_objects_match_the_reference(fixture, chair_truth) -> None:
    _, expected = fixture
    reader = official_coco_reader()
    mismatches = []
    for caption in expected["chair"]["captions"]:
        truth = chair_truth[caption["image_id"]]
        result = score_response(caption["caption"], truth, reader)
        hallucinated = [[w, c] for w, c in zip(result.words, result.mentions) if c not in truth]
        got = (sorted(truth), list(result.words), list(result.mentions), hallucinated)
        want = (caption["truth"], caption["words"], caption["objects"], caption["hallucinated"])
        if got != want:
            mismatches.append((caption["caption"], got, want))
    assert not mismatches


def test_chair_metrics_match_the_reference(fixture, chair_truth) -> None:
    folder, expected = fixture
    answers = {row["image_id"]: row["answer"] for row in _jsonl(folder / "chair_answers.jsonl")}
    metrics = chair_scores(answers, chair_truth, official_coco_reader())
    for key in ("chair_i", "chair_s", "recall", "chair_s_refined"):
        assert metrics[key] == pytest.approx(expected["chair"][key], abs=TOLERANCE), key


def test_pope_per_answer_readings_match_the_reference(fixture) -> None:
    folder, expected = fixture
    answers = {
        str(row["question_id"]): row["answer"]
        for split in SPLITS
        for row in _jsonl(folder / f"pope_{split}_answers.jsonl")
    }
    readings = {str(a["question_id"]): a["reading"] for a in expected["pope"]["answers"]}
    got = {key: "yes" if reads_as_yes_official(answers[key]) else "no" for key in readings}
    assert got == readings


def test_pope_metrics_match_the_reference(fixture) -> None:
    folder, expected = fixture
    answers, labels, splits = {}, {}, {}
    for split in SPLITS:
        for row in _jsonl(folder / f"pope_{split}.jsonl"):
            labels[str(row["question_id"])] = row["label"]
            splits[str(row["question_id"])] = split
        answers.update(
            {str(r["question_id"]): r["answer"] for r in _jsonl(folder / f"pope_{split}_answers.jsonl")}
        )
    metrics = pope_scores(answers, labels, splits)
    for split in SPLITS:
        for key in POPE_METRICS:
            assert metrics["splits"][split][key] == pytest.approx(
                expected["pope"]["splits"][split][key], abs=TOLERANCE
            )
    for key in POPE_METRICS:
        assert metrics["average"][key] == pytest.approx(expected["pope"]["average"][key], abs=TOLERANCE)


def test_cli_default_reading_is_the_official_one(fixture, tmp_path) -> None:
    folder, expected = fixture
    out = tmp_path / "chair.json"
    eval_main(
        [
            "--bench",
            "chair",
            "--answers",
            str(folder / "chair_answers.jsonl"),
            "--annotations",
            str(folder / "coco"),
            "--output",
            str(out),
        ]
    )
    metrics = json.loads(out.read_text())
    assert metrics["reading"] == "official"
    for key in ("chair_i", "chair_s", "recall"):
        assert metrics[key] == pytest.approx(expected["chair"][key], abs=TOLERANCE)

    answers = tmp_path / "pope_answers.jsonl"
    answers.write_text("".join((folder / f"pope_{s}_answers.jsonl").read_text() for s in SPLITS))
    out = tmp_path / "pope.json"
    questions = [str(folder / f"pope_{s}.jsonl") for s in SPLITS]
    eval_main(["--bench", "pope", "--answers", str(answers), "--questions", *questions, "--output", str(out)])
    metrics = json.loads(out.read_text())
    assert metrics["reading"] == "official"
    for split in SPLITS:
        assert metrics["splits"][f"pope_{split}"]["f1"] == pytest.approx(
            expected["pope"]["splits"][split]["f1"], abs=TOLERANCE
        )
    assert metrics["average"]["accuracy"] == pytest.approx(
        expected["pope"]["average"]["accuracy"], abs=TOLERANCE
    )


def test_corrected_reading_differs_and_says_so(tmp_path) -> None:
    folder = FIXTURES[0]
    out = tmp_path / "chair.json"
    eval_main(
        [
            "--bench",
            "chair",
            "--answers",
            str(folder / "chair_answers.jsonl"),
            "--annotations",
            str(folder / "coco"),
            "--output",
            str(out),
            "--reading",
            "corrected",
        ]
    )
    metrics = json.loads(out.read_text())
    expected = json.loads((folder / "expected.json").read_text())["chair"]
    assert metrics["reading"] == "corrected"
    assert metrics["chair_i"] != pytest.approx(expected["chair_i"], abs=TOLERANCE)


AMBER_FIXTURES = sorted(
    p.parent for p in (Path(__file__).parent / "data" / "official_amber").glob("*/expected.json")
)
# reference section -> chip dimension (None: the overall discriminative numbers)
AMBER_SECTIONS = {
    "Descriminative Task": None,
    "Exsitence": "existence",
    "Attribute": "attribute",
    "State": "state",
    "Number": "number",
    "Action": "action",
    "Relation": "relation",
}


@pytest.mark.parametrize("folder", AMBER_FIXTURES, ids=[p.name for p in AMBER_FIXTURES])
def test_amber_counting_matches_the_reference(folder: Path) -> None:
    """With the reference's stand-ins (every token a noun, lemma = token, no word vectors), chip's
    official AMBER numbers equal what inference.py printed, divided by 100."""
    expected = json.loads((folder / "expected.json").read_text(encoding="utf-8"))
    annotations = load_amber_annotations(folder)
    answers = {
        row["id"]: row["response"]
        for row in json.loads((folder / "answers.json").read_text(encoding="utf-8"))
    }
    metrics = amber_official_scores(answers, annotations, nouns=word_tokenize, similar=None)
    generative = expected["Generative Task"]
    got = [metrics[k] * 100 for k in ("chair", "cover", "hal", "cog")]
    assert got == pytest.approx([generative[k] for k in ("CHAIR", "Cover", "Hal", "Cog")], abs=TOLERANCE)
    for section, dimension in AMBER_SECTIONS.items():
        scores = metrics if dimension is None else metrics["dimensions"][dimension]
        got = [scores[k] * 100 for k in ("accuracy", "precision", "recall", "f1")]
        want = [expected[section][k] for k in ("Accuracy", "Precision", "Recall", "F1")]
        assert got == pytest.approx(want, abs=TOLERANCE), section


def test_word_tokenize_splits_sentences_like_nltk_with_punkt() -> None:
    """Expected tokens are what `nltk.word_tokenize` returned with NLTK's English punkt_tab installed:
    "st." (an abbreviation) and "2." (a number before a lower-case word) keep their periods, "dog.a"
    is one token, and "man-made" and "cat/dog" stay whole."""
    text = (
        "a dog. a cat sits on main st. near a bus. there are 2. dogs... a dog.a cat/dog and man-made tracks!"
    )
    assert word_tokenize(text) == [
        "a",
        "dog",
        ".",
        "a",
        "cat",
        "sits",
        "on",
        "main",
        "st.",
        "near",
        "a",
        "bus",
        ".",
        "there",
        "are",
        "2.",
        "dogs",
        "...",
        "a",
        "dog.a",
        "cat/dog",
        "and",
        "man-made",
        "tracks",
        "!",
    ]


@pytest.mark.parametrize(
    ("word", "singular"),
    [
        ("bus", "bu"),
        ("buses", "bus"),
        ("glass", "glas"),
        ("tennis", "tenni"),
        ("ties", "ty"),
        ("people", "person"),
        ("tracks", "track"),
        ("doggies", "doggies"),
        ("kine", "cow"),
        ("zebras", "zebra"),
        ("unlisted", "unlisted"),
    ],
)
def test_pattern_singularize_table(word: str, singular: str) -> None:
    assert pattern_singularize(word) == singular
