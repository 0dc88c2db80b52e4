"""POPE: both answer readings and hand-worked per-split metrics (the reference's own output is
checked in test_eval_official.py)."""

from __future__ import annotations

import pytest

from chip.errors import DataError
from chip.evaluation.pope import pope_scores
from chip.evaluation.yesno import binary_metrics, reads_as_yes, reads_as_yes_official


@pytest.mark.parametrize(
    ("answer", "is_yes"),
    [
        ("Yes, there is a dog in the image.", True),
        ("No, there is no cat.", False),
        ("NO", False),
        ("There is not a car. But actually yes.", False),
        ("Yes. There is no bench.", True),  # only the first sentence counts
        ("Yes!\nNo.", True),
        ("I don't think so", True),  # a contraction is not the word "not" (as in the reference)
        ("", True),
        ("Nothing like that.", True),  # "nothing" is not "no"
    ],
)
def test_reads_as_yes(answer: str, is_yes: bool) -> None:
    assert reads_as_yes(answer) is is_yes


@pytest.mark.parametrize(
    ("answer", "is_yes"),
    [
        ("No, there is no cat.", False),  # commas are removed before splitting
        ("no", False),
        ("NO", True),  # only "No", "no" and "not" count
        ("No!", True),  # "No!" is not the word "No"
        ("(no)", True),
        ("Not at all.", True),  # capitalised "Not" is not "not"
        ("Yes! There is no zebra.", False),  # "!" does not end the first sentence
        ("Yes. There is no bench.", True),
        ("No\nthere is none", True),  # split on spaces only: "No\nthere" is one word
        ("It is not there", False),
        ("", True),
    ],
)
def test_reads_as_yes_official(answer: str, is_yes: bool) -> None:
    assert reads_as_yes_official(answer) is is_yes


QUESTIONS = {
    "q1": ("yes", "random"),
    "q2": ("no", "random"),
    "q3": ("yes", "random"),
    "q4": ("no", "random"),
    "q5": ("yes", "adversarial"),
    "q6": ("no", "adversarial"),
    "q7": ("no", "adversarial"),
    "q8": ("yes", "adversarial"),
    "q9": ("yes", "random"),
}
ANSWERS = {
    "q1": "Yes, there is a dog in the image.",  # TP
    "q2": "No, there is no cat.",  # TN
    "q3": "There is not a car. But actually yes.",  # FN
    "q4": "Yes. There is no bench.",  # FP
    "q5": "Yes",  # TP
    "q6": "Yes, I see a kite",  # FP
    "q7": "I don't think so",  # FP
    "q8": "NO",  # FN
}


def test_pope_scores_by_hand() -> None:
    """random: TP 1, TN 1, FN 1, FP 1 -> accuracy 2/4, precision 1/2, recall 1/2, F1 1/2, yes 2/4.
    adversarial: TP 1, FP 2, FN 1, TN 0 -> accuracy 1/4, precision 1/3, recall 1/2,
    F1 = 2·1 / (2·1 + 2 + 1) = 2/5, yes 3/4.
    overall: TP 2, FP 3, FN 2, TN 1 -> accuracy 3/8, precision 2/5, recall 2/4, F1 4/9, yes 5/8.
    average over the two splits: accuracy 3/8, precision 5/12, recall 1/2, F1 9/20, yes 5/8.
    q9 has no answer: left out and counted. (Corrected reading: q8's "NO" reads as no.)
    """
    labels = {k: v[0] for k, v in QUESTIONS.items()}
    splits = {k: v[1] for k, v in QUESTIONS.items()}
    m = pope_scores(ANSWERS, labels, splits, reading="corrected")
    assert m["accuracy"] == pytest.approx(3 / 8)
    assert m["precision"] == pytest.approx(2 / 5)
    assert m["recall"] == pytest.approx(1 / 2)
    assert m["f1"] == pytest.approx(4 / 9)
    assert m["yes_ratio"] == pytest.approx(5 / 8)
    assert m["n_unanswered"] == 1
    random, adversarial = m["splits"]["random"], m["splits"]["adversarial"]
    assert [random[k] for k in ("accuracy", "precision", "recall", "f1", "yes_ratio")] == pytest.approx(
        [0.5, 0.5, 0.5, 0.5, 0.5]
    )
    assert [adversarial[k] for k in ("accuracy", "precision", "recall", "f1", "yes_ratio")] == pytest.approx(
        [0.25, 1 / 3, 0.5, 0.4, 0.75]
    )
    assert [m["average"][k] for k in ("accuracy", "precision", "recall", "f1", "yes_ratio")] == pytest.approx(
        [3 / 8, 5 / 12, 1 / 2, 9 / 20, 5 / 8]
    )


def test_pope_official_reading_by_hand() -> None:
    """Official reading: q8's "NO" reads as yes, so adversarial has TP 2, FP 2, FN 0, TN 0 ->
    accuracy 2/4, precision 1/2, recall 1, F1 2/3, yes 4/4; random is unchanged."""
    labels = {k: v[0] for k, v in QUESTIONS.items()}
    splits = {k: v[1] for k, v in QUESTIONS.items()}
    m = pope_scores(ANSWERS, labels, splits)
    adversarial = m["splits"]["adversarial"]
    assert [adversarial[k] for k in ("accuracy", "precision", "recall", "f1", "yes_ratio")] == pytest.approx(
        [0.5, 0.5, 1.0, 2 / 3, 1.0]
    )
    with pytest.raises(ValueError, match="reading"):
        pope_scores(ANSWERS, labels, splits, reading="lenient")


def test_pope_without_splits_has_no_split_table() -> None:
    m = pope_scores({"a": "yes"}, {"a": "yes"})
    assert "splits" not in m and m["accuracy"] == 1.0


def test_pope_rejects_mismatched_files() -> None:
    with pytest.raises(DataError, match="unknown question"):
        pope_scores({"zz": "yes"}, {"a": "yes"})
    with pytest.raises(DataError, match="'label'"):
        pope_scores({"a": "yes"}, {"a": "maybe"})


def test_binary_metrics_zero_division_is_zero() -> None:
    """No predicted positives and no actual positives: precision and recall are 0/0 -> 0."""
    m = binary_metrics([False, False], [False, False])
    assert (m["accuracy"], m["precision"], m["recall"], m["f1"]) == (1.0, 0.0, 0.0, 0.0)
