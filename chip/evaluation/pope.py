"""POPE: polling-based object probing (Li et al., "Evaluating Object Hallucination in Large
Vision-Language Models", EMNLP 2023).

Questions are "Is there a {object} in the image?" with yes/no labels, in three splits (random,
popular, adversarial) that differ in how the absent objects were sampled. An answer reads as
"no" when its first sentence contains no/not, by default exactly as the reference `evaluate.py`
parses it (`chip.evaluation.yesno` has both readings). Positive is "yes"; yes_ratio shows a
model's bias towards agreeing, which hallucination inflates. Papers print each split and the
mean of the three splits' metrics (`average`).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

from chip.errors import DataError
from chip.evaluation.yesno import YES_READINGS, binary_metrics, parse_label

_REPORTED = ("accuracy", "precision", "recall", "f1", "yes_ratio", "n")
_AVERAGED = ("accuracy", "precision", "recall", "f1", "yes_ratio")


def _metrics(predicted: list[bool], actual: list[bool]) -> dict:
    scores = binary_metrics(predicted, actual)
    scores["yes_ratio"] = scores.pop("positive_ratio")
    return scores


def pope_scores(
    answers: Mapping[Hashable, str],
    labels: Mapping[Hashable, object],
    splits: Mapping[Hashable, str] | None = None,
    reading: str = "official",
) -> dict:
    """Accuracy, precision, recall, F1 and yes_ratio overall, and per split when `splits` is given.

    `answers` and `labels` are keyed by question id; labels are "yes"/"no". `reading` names how
    an answer is read ("official" or "corrected", see `chip.evaluation.yesno`). The top-level
    metrics pool every answer (what the reference prints for one file); with splits, `splits`
    has each split's metrics and `average` their mean. Questions without an answer are left out
    and counted in `n_unanswered`; an answer to an unknown question is an error, since it means
    the two files do not belong together. Where the reference divides by zero (no "yes" answer
    in a split) the ratio is reported as 0.0.
    """
    if reading not in YES_READINGS:
        raise ValueError(f"unknown POPE reading {reading!r}; expected one of {sorted(YES_READINGS)}")
    reads_as_yes = YES_READINGS[reading]
    unknown = [key for key in answers if key not in labels]
    if unknown:
        raise DataError(f"{len(unknown)} answer(s) to unknown question ids, e.g. {unknown[:5]!r}")

    by_split: dict[str, tuple[list[bool], list[bool]]] = {}
    predicted: list[bool] = []
    actual: list[bool] = []
    for key, answer in answers.items():
        label = parse_label(labels[key])
        if label is None:
            raise DataError(f"question {key!r}: field 'label': {labels[key]!r} is not yes/no")
        predicted.append(reads_as_yes(answer))
        actual.append(label)
        if splits is not None and splits.get(key) is not None:
            split_pred, split_true = by_split.setdefault(str(splits[key]), ([], []))
            split_pred.append(predicted[-1])
            split_true.append(label)

    result = _metrics(predicted, actual)
    result["n_unanswered"] = len(labels) - len(answers)
    if by_split:
        result["splits"] = {
            name: {k: v for k, v in _metrics(*by_split[name]).items() if k in _REPORTED}
            for name in sorted(by_split)
        }
        result["average"] = {
            key: sum(split[key] for split in result["splits"].values()) / len(result["splits"])
            for key in _AVERAGED
        }
    return result
