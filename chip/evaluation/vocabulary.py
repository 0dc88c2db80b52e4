"""Object vocabularies and the CHAIR mention extractor (Rohrbach et al., EMNLP 2018).

A caption's object mentions are found by this pipeline (docs/evaluation.md):

    lower-case, tokenise -> singularise each word -> merge two-word phrases
    ("hot dog", "baby cat" -> "cat", "toilet seat" -> "toilet") -> drop suppressed words
    ("seat" when "toilet" is present) -> keep words in the synonym table -> canonical class

The same machinery serves COCO (`chip.evaluation.coco.COCO_VOCABULARY`) and the project's
synthetic world, so everything vocabulary-specific lives in `ObjectVocabulary`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from chip.errors import ConfigError
from chip.evaluation.text import singularize, tokenize, word_count


@dataclass(frozen=True)
class ObjectVocabulary:
    """The words a CHAIR-style scorer counts as objects, and the phrase rules that disambiguate them.

    Derived lookup tables are built once in `__post_init__`, so extraction is dictionary lookups.
    """

    # display name, e.g. "coco"
    name: str
    # surface form (lower-case, singular; one or two words) -> canonical class
    synonyms: Mapping[str, str]
    # canonical classes that are animals: "baby X" / "adult X" means X, not a person plus X
    animals: frozenset[str] = frozenset()
    # words that turn "<qualifier> <animal>" into the animal
    animal_qualifiers: tuple[str, ...] = ("baby", "adult")
    # extra two-word phrase -> the single word it stands for ("toilet seat" -> "toilet",
    # "passenger jet" -> "jet"); the result only counts if it is itself a surface form
    phrases: Mapping[str, str] = field(default_factory=dict)
    # word -> trigger: the word is dropped from a response that also contains the trigger
    # ("seat" -> "toilet": a seat next to a toilet is the toilet's, not a chair)
    suppressed_by: Mapping[str, str] = field(default_factory=dict)

    _pairs: Mapping[str, str] = field(init=False, repr=False, compare=False)
    _known_words: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for surface, canonical in self.synonyms.items():
            words = surface.split()
            if surface != surface.lower() or not 1 <= len(words) <= 2 or " ".join(words) != surface:
                raise ConfigError(
                    f"vocabulary {self.name!r}: surface form {surface!r} must be one or two "
                    "lower-case words separated by one space"
                )
            if not canonical:
                raise ConfigError(f"vocabulary {self.name!r}: surface form {surface!r} has no class")
        unknown_animals = set(self.animals) - set(self.synonyms.values())
        if unknown_animals:
            raise ConfigError(f"vocabulary {self.name!r}: animals {sorted(unknown_animals)} are not classes")
        for phrase in self.phrases:
            if len(phrase.split()) != 2:
                raise ConfigError(f"vocabulary {self.name!r}: phrase {phrase!r} must be two words")

        # Two-word sequences to merge, and what each becomes.
        pairs: dict[str, str] = {s: s for s in self.synonyms if " " in s}
        for surface, canonical in self.synonyms.items():
            if canonical in self.animals and " " not in surface:
                for qualifier in self.animal_qualifiers:
                    pairs[f"{qualifier} {surface}"] = surface
        pairs.update(self.phrases)
        object.__setattr__(self, "_pairs", pairs)

        # Every single word the rules mention: singularisation only ever maps onto these.
        known: set[str] = set()
        for text in (
            *self.synonyms,
            *pairs,
            *pairs.values(),
            *self.suppressed_by,
            *self.suppressed_by.values(),
        ):
            known.update(text.split())
        object.__setattr__(self, "_known_words", frozenset(known))

    # chip's corrected reading of CHAIR; `chip.evaluation.chair_official` is the reference's reading
    reading = "corrected"

    @property
    def classes(self) -> frozenset[str]:
        """The canonical classes."""
        return frozenset(self.synonyms.values())

    def mentions(self, text: str) -> list[tuple[str, str]]:
        """(surface form, class) for every object mention in `text`, in order, repeats kept."""
        return [(w, self.synonyms[w]) for w in self.words(text)]

    def category_class(self, name: str) -> str | None:
        """The class a category name (e.g. a COCO category) stands for, or None."""
        return self.canonical(name)

    def word_count(self, text: str) -> int:
        """Response length in whitespace-separated words."""
        return word_count(text)

    def canonical(self, surface: str) -> str | None:
        """The class of one surface form (after singularisation), or None if it is not an object word."""
        words = [singularize(w, self._known_words) for w in surface.lower().split()]
        return self.synonyms.get(" ".join(words))

    def words(self, text: str) -> list[str]:
        """Surface forms of the object words in `text`, in order, repeats kept (before mapping to classes)."""
        tokens = [singularize(t, self._known_words) for t in tokenize(text)]
        merged: list[str] = []
        i = 0
        while i < len(tokens):
            pair = " ".join(tokens[i : i + 2])
            if i + 1 < len(tokens) and pair in self._pairs:
                merged.append(self._pairs[pair])
                i += 2
            else:
                merged.append(tokens[i])
                i += 1
        present = set(merged)
        kept = [w for w in merged if self.suppressed_by.get(w) not in present]
        return [w for w in kept if w in self.synonyms]


def extract_mentions(text: str, vocab: ObjectVocabulary) -> list[str]:
    """Canonical classes mentioned in `text`, in order, repeats kept.

    "A man and a woman feed a baby elephant near a toilet seat" -> person, person, elephant, toilet.
    """
    return [vocab.synonyms[w] for w in vocab.words(text)]
