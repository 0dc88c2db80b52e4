"""Where in a response each object mention is: character spans for a reader's mentions.

A mention reader (`chip.evaluation.coco.MentionReader`: the official CHAIR reading, chip's
corrected one, an `ObjectVocabulary`) says which objects a text names — after lower-casing,
singularising and merging phrases such as "hot dog" or "baby elephant" — but not where. CHiP's
segment term needs the characters, so each mention is placed by asking the same reader about
short windows of the text: the mention's span is the smallest run of words (at most three) that
the reader, on its own, reads as that mention, searched left to right after the previous one.
So "dogs" is found for (dog, dog), "hot dog" for (hot dog, hot dog), and a "seat" dropped by the
toilet-seat rule is never a span, because the reader never listed it.

    MentionLocator(official_coco_reader()).spans("Two dogs and a hot dog.")  # [(4, 8), (15, 22)]
"""

from __future__ import annotations

import re

from chip.evaluation.coco import MentionReader

# word runs, with inner hyphens and apostrophes ("t-shirt", "man's")
_WORD = re.compile(r"\w+(?:[-'’]\w+)*")
# longest run of words a mention can take: two-word phrases, "adult zebra", with room for one more
MAX_WORDS = 3


class MentionLocator:
    """Character spans of a reader's mentions; window readings are cached, since words repeat."""

    def __init__(self, reader: MentionReader) -> None:
        self.reader = reader
        self._readings: dict[str, list[tuple[str, str]]] = {}

    def _read(self, window: str) -> list[tuple[str, str]]:
        key = window.lower()  # every reader lower-cases first
        if key not in self._readings:
            self._readings[key] = self.reader.mentions(window)
        return self._readings[key]

    def spans(self, text: str) -> list[tuple[int, int]] | None:
        """``[start, end)`` of each of ``reader.mentions(text)``, in the same order; None when one of
        them cannot be placed (the report counts such responses)."""
        words = [(m.start(), m.end()) for m in _WORD.finditer(text)]

        def holds(first: int, count: int, mention: tuple[str, str]) -> bool:
            return mention in self._read(text[words[first][0] : words[first + count - 1][1]])

        spans = []
        cursor = 0
        for mention in self.reader.mentions(text):
            found = next(
                (
                    (first, count)
                    for first in range(cursor, len(words))
                    for count in range(1, min(MAX_WORDS, len(words) - first) + 1)
                    if holds(first, count, mention)
                ),
                None,
            )
            if found is None:
                return None
            first, count = found
            while count > 1 and holds(first + 1, count - 1, mention):  # "a hot dog" -> "hot dog"
                first, count = first + 1, count - 1
            spans.append((words[first][0], words[first + count - 1][1]))
            cursor = first + count
        return spans
