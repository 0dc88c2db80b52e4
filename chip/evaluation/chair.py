"""CHAIR and Object HalBench: object hallucination in free-form descriptions.

CHAIR (Rohrbach et al., "Object Hallucination in Image Captioning", EMNLP 2018) counts the
objects a description mentions that are not in the image's ground truth:

    CHAIR_i = hallucinated mentions / all mentions            (pooled; repeats count)
    CHAIR_s = responses with >= 1 hallucinated mention / responses
    CHAIR_s refined (Object HalBench, "Response Hall") = same / responses mentioning >= 1 object
    recall  = sum over responses of distinct correct classes / sum of ground-truth classes

A scorer here is a pure function of answers and ground truth; reading files is the CLI's job.

    from chip.evaluation.chair import COCO_VOCABULARY, chair_scores
    chair_scores({1: "A man rides a horse."}, {1: {"person", "horse"}}, COCO_VOCABULARY)
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass

from chip.errors import DataError
from chip.evaluation.coco import COCO_VOCABULARY, load_coco_truth
from chip.evaluation.text import word_count
from chip.evaluation.vocabulary import ObjectVocabulary, extract_mentions

__all__ = [
    "COCO_VOCABULARY",
    "ObjectVocabulary",
    "ResponseObjects",
    "chair_scores",
    "extract_mentions",
    "load_coco_truth",
    "score_response",
]


@dataclass(frozen=True)
class ResponseObjects:
    """One response's object mentions split against its image's ground truth."""

    mentions: tuple[str, ...]  # canonical classes in order, repeats kept
    hallucinated: tuple[str, ...]  # the mentions not in the ground truth, repeats kept
    covered: frozenset[str]  # distinct ground-truth classes the response mentions


def score_response(text: str, truth: set[str] | frozenset[str], vocab: ObjectVocabulary) -> ResponseObjects:
    """Which of `text`'s object mentions are hallucinated, and which truth classes it covers."""
    mentions = tuple(extract_mentions(text, vocab))
    return ResponseObjects(
        mentions=mentions,
        hallucinated=tuple(m for m in mentions if m not in truth),
        covered=frozenset(m for m in mentions if m in truth),
    )


def chair_scores(
    answers: Mapping[Hashable, str],
    truth: Mapping[Hashable, set[str]],
    vocab: ObjectVocabulary,
) -> dict:
    """CHAIR_i, CHAIR_s (plain and refined), recall and mean length over `answers`, as fractions.

    `answers` maps a response id (e.g. a COCO image id) to its text and `truth` maps the same ids
    to ground-truth canonical classes. Every answer needs a truth entry: a missing one would
    silently turn every mention into a hallucination.
    """
    missing = [key for key in answers if key not in truth]
    if missing:
        raise DataError(f"no ground truth for {len(missing)} answer id(s), e.g. {missing[:5]!r}")

    n_mentions = n_hallucinated = 0
    n_with_objects = n_with_hallucination = 0
    n_covered = n_truth = 0
    total_words = 0
    for key, text in answers.items():
        result = score_response(text, truth[key], vocab)
        n_mentions += len(result.mentions)
        n_hallucinated += len(result.hallucinated)
        n_with_objects += bool(result.mentions)
        n_with_hallucination += bool(result.hallucinated)
        n_covered += len(result.covered)
        n_truth += len(truth[key])
        total_words += word_count(text)

    n = len(answers)
    return {
        "chair_i": n_hallucinated / n_mentions if n_mentions else 0.0,
        "chair_s": n_with_hallucination / n if n else 0.0,
        "chair_s_refined": n_with_hallucination / n_with_objects if n_with_objects else 0.0,
        "recall": n_covered / n_truth if n_truth else 0.0,
        "avg_length": total_words / n if n else 0.0,
        "n_responses": n,
        "n_responses_with_objects": n_with_objects,
        "n_responses_with_hallucination": n_with_hallucination,
        "n_mentions": n_mentions,
        "n_hallucinated_mentions": n_hallucinated,
        "n_covered_classes": n_covered,
        "n_truth_classes": n_truth,
    }
