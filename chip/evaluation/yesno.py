"""Reading a free-form answer as yes/no, and the binary-classification metrics built on it.

POPE, AMBER's discriminative part and HallusionBench's offline scorer all ask yes/no questions.
chip's rule for them (docs/evaluation.md): the answer is "no" if its first sentence contains the word "no" or
"not", else "yes". Two readings of that rule exist:

- `reads_as_yes_official`: POPE's reference (RUCAIBox/POPE `evaluate.py`, parsed the same way by
  LLaVA's `eval_pope.py`) keeps the text before the first ".", removes commas, splits on single
  spaces and looks for the exact strings "No", "no" and "not". So "NO", "No!", "(no)", "Not" and
  "no" followed by a newline read as yes, and "Yes! There is no zebra." reads as no.
- `reads_as_yes` (chip's corrected reading): sentences also end at "!", "?" and newlines, and
  words are matched case-insensitively with punctuation stripped.

In both, an empty or evasive answer reads as "yes" and contractions ("isn't") are not "not".
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from chip.evaluation.text import tokenize

_SENTENCE_END = re.compile(r"[.!?\n]")
_NEGATIONS = frozenset({"no", "not"})


def reads_as_yes_official(answer: str) -> bool:
    """POPE's reference reading: False when "No", "no" or "not" is a space-separated word before the first "."."""
    first_sentence = answer.split(".", 1)[0]
    words = first_sentence.replace(",", "").split(" ")
    return not ("No" in words or "no" in words or "not" in words)


def reads_as_yes(answer: str) -> bool:
    """chip's corrected reading: False when the first sentence contains the word no/not in any case."""
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


# reading name -> answer -> reads as yes
YES_READINGS: dict[str, Callable[[str], bool]] = {
    "official": reads_as_yes_official,
    "corrected": reads_as_yes,
}
