"""`python -m chip` with NaN pixels in one example's real image (POISONED), for multi-process runs.

Launched as ``accelerate launch ... tests/reliability/poisoned_chip.py train ...``: only the rank
whose batch holds POISONED gets a NaN loss; the others compute finite ones, and every rank must
still take the same decision (tests/reliability/test_nonfinite_distributed.py).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from chip.cli import main
from chip.training.collate import ChipCollator

POISONED = "ex5"


def poisoned(build: Callable[..., Any]) -> Callable[..., Any]:
    def build_poisoned(*args: Any, **kwargs: Any) -> Callable[[list], dict]:
        collator = build(*args, **kwargs)

        def collate(examples: list) -> dict:
            batch = collator(examples)
            if POISONED in batch["ids"]:
                pixels = batch["real"]["pixel_values"]  # one image per example: (B, ...) or (2B, ...)
                index, num = batch["ids"].index(POISONED), len(batch["ids"])
                pixels[[row for row in range(pixels.shape[0]) if row % num == index]] = float("nan")
            return batch

        return collate

    return build_poisoned


if __name__ == "__main__":
    ChipCollator.from_config = poisoned(ChipCollator.from_config)
    sys.exit(main())
