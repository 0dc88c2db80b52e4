"""Rows a held-out set shares with the training set: by id, or by image + prompt + responses.

Held-out metrics computed on training rows measure memory, not generalisation, and nothing in the
numbers shows it; so `chip train` refuses such an evaluation set before any weights load.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from chip.data.rows import PreferenceExample


@dataclass
class Overlap:
    """Held-out rows also found in the training set; ``rows`` counts each held-out row once."""

    rows: int
    by_id: list[str]  # held-out ids also used in training (explicit ids only)
    by_content: list[str]  # ids of held-out rows whose images, prompt and both responses recur

    def describe(self) -> str:
        parts = []
        if self.by_id:
            parts.append(f"{len(self.by_id)} by id, e.g. {self.by_id[0]!r}")
        if self.by_content:
            parts.append(
                f"{len(self.by_content)} by image + prompt + responses, e.g. id {self.by_content[0]!r}"
            )
        return "; ".join(parts)


def content_key(example: PreferenceExample) -> tuple:
    """What makes two rows the same pair wherever they are stored: images, prompt and both responses."""
    return (tuple(ref.key for ref in example.images), str(example.prompt), example.chosen, example.rejected)


def has_own_id(example: PreferenceExample) -> bool:
    """Whether the row carries an id of its own: a row without one gets its index, which every file shares."""
    return example.id != str(example.row)


def shared_rows(train: Sequence[PreferenceExample], held_out: Sequence[PreferenceExample]) -> Overlap:
    """The held-out rows that are also training rows (see the module doc)."""
    train_ids = {ex.id for ex in train if has_own_id(ex)}
    train_content = {content_key(ex) for ex in train}
    by_id = [ex.id for ex in held_out if has_own_id(ex) and ex.id in train_ids]
    by_content = [ex.id for ex in held_out if content_key(ex) in train_content]
    rows = sum(
        1 for ex in held_out if (has_own_id(ex) and ex.id in train_ids) or content_key(ex) in train_content
    )
    return Overlap(rows, by_id, by_content)
