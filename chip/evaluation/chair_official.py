"""The official CHAIR reading of a caption: Rohrbach et al.'s `utils/chair.py`, quirks included.

Published CHAIR and Object HalBench numbers come from `caption_to_words` in
LisaAnne/Hallucination `utils/chair.py` (used unchanged in spirit by OPERA, RLHF-V and most
hallucination papers). `OfficialChairReader` reproduces it step by step:

    lower-case -> nltk.word_tokenize -> Pattern 3.6 singularize every token
    -> merge listed two-word phrases, left to right (the phrase table below)
    -> drop every "seat" when "toilet" is also there
    -> keep tokens that are synonym-file entries -> map each to its line's first entry (the class)

Quirks this keeps (each is a test case in tests/evaluation/data/official/):
- the phrase table holds "train track" and "home plate", which merge into a phrase that is no
  object, so "train tracks" names no train;
- entries the synonym file spells with a leading space (" motor bike", " cheesecake") or a
  capital ("iPhone") never match a caption word, so "motor bike", "cheesecake" and "iphone" are not
  objects; "stove top oven" has three words and never matches either;
- Pattern's singular of "bus" is "bu" (so singular "bus" is no object while "buses" is), of
  "tennis" "tenni" ("tennis racket" is still a tennis racket through "racket"), of "ties" "ty";
  "glass" becomes "glas", and the table maps "wine glas" back to "wine glass";
- "baby"/"adult" before one of 12 animal words and "passenger" before "jet"/"train" become that
  word; before anything else they count as a person;
- every mention counts, so "a man and a boy" is two person mentions.

Ground truth from COCO instances maps each category name straight through the synonym table
(no tokenising), as the original does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from chip.evaluation.official_text import pattern_singularize, word_tokenize

# Two-word phrases kept as one token, as listed in utils/chair.py (with its repeats removed).
_PHRASES = (
    "motor bike",
    "motor cycle",
    "air plane",
    "traffic light",
    "street light",
    "traffic signal",
    "stop light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "suit case",
    "sports ball",
    "baseball bat",
    "baseball glove",
    "tennis racket",
    "wine glass",
    "hot dog",
    "cell phone",
    "mobile phone",
    "teddy bear",
    "hair drier",
    "potted plant",
    "bow tie",
    "laptop computer",
    "stove top oven",
    "home plate",
    "train track",
)
# "baby X" / "adult X" -> X for these, "passenger X" -> X for those; then three fixed rewrites.
_ANIMALS = (
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "animal",
    "cub",
)
_VEHICLES = ("jet", "train")
_REWRITES = {"bow tie": "tie", "toilet seat": "toilet", "wine glas": "wine glass"}


def _phrase_table() -> dict[str, str]:
    table = {phrase: phrase for phrase in _PHRASES}
    for animal in _ANIMALS:
        table[f"baby {animal}"] = animal
        table[f"adult {animal}"] = animal
    for vehicle in _VEHICLES:
        table[f"passenger {vehicle}"] = vehicle
    table.update(_REWRITES)
    return table


@dataclass(frozen=True)
class OfficialChairReader:
    """Object mentions of a caption exactly as the CHAIR reference code finds them."""

    # one list per synonym-file line, entries as the reference splits them; the first is the class
    synonym_lines: tuple[tuple[str, ...], ...]
    name: str = "coco"
    reading: str = "official"

    _classes: dict[str, str] = field(init=False, repr=False, compare=False)
    _phrases: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        classes: dict[str, str] = {}
        for line in self.synonym_lines:
            for entry in line:
                # A later line wins for an entry listed twice, as the reference's dict update does.
                classes[entry] = line[0]
        object.__setattr__(self, "_classes", classes)
        object.__setattr__(self, "_phrases", _phrase_table())

    @property
    def classes(self) -> frozenset[str]:
        """The canonical classes (first entry of each synonym line)."""
        return frozenset(line[0] for line in self.synonym_lines)

    def tokens(self, text: str) -> list[str]:
        """The caption's tokens after singularising and phrase merging (the reference's `double_words`)."""
        words = [pattern_singularize(w) for w in word_tokenize(text.lower())]
        merged: list[str] = []
        i = 0
        while i < len(words):
            pair = " ".join(words[i : i + 2])
            if pair in self._phrases:
                merged.append(self._phrases[pair])
                i += 2
            else:
                merged.append(words[i])
                i += 1
        return merged

    def mentions(self, text: str) -> list[tuple[str, str]]:
        """(word, class) for every object mention, in order, repeats kept."""
        return self.filter_objects(self.tokens(text))

    def filter_objects(self, words: list[str]) -> list[tuple[str, str]]:
        """(word, class) for the `words` that are synonym entries, after the toilet-seat rule."""
        if "toilet" in words and "seat" in words:
            words = [w for w in words if w != "seat"]
        return [(w, self._classes[w]) for w in words if w in self._classes]

    def phrases_only(self, words: list[str]) -> list[str]:
        """The listed two-word phrases among `words`, mapped (RLHF-V's `get_double_words_only`)."""
        found: list[str] = []
        i = 0
        while i < len(words):
            pair = " ".join(words[i : i + 2])
            if pair in self._phrases:
                found.append(self._phrases[pair])
                i += 2
            else:
                i += 1
        return found

    def category_class(self, name: str) -> str | None:
        """The class a COCO category name stands for (looked up as is), or None."""
        return self._classes.get(name)

    def word_count(self, text: str) -> int:
        """Response length as RLHF-V's Object HalBench script counts it: pieces between single spaces."""
        return len(text.strip().split(" "))


@lru_cache(maxsize=1)
def official_coco_reader() -> OfficialChairReader:
    """The reader over the reference's own synonym file (`data/chair_synonyms.json`)."""
    path = Path(__file__).with_name("data") / "chair_synonyms.json"
    with path.open(encoding="utf-8") as handle:
        lines = json.load(handle)["lines"]
    return OfficialChairReader(tuple(tuple(line) for line in lines))
