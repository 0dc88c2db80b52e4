"""The COCO object vocabulary for CHAIR / Object HalBench, and COCO 2014 ground truth.

The synonym lists follow the word lists of the CHAIR reference (Rohrbach et al. 2018, used
unchanged by Object HalBench and most hallucination papers) so that numbers stay comparable;
duplicates are removed and canonical names are the COCO category names. Ground truth for an
image is its instance categories plus the objects mentioned in its five reference captions
(captions name things the segmentation masks miss, e.g. a "table" under a plate).
"""

from __future__ import annotations

import json
from collections.abc import Collection
from pathlib import Path
from typing import Protocol

from chip.errors import DataError
from chip.evaluation.vocabulary import ObjectVocabulary


class MentionReader(Protocol):
    """How a CHAIR-style scorer reads text: `ObjectVocabulary` (corrected) or `OfficialChairReader`."""

    name: str  # the vocabulary, e.g. "coco"
    reading: str  # "official" or "corrected"

    def mentions(self, text: str) -> list[tuple[str, str]]:
        """(word, class) for every object mention, in order, repeats kept."""
        ...

    def category_class(self, name: str) -> str | None:
        """The class an annotation's category name stands for, or None."""
        ...

    def word_count(self, text: str) -> int:
        """Response length in words, for `avg_length`."""
        ...


# canonical COCO class -> further surface forms (lower-case, singular), chip's corrected reading
_COCO_SYNONYMS: dict[str, list[str]] = json.loads(
    (Path(__file__).with_name("data") / "coco_corrected_synonyms.json").read_text(encoding="utf-8")
)

COCO_VOCABULARY = ObjectVocabulary(
    name="coco",
    synonyms={
        surface: canonical for canonical, others in _COCO_SYNONYMS.items() for surface in (canonical, *others)
    },
    animals=frozenset(
        {"bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe"}
    ),
    phrases={
        # Without these, "passenger" (a person synonym) would fire on vehicles.
        "passenger jet": "jet",
        "passenger train": "train",
        "toilet seat": "toilet",
        # A baby animal is an animal; "animal" and "cub" are not classes, so these only stop
        # "baby"/"adult" from counting as a person.
        "baby animal": "animal",
        "adult animal": "animal",
        "baby cub": "cub",
    },
    suppressed_by={"seat": "toilet"},
)


def _annotation_files(folder: Path, kind: str) -> list[Path]:
    files = sorted(folder.glob(f"{kind}_*2014.json"))
    if not files:
        raise DataError(f"{folder}: no {kind}_*2014.json (COCO 2014 annotations) found")
    return files


def _load_json(path: Path) -> dict:
    try:
        with path.open(encoding="utf-8") as handle:
            data = json.load(handle)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}: invalid JSON ({err.msg})") from err
    if not isinstance(data, dict) or "annotations" not in data:
        raise DataError(f"{path}: field 'annotations': missing (not a COCO annotation file)")
    return data


def load_coco_truth(
    folder: str | Path,
    image_ids: Collection[int] | None = None,
    vocab: MentionReader = COCO_VOCABULARY,
) -> dict[int, set[str]]:
    """Ground-truth classes per image: instance categories ∪ objects extracted from reference captions.

    Reads every `instances_*2014.json` and `captions_*2014.json` in `folder` (train and val may
    both be there; the CHAIR reference merges them). Only `image_ids` are kept when given, which
    keeps memory small on the 80k-image train split. `vocab` reads category names and captions.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: COCO annotation folder not found")
    wanted = None if image_ids is None else {int(i) for i in image_ids}
    truth: dict[int, set[str]] = {}

    for path in _annotation_files(folder, "instances"):
        data = _load_json(path)
        names = {c["id"]: c["name"] for c in data.get("categories", [])}
        for index, ann in enumerate(data["annotations"]):
            image_id = ann.get("image_id")
            if wanted is not None and image_id not in wanted:
                continue
            name = names.get(ann.get("category_id"))
            canonical = vocab.category_class(name) if name else None
            if canonical is None:
                raise DataError(
                    f"{path}: annotations[{index}]: field 'category_id': "
                    f"{ann.get('category_id')!r} is not a {vocab.name} class"
                )
            truth.setdefault(image_id, set()).add(canonical)

    for path in _annotation_files(folder, "captions"):
        for ann in _load_json(path)["annotations"]:
            image_id = ann.get("image_id")
            if wanted is not None and image_id not in wanted:
                continue
            truth.setdefault(image_id, set()).update(cls for _, cls in vocab.mentions(ann.get("caption", "")))
    # Every COCO image has captions, so an id seen nowhere is a wrong id or a wrong split, and
    # scoring it against an empty truth would call every mention a hallucination.
    unknown = sorted(wanted - truth.keys()) if wanted is not None else []
    if unknown:
        raise DataError(
            f"{folder}: {len(unknown)} image id(s) not in the COCO annotations, e.g. {unknown[:5]}"
        )
    return truth
