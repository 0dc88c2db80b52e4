"""Reading a free-form answer as yes/no, and the binary-classification metrics built on it.

POPE, AMBER's discriminative part and HallusionBench's offline scorer all ask yes/no questions.
EVAL.md fixes one reading rule for them: the answer is "no" if its first sentence contains the
word "no" or "not", else "yes". Because the rule only looks for negations, an empty or evasive
answer reads as "yes"; contractions ("isn't") are not the word "not" and also read as "yes",
as in the POPE reference script.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from chip.evaluation.text import tokenize

_SENTENCE_END = re.compile(r"[.!?\n]")
_NEGATIONS = frozenset({"no", "not"})


def reads_as_yes(answer: str) -> bool:
    """EVAL.md's rule: False when the first sentence contains the word no/not, True otherwise."""
    first_sentence = _SENTENCE_END.split(answer.strip(), maxsplit=1)[0]
    return not (_NEGATIONS & set(tokenize(first_sentence)))


def parse_label(value: object) -> bool | None:
    """A ground-truth label as a bool (yes = True); None when it is not a recognisable yes/no.

    Accepts "yes"/"no" in any case, booleans, and the "1"/"0" strings HallusionBench uses.
    """
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"yes", "1", "true"}:
        return True
    if text in {"no", "0", "false"}:
        return False
    return None


def _ratio(numerator: int, denominator: int) -> float:
    # 0/0 is reported as 0.0 (scikit-learn's zero_division=0) so a degenerate split still has numbers.
    return numerator / denominator if denominator else 0.0


def binary_metrics(predicted: Sequence[bool], actual: Sequence[bool]) -> dict[str, float | int]:
    """Accuracy, precision, recall, F1 and the predicted-positive ratio, as fractions.

    `predicted[i]` / `actual[i]` say whether item i is predicted / labelled *positive*; callers
    decide what positive means (yes for POPE, no for AMBER).
    """
    if len(predicted) != len(actual):
        raise ValueError(f"{len(predicted)} predictions for {len(actual)} labels")
    tp = sum(p and a for p, a in zip(predicted, actual))
    fp = sum(p and not a for p, a in zip(predicted, actual))
    fn = sum(a and not p for p, a in zip(predicted, actual))
    tn = len(actual) - tp - fp - fn
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    return {
        "accuracy": _ratio(tp + tn, len(actual)),
        "precision": precision,
        "recall": recall,
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "positive_ratio": _ratio(tp + fp, len(actual)),
        "n": len(actual),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
    }
