"""Annotators: how many hallucinations a sampled response holds, and where they are.

Every annotator turns samples into `Annotation`s through one interface (`Annotator.annotate`), so
the pairing rules never ask who judged:

- `TruthAnnotator` — a list of true objects per image and a mention reader. Its three makers:
  `coco_annotator` (COCO instances + captions, read with the official CHAIR reading or chip's
  corrected one, as `chip eval --bench chair` reads them), `objects_annotator` (a JSON/JSONL file of
  image -> objects, with optional synonyms, for any domain) and the demo world's
  (`chip.demo.onpolicy.world_annotator`). A hallucination is a mention of a class that is not in
  the image's truth (repeats count, as in CHAIR_i); coverage is the number of distinct true
  classes the response names.
- `chip.pairs.judging.JudgeAnnotator` — a served vision-language model checks each claim.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from chip.errors import DataError
from chip.evaluation.chair import coco_reader, load_coco_truth, score_response
from chip.evaluation.coco import MentionReader
from chip.evaluation.io import read_located_records
from chip.evaluation.vocabulary import ObjectVocabulary
from chip.pairs.mentions import MentionLocator
from chip.pairs.sampling import Sample
from chip.pairs.sources import PromptItem


@dataclass(frozen=True)
class Annotation:
    """What an annotator found in one response."""

    hallucinations: int  # hallucinated object mentions, or claims judged false
    coverage: int  # distinct true classes named, or claims judged true
    spans: (
        tuple[tuple[int, int], ...] | None
    )  # [start, end) of the hallucinated words/claims; None: not placed
    hallucinated: tuple[str, ...]  # the hallucinated classes or claims, for the report
    problem: str | None = None  # why the response cannot be used (e.g. "judge reply unreadable")


class Annotator(Protocol):
    """Judges sampled responses; `annotate` returns one `Annotation` per sample, in order."""

    name: str

    def annotate(self, samples: Sequence[Sample], items: Mapping[str, PromptItem]) -> list[Annotation]: ...

    def describe(self) -> dict[str, Any]:
        """What judged the samples, for the report."""
        ...


class TruthAnnotator:
    """Hallucinations against a list of true classes per item, read by a CHAIR-style mention reader."""

    def __init__(self, reader: MentionReader, truth: Mapping[str, frozenset[str]], name: str) -> None:
        self.reader = reader
        self.truth = truth  # item id -> its true classes
        self.name = name
        self._locator = MentionLocator(reader)

    def describe(self) -> dict[str, Any]:
        return {"annotator": self.name, "vocabulary": self.reader.name, "reading": self.reader.reading}

    def annotate_text(self, text: str, truth: frozenset[str]) -> Annotation:
        """One response against its item's truth."""
        found = score_response(text, truth, self.reader)
        spans = self._locator.spans(text) if found.hallucinated else []
        located = None
        if spans is not None:
            located = tuple(span for span, cls in zip(spans, found.mentions) if cls not in truth)
        return Annotation(len(found.hallucinated), len(found.covered), located, found.hallucinated)

    def annotate(self, samples: Sequence[Sample], items: Mapping[str, PromptItem]) -> list[Annotation]:
        return [self.annotate_text(sample.response, self.truth[sample.id]) for sample in samples]


_COCO_ID = re.compile(r"(\d+)$")


def coco_image_id(name: str) -> int | None:
    """The COCO image id in a file name (`COCO_val2014_000000391895.jpg`, `000000391895.jpg`), or None."""
    match = _COCO_ID.search(Path(name).stem)
    return int(match.group(1)) if match else None


def coco_annotator(annotations: str | Path, items: Sequence[PromptItem], reading: str) -> TruthAnnotator:
    """Truth from a COCO 2014 annotation folder (instances and captions), for items named by COCO files."""
    reader = coco_reader(reading)
    ids = {}
    for item in items:
        image_id = coco_image_id(item.image_names[0]) if item.image_names else None
        if image_id is None:
            raise DataError(
                f"item {item.id!r}: no COCO image id in its file name (expected e.g. COCO_val2014_000000391895.jpg)"
            )
        ids[item.id] = image_id
    truth = load_coco_truth(annotations, set(ids.values()), reader)
    return TruthAnnotator(reader, {key: frozenset(truth[image_id]) for key, image_id in ids.items()}, "coco")


def objects_annotator(path: str | Path, items: Sequence[PromptItem]) -> TruthAnnotator:
    """Truth from a file of image -> objects (see `read_objects`); every item needs an entry.

    An item's entry is found under its first image's path (as under `--images`, or as the dataset
    row wrote it) or under its id. The vocabulary is every object and synonym the file names, read
    with chip's corrected CHAIR reading (plurals singularised against the vocabulary).
    """
    per_image, synonyms = read_objects(path)
    vocabulary = ObjectVocabulary(name=Path(path).name, synonyms=synonyms)
    truth, missing = {}, []
    for item in items:
        key = next((k for k in (*item.image_names[:1], item.id) if k in per_image), None)
        if key is None:
            missing.append(item.id)
        else:
            truth[item.id] = frozenset(per_image[key])
    if missing:
        raise DataError(
            f"{path}: no objects for {len(missing)} image(s), e.g. {missing[:3]}; give each image a "
            'record ({"image": ..., "objects": [...]}, [] when it shows none of the listed objects)'
        )
    return TruthAnnotator(vocabulary, truth, "objects")


def _object_name(value: object, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: expected an object name (a non-empty string), got {value!r}")
    name = " ".join(value.lower().split())
    if len(name.split()) > 2:
        raise DataError(f"{where}: {value!r} has {len(name.split())} words; a name or synonym has one or two")
    return name


def read_objects(path: str | Path) -> tuple[dict[str, list[str]], dict[str, str]]:
    """(image -> object classes, surface form -> class) from a JSON/JSONL objects file.

    Records: `{"image": "000001.jpg", "objects": ["dog", {"name": "frisbee", "synonyms": ["disc"]}]}`
    (JSON Lines, or a JSON list of them), or one JSON object `{"000001.jpg": ["dog", ...], ...}`.
    Names and synonyms are one or two words; synonyms given anywhere apply to every image.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8") if path.is_file() else None
    if text is None:
        raise DataError(f"{path}: objects file not found")
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        whole = None
    if isinstance(whole, dict) and all(isinstance(v, list) for v in whole.values()):
        records = [(f"key {key!r}", {"image": key, "objects": value}) for key, value in whole.items()]
    else:
        records = read_located_records(path, required=("image", "objects"))
    per_image: dict[str, list[str]] = {}
    synonyms: dict[str, str] = {}
    for where, record in records:
        place = f"{path}:{where}"
        if not isinstance(record["image"], str) or not isinstance(record["objects"], list):
            raise DataError(f"{place}: expected 'image' to be a string and 'objects' a list")
        classes = []
        for k, entry in enumerate(record["objects"]):
            spot = f"{place}: field 'objects[{k}]'"
            name = _object_name(entry.get("name") if isinstance(entry, dict) else entry, spot)
            extra = entry.get("synonyms", []) if isinstance(entry, dict) else []
            if not isinstance(extra, list):
                raise DataError(f"{spot}: 'synonyms' must be a list of names")
            for surface in [name, *(_object_name(s, spot) for s in extra)]:
                if synonyms.setdefault(surface, name) != name:
                    raise DataError(f"{spot}: {surface!r} already names {synonyms[surface]!r}")
            classes.append(name)
        if record["image"] in per_image:
            raise DataError(f"{place}: image {record['image']!r} is listed twice")
        per_image[record["image"]] = classes
    if not per_image:
        raise DataError(f"{path}: holds no image")
    return per_image, synonyms
