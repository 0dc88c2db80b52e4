"""The batch contract: the keys of a collated CHiP batch and the order of its scored rows.

Every module that builds, scores or caches a batch reads the layout from here, so it is stated once.

A collated batch of B preference examples (`chip.training.collate.ChipCollator`) holds:

- ``ids`` (`IDS`): list[str], the example ids, in batch order.
- ``real`` (`REAL`): model inputs of W = (y_w | v) and L = (y_l | v), scored as the 2B rows
  ``[W_1..W_B, L_1..L_B]`` (`pair_rows`); `split_pairs` takes them apart again.
- ``real_segment`` (`REAL_SEGMENT`): bool ``[2B, R]`` changed-segment flags per response token, same rows.
- ``corrupt`` / ``corrupt_segment`` (`CORRUPT`, `CORRUPT_SEGMENT`): the B rows C = (y_w | ṽ), only
  when the visual term is on; with image-anchored token weights the 2B rows ``[C_1..C_B, L̃_1..L̃_B]``
  (both responses under ṽ) in the shared-prefix layout of ``real``.
- ``more_rejected`` (`MORE_REJECTED`): only when some example lists several rejected responses
  (and ``max_rejected`` lets them in): the E rows ``(prompt, y_lk)`` of each example's rejected
  responses after the first, in the two-row layout of `VLMAdapter.collate`;
  ``more_rejected_segment`` bool ``[E, R_e]`` their flags, ``more_rejected_of`` long ``[E]`` the
  example (batch index) of each, ``more_chosen_segment`` bool ``[E, R]`` the chosen response's flags
  when aligned with that rejected response (R the width of ``real_segment``).
- ``reference`` (`REFERENCE`): cached reference tensors, only with a precomputed reference; its
  ``real_*`` entries are in the row order of ``real``, ``corrupt_logps`` in that of ``corrupt``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import torch

IDS = "ids"
REAL = "real"
REAL_SEGMENT = "real_segment"
CORRUPT = "corrupt"
CORRUPT_SEGMENT = "corrupt_segment"
REFERENCE = "reference"
MORE_REJECTED = "more_rejected"
MORE_REJECTED_SEGMENT = "more_rejected_segment"
MORE_REJECTED_OF = "more_rejected_of"
MORE_CHOSEN_SEGMENT = "more_chosen_segment"

T = TypeVar("T")


def pair_rows(chosen: Sequence[T], rejected: Sequence[T]) -> list[T]:
    """Per-example chosen and rejected items in scored-row order: ``[W_1..W_B, L_1..L_B]``."""
    return [*chosen, *rejected]


def cat_pair_rows(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """Per-example chosen and rejected values, ``(B, ...)`` each -> ``(2B, ...)`` in scored-row order."""
    return torch.cat(pair_rows([chosen], [rejected]))


def for_both_rows(values: T) -> T:
    """What the chosen and the rejected row of each example share (a tensor or a sequence whose items
    follow the examples: rows, images, image tokens) repeated for the 2B scored rows, in their order."""
    if isinstance(values, torch.Tensor):
        return cat_pair_rows(values, values)
    return type(values)(pair_rows(values, values))


def stack_pair_rows(per_pair: torch.Tensor) -> torch.Tensor:
    """``(B, 2, ...)`` with ``[:, 0]`` chosen and ``[:, 1]`` rejected -> ``(2B, ...)`` in scored-row order."""
    return per_pair.transpose(0, 1).reshape(-1, *per_pair.shape[2:])


def split_pairs(rows: Sequence[T] | torch.Tensor, num: int) -> tuple:
    """Scored rows ``[W_1..W_B, L_1..L_B]`` (tensor or list) -> ``(chosen rows, rejected rows)``."""
    return rows[:num], rows[num : 2 * num]
