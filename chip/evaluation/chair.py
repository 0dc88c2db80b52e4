"""CHAIR and Object HalBench: object hallucination in free-form descriptions.

CHAIR (Rohrbach et al., "Object Hallucination in Image Captioning", EMNLP 2018) counts the
objects a description mentions that are not in the image's ground truth:

    CHAIR_i = hallucinated mentions / all mentions            (pooled; repeats count)
    CHAIR_s = responses with >= 1 hallucinated mention / responses
    CHAIR_s refined (Object HalBench, "Response Hall") = same / responses mentioning >= 1 object
    recall  = sum over responses of distinct correct classes / sum of ground-truth classes

CHAIR_i and CHAIR_s are `utils/chair.py`'s; recall is OPERA's `chair.py` formula and the refined
CHAIR_s and `avg_length` are RLHF-V's `eval_gpt_obj_halbench.py` formulas (OPERA and RLHF-V
compute recall the same way). How a caption's mentions are found is the reader's business: the
official reading (`chair_official.official_coco_reader()`, the default) or chip's corrected one
(`COCO_VOCABULARY`, also the shape of the synthetic world's vocabulary).

A scorer here is a pure function of answers and ground truth; reading files is the CLI's job.

    from chip.evaluation.chair import chair_scores, official_coco_reader
    chair_scores({1: "A man rides a horse."}, {1: {"person", "horse"}}, official_coco_reader())
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass

from chip.errors import DataError
from chip.evaluation.chair_official import OfficialChairReader, official_coco_reader
from chip.evaluation.coco import COCO_VOCABULARY, MentionReader, load_coco_truth
from chip.evaluation.vocabulary import ObjectVocabulary, extract_mentions

__all__ = [
    "COCO_VOCABULARY",
    "MentionReader",
    "ObjectVocabulary",
    "OfficialChairReader",
    "ResponseObjects",
    "chair_scores",
    "coco_reader",
    "extract_mentions",
    "load_coco_truth",
    "official_coco_reader",
    "score_response",
]


def coco_reader(reading: str) -> MentionReader:
    """The COCO mention reader of a reading: "official" (the reference's) or "corrected" (chip's)."""
    if reading == "official":
        return official_coco_reader()
    if reading == "corrected":
        return COCO_VOCABULARY
    raise ValueError(f"unknown CHAIR reading {reading!r}; expected 'official' or 'corrected'")


@dataclass(frozen=True)
class ResponseObjects:
    """One response's object mentions split against its image's ground truth."""

    words: tuple[str, ...]  # the mentioning words (after singularising / phrase merging), in order
    mentions: tuple[str, ...]  # their canonical classes, repeats kept
    hallucinated: tuple[str, ...]  # the mentions not in the ground truth, repeats kept
    covered: frozenset[str]  # distinct ground-truth classes the response mentions


def score_response(text: str, truth: set[str] | frozenset[str], vocab: MentionReader) -> ResponseObjects:
    """Which of `text`'s object mentions are hallucinated, and which truth classes it covers."""
    pairs = vocab.mentions(text)
    mentions = tuple(cls for _, cls in pairs)
    return ResponseObjects(
        words=tuple(word for word, _ in pairs),
        mentions=mentions,
        hallucinated=tuple(m for m in mentions if m not in truth),
        covered=frozenset(m for m in mentions if m in truth),
    )


def chair_scores(
    answers: Mapping[Hashable, str],
    truth: Mapping[Hashable, set[str]],
    vocab: MentionReader,
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
        total_words += vocab.word_count(text)

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
