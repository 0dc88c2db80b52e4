"""AMBER (Wang et al., "An LLM-free Multi-dimensional Benchmark for MLLMs Hallucination Evaluation", 2023).

Generative part ("Describe this image."): the object nouns of a response are matched against the
image's truth objects, their associated words (relation.json) and likely-hallucination objects:

    CHAIR = hallucinated nouns / kept nouns        Cover = covered truth objects / truth objects
    Hal   = share of responses with >= 1 hallucinated noun
    Cog   = mentioned "hallu" objects / all "hallu" objects

Discriminative part: yes/no questions (existence, attribute state/number/action, relation) with
**no** as the positive class. AMBER score = ((1 - CHAIR) + F1) / 2, here on fractions.

Offline deviations (see docs/evaluation.md): nouns are found without a POS tagger, as
vocabulary words after singularisation, with a small rule for words that are usually verbs or
adjectives; the reference's word-vector similarity (spaCy en_core_web_lg, threshold 0.8) is not
used, so only exact and association matches count.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from chip.errors import DataError
from chip.evaluation.io import read_json
from chip.evaluation.text import singularize, tokenize
from chip.evaluation.yesno import binary_metrics, parse_label, reads_as_yes

# annotation type -> the dimensions its questions are reported under
_DIMENSIONS: dict[str, tuple[str, ...]] = {
    "discriminative-hallucination": ("existence",),
    "discriminative-attribute-state": ("attribute", "state"),
    "discriminative-attribute-number": ("attribute", "number"),
    "discriminative-attribute-action": ("attribute", "action"),
    "discriminative-relation": ("relation",),
    "relation": ("relation",),  # 689 rows of annotations.json carry this shorter type name
}

# A word right after one of these is read as a verb ("they watch", "to park", "can drink").
_VERB_CONTEXT = frozenset(
    {
        "to",
        "can",
        "could",
        "will",
        "would",
        "may",
        "might",
        "shall",
        "should",
        "must",
        "i",
        "we",
        "you",
        "they",
        "he",
        "she",
        "it",
        "who",
    }
)
# Vocabulary words that are far more often not nouns in descriptions ("you can see", "a hot
# day", "sailing on"); they count only right after a determiner or number ("a can of soda").
_NOUN_ONLY_AFTER_DETERMINER = frozenset({"can", "hot", "sailing", "drawing", "sound", "support", "switch"})
_DETERMINERS = frozenset(
    {
        "a",
        "an",
        "the",
        "this",
        "that",
        "these",
        "those",
        "his",
        "her",
        "their",
        "its",
        "our",
        "my",
        "your",
        "some",
        "one",
        "two",
        "three",
        "four",
        "five",
        "several",
        "many",
        "another",
    }
)


@dataclass(frozen=True)
class AmberAnnotations:
    """The benchmark's own files: per-id annotations, word associations and safe words."""

    items: Mapping[int, dict]  # id -> {"type", "truth", "hallu"?}
    association: Mapping[str, frozenset[str]]  # object -> words that count as naming it
    safe_words: frozenset[str]  # ambiguous words never counted as hallucinations
    # the same two as the reference reads them (no lower-casing): the official reading uses these
    raw_association: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    raw_safe_words: frozenset[str] = frozenset()

    @property
    def vocabulary(self) -> frozenset[str]:
        """Every object word AMBER scores: the association keys and all their associated words."""
        words = set(self.association)
        for associated in self.association.values():
            words |= associated
        return frozenset(words)


def load_amber_annotations(folder: str | Path) -> AmberAnnotations:
    """Read `annotations.json`, `relation.json` and `safe_words.txt` from `folder` (or its `data/`)."""
    folder = Path(folder)
    if not (folder / "annotations.json").is_file() and (folder / "data" / "annotations.json").is_file():
        folder = folder / "data"
    rows = read_json(folder / "annotations.json")
    relation = read_json(folder / "relation.json")
    safe_path = folder / "safe_words.txt"
    if not safe_path.is_file():
        raise DataError(f"{safe_path}: file not found")
    if not isinstance(rows, list) or not isinstance(relation, dict):
        raise DataError(f"{folder}: annotations.json must be a list and relation.json an object")
    items: dict[int, dict] = {}
    for index, row in enumerate(rows):
        for name in ("id", "type", "truth"):
            if name not in row:
                raise DataError(f"{folder / 'annotations.json'}:item {index}: field {name!r}: missing")
        items[int(row["id"])] = row
    association = {key.lower(): frozenset(w.lower() for w in words) for key, words in relation.items()}
    safe_text = safe_path.read_text(encoding="utf-8")
    safe = frozenset(w.strip().lower() for w in safe_text.splitlines() if w.strip())
    return AmberAnnotations(
        items=items,
        association=association,
        safe_words=safe,
        raw_association={key: tuple(words) for key, words in relation.items()},
        raw_safe_words=frozenset(safe_text.split("\n")),
    )


def extract_nouns(text: str, vocabulary: frozenset[str]) -> list[str]:
    """Vocabulary words of `text` read as nouns, singularised, in order, repeats kept."""
    tokens = tokenize(text)
    nouns = []
    for i, token in enumerate(tokens):
        word = singularize(token, vocabulary)
        if word not in vocabulary:
            continue
        previous = tokens[i - 1] if i else ""
        if previous in _VERB_CONTEXT:
            continue
        if word in _NOUN_ONLY_AFTER_DETERMINER and previous not in _DETERMINERS:
            continue
        nouns.append(word)
    return nouns


def _naming(objects: list[str], association: Mapping[str, frozenset[str]]) -> dict[str, set[str]]:
    # word -> the objects it names: each object names itself and is named by its associated words
    naming: dict[str, set[str]] = {}
    for obj in objects:
        naming.setdefault(obj, set()).add(obj)
        for word in association.get(obj, ()):
            naming.setdefault(word, set()).add(obj)
    return naming


def amber_generative_scores(answers: Mapping[Hashable, str], annotations: AmberAnnotations) -> dict:
    """CHAIR, Cover, Hal and Cog over generative answers, as fractions (see module docstring)."""
    vocabulary = annotations.vocabulary
    n_kept = n_hallucinated = n_with_hallucination = 0
    n_covered = n_truth = n_cog = n_hallu = 0
    for key, text in answers.items():
        item = annotations.items[int(key)]
        truth = list(dict.fromkeys(w.lower() for w in item["truth"]))
        hallu = list(dict.fromkeys(w.lower() for w in item.get("hallu", [])))
        truth_naming = _naming(truth, annotations.association)
        hallu_naming = _naming(hallu, annotations.association)
        covered: set[str] = set()
        mentioned_hallu: set[str] = set()
        hallucinated = 0
        for noun in extract_nouns(text, vocabulary):
            if noun in annotations.safe_words:
                continue
            n_kept += 1
            if noun in truth_naming:
                covered |= truth_naming[noun]
            else:
                hallucinated += 1
                mentioned_hallu |= hallu_naming.get(noun, set())
        n_hallucinated += hallucinated
        n_with_hallucination += hallucinated > 0
        n_covered += len(covered)
        n_truth += len(truth)
        n_cog += len(mentioned_hallu)
        n_hallu += len(hallu)
    n = len(answers)
    return {
        "chair": n_hallucinated / n_kept if n_kept else 0.0,
        "cover": n_covered / n_truth if n_truth else 0.0,
        "hal": n_with_hallucination / n if n else 0.0,
        "cog": n_cog / n_hallu if n_hallu else 0.0,
        "n_generative": n,
        "n_nouns": n_kept,
        "n_hallucinated_nouns": n_hallucinated,
    }


def amber_discriminative_scores(answers: Mapping[Hashable, str], annotations: AmberAnnotations) -> dict:
    """Accuracy, precision, recall and F1 with "no" as positive, overall and per dimension."""
    groups: dict[str, tuple[list[bool], list[bool]]] = {}
    for key, text in answers.items():
        item = annotations.items[int(key)]
        label = parse_label(item["truth"])
        if label is None:
            raise DataError(f"AMBER id {key}: field 'truth': {item['truth']!r} is not yes/no")
        said_no, is_no = not reads_as_yes(text), not label
        for dimension in ("overall", *_DIMENSIONS[item["type"]]):
            predicted, actual = groups.setdefault(dimension, ([], []))
            predicted.append(said_no)
            actual.append(is_no)
    reported = ("accuracy", "precision", "recall", "f1", "n")
    overall = binary_metrics(*groups.pop("overall", ([], [])))
    result = {k: overall[k] for k in reported}
    result["n_discriminative"] = result.pop("n")
    result["dimensions"] = {
        name: {k: v for k, v in binary_metrics(*groups[name]).items() if k in reported}
        for name in sorted(groups)
    }
    return result


def check_answer_ids(answers: Mapping[Hashable, str], annotations: AmberAnnotations) -> None:
    """Every answer id must be in annotations.json, with a known type."""
    unknown = [k for k in answers if int(k) not in annotations.items]
    if unknown:
        raise DataError(f"{len(unknown)} answer(s) to ids not in annotations.json, e.g. {unknown[:5]!r}")
    for key in answers:
        kind = annotations.items[int(key)]["type"]
        if kind != "generative" and kind not in _DIMENSIONS:
            raise DataError(f"AMBER id {key}: field 'type': unknown type {kind!r}")


def amber_scores(answers: Mapping[Hashable, str], annotations: AmberAnnotations) -> dict:
    """chip's corrected reading of both parts on whichever answers are present, plus the AMBER score."""
    check_answer_ids(answers, annotations)
    generative = {k: v for k, v in answers.items() if annotations.items[int(k)]["type"] == "generative"}
    discriminative = {k: v for k, v in answers.items() if k not in generative}
    result: dict = {}
    if generative:
        result.update(amber_generative_scores(generative, annotations))
    if discriminative:
        result.update(amber_discriminative_scores(discriminative, annotations))
    if generative and discriminative:
        result["amber_score"] = ((1.0 - result["chair"]) + result["f1"]) / 2
    result["noun_reading"] = "vocabulary match after singularisation (no POS tagger)"
    result["similarity"] = "exact and association matches only (no word vectors)"
    return result
