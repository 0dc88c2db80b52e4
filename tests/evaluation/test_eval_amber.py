"""AMBER: offline noun reading, generative and discriminative metrics, worked out by hand."""

from __future__ import annotations

import json

import pytest

from chip.errors import DataError
from chip.evaluation.amber import amber_scores, extract_nouns, load_amber_annotations

ANNOTATIONS = [
    {"id": 1, "type": "generative", "truth": ["dog", "grass", "person"], "hallu": ["cat", "frisbee"]},
    {"id": 2, "type": "generative", "truth": ["car", "road"], "hallu": ["bus", "person"]},
    {"id": 3, "type": "discriminative-hallucination", "truth": "no"},
    {"id": 4, "type": "discriminative-hallucination", "truth": "yes"},
    {"id": 5, "type": "discriminative-attribute-state", "truth": "no"},
    {"id": 6, "type": "discriminative-attribute-number", "truth": "yes"},
    {"id": 7, "type": "discriminative-relation", "truth": "no"},
    {"id": 8, "type": "discriminative-attribute-action", "truth": "no"},
]
RELATION = {
    "dog": [],
    "grass": ["ground"],
    "person": ["man", "woman", "people"],
    "cat": [],
    "frisbee": [],
    "car": ["vehicle"],
    "road": ["street"],
    "bus": ["vehicle"],
    "tree": ["forest"],
    "can": [],
    "sign": [],
    "light": [],
}


@pytest.fixture
def amber_dir(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "annotations.json").write_text(json.dumps(ANNOTATIONS))
    (data / "relation.json").write_text(json.dumps(RELATION))
    (data / "safe_words.txt").write_text("sign\nlight\n")
    return tmp_path


ANSWERS = {
    1: "A man plays with two dogs on the ground near a tree. A cat watches a can.",
    2: "You can see a car with a sign and a light. They can park a vehicle.",
    3: "No, there is no cat.",
    4: "Yes.",
    5: "Yes, it is red.",
    6: "No.",
    7: "There is not a dog on the sofa.",
    8: "No",
}


def test_noun_reading_without_a_tagger(amber_dir) -> None:
    vocabulary = load_amber_annotations(amber_dir).vocabulary
    assert extract_nouns(ANSWERS[1], vocabulary) == ["man", "dog", "ground", "tree", "cat", "can"]
    # "can" after "you"/"they" is a verb; "sign"/"light" are vocabulary words (safe ones are dropped later)
    assert extract_nouns(ANSWERS[2], vocabulary) == ["car", "sign", "light", "vehicle"]


def test_amber_scores_by_hand(amber_dir) -> None:
    """Generative (positive class irrelevant):
    1: man->person, dog, ground->grass cover all 3 truth objects; tree, cat, can are
       hallucinated (cat is a "hallu" object: Cog 1 of 2). 6 nouns, 3 hallucinated.
    2: sign, light are safe words (not counted); car and vehicle->car cover car (not road);
       2 nouns, 0 hallucinated; Cog 0 of 2.
    CHAIR = 3/8; Cover = (3 + 1)/(3 + 2) = 0.8; Hal = 1/2; Cog = 1/4.

    Discriminative, positive = "no":
    3 TP, 4 TN, 5 FN (state), 6 FP (number), 7 TP (relation), 8 TP (action)
    overall: TP 3, TN 1, FP 1, FN 1 -> accuracy 4/6, precision 3/4, recall 3/4, F1 3/4
    attribute = {5 FN, 6 FP, 8 TP}: accuracy 1/3, precision 1/2, recall 1/2, F1 1/2
    AMBER score = ((1 - 3/8) + 3/4) / 2 = 0.6875
    """
    m = amber_scores(ANSWERS, load_amber_annotations(amber_dir))
    assert m["chair"] == pytest.approx(3 / 8)
    assert m["cover"] == pytest.approx(0.8)
    assert m["hal"] == pytest.approx(0.5)
    assert m["cog"] == pytest.approx(0.25)
    assert (m["accuracy"], m["precision"], m["recall"], m["f1"]) == pytest.approx((4 / 6, 0.75, 0.75, 0.75))
    dims = m["dimensions"]
    assert (dims["attribute"]["accuracy"], dims["attribute"]["f1"]) == pytest.approx((1 / 3, 0.5))
    assert dims["existence"]["accuracy"] == 1.0 and dims["relation"]["f1"] == 1.0
    assert dims["state"]["n"] == 1 and dims["number"]["f1"] == 0.0 and dims["action"]["f1"] == 1.0
    assert m["amber_score"] == pytest.approx(0.6875)


def test_amber_one_part_only_has_no_amber_score(amber_dir) -> None:
    m = amber_scores({1: ANSWERS[1]}, load_amber_annotations(amber_dir))
    assert "amber_score" not in m and "f1" not in m and m["hal"] == 1.0


def test_amber_errors(amber_dir) -> None:
    annotations = load_amber_annotations(amber_dir / "data")
    with pytest.raises(DataError, match="not in annotations"):
        amber_scores({999: "x"}, annotations)
    (amber_dir / "data" / "safe_words.txt").unlink()
    with pytest.raises(DataError, match="safe_words.txt"):
        load_amber_annotations(amber_dir)
