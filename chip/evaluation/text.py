"""Offline word handling shared by the scorers: tokenising and vocabulary-guarded singularisation.

The reference scorers use NLTK's tokenizer, `pattern.en.singularize` and WordNet, all of which
need data downloads. Here tokenising is a regular expression and singularisation is `inflect`
(which ships its rules in the wheel). `inflect` happily singularises words that are not plurals
(`singular_noun("bus") == "bu"`), so a word is only ever replaced by a singular form that the
caller's vocabulary knows: the scorers only care whether a word is one of *their* words.
"""

from __future__ import annotations

import re
from collections.abc import Container
from functools import lru_cache

import inflect

_WORD = re.compile(r"[a-z0-9]+")

# Plurals `inflect` gets wrong in a way that matters to an object vocabulary.
_IRREGULAR_SINGULAR: dict[str, str] = {
    "busses": "bus",
    "lenses": "lens",
    "cacti": "cactus",
    "dice": "die",
}

_ENGINE = inflect.engine()


def tokenize(text: str) -> list[str]:
    """Lower-cased alphanumeric runs: punctuation, hyphens and apostrophes split words."""
    return _WORD.findall(text.lower())


def word_count(text: str) -> int:
    """Length in whitespace-separated words, the unit the CHAIR papers report."""
    return len(text.split())


@lru_cache(maxsize=65536)
def _singular_candidates(word: str) -> tuple[str, ...]:
    candidates: list[str] = []
    if word in _IRREGULAR_SINGULAR:
        candidates.append(_IRREGULAR_SINGULAR[word])
    singular = _ENGINE.singular_noun(word)
    if singular:
        candidates.append(singular)
    # Dropping a final "s" catches lemmas `inflect` maps elsewhere ("leaves" -> "leaf" while
    # AMBER lists "leave"). Not "-es": "skies" would become "ski".
    if word.endswith("s") and not word.endswith("ss"):
        candidates.append(word[:-1])
    return tuple(candidates)


def singularize(word: str, known: Container[str]) -> str:
    """`word` itself when `known` has it, else its first singular form that `known` has, else `word`.

    Checking `known` first is what keeps "bus", "skis", "scissors" and "glass" intact.
    """
    if word in known:
        return word
    for candidate in _singular_candidates(word):
        if candidate in known:
            return candidate
    return word
