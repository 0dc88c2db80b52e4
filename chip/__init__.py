"""chip: CHiP preference training for vision-language models.

The pure math (losses, segments, corruption) imports only torch and PIL; model and training
code lives in submodules imported on demand: ``from chip import ChipConfig, ChipTrainer`` loads
transformers only then.
"""

import os
from typing import Any

# Idle OpenMP threads sleep instead of spinning: a spinning thread takes a core another process needs,
# and on a shared machine made `chip train` steps 10-30x slower (docs/performance.md, "Threads").
# libgomp reads this once, when torch loads, so it is set before the first torch import.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from chip.corruption import diffusion_noise  # noqa: E402
from chip.losses import ChipLossConfig, TokenScores, chip_loss, token_kl  # noqa: E402
from chip.segments import changed_segments  # noqa: E402

__version__ = "0.1.0"

# name -> module of the training API, imported on first use (it loads transformers)
_TRAINING = {"ChipConfig": "chip.training.config", "ChipTrainer": "chip.training.trainer"}

__all__ = [
    "ChipConfig",
    "ChipLossConfig",
    "ChipTrainer",
    "TokenScores",
    "changed_segments",
    "chip_loss",
    "diffusion_noise",
    "token_kl",
    "__version__",
]


def __getattr__(name: str) -> Any:
    if name in _TRAINING:
        import importlib

        return getattr(importlib.import_module(_TRAINING[name]), name)
    raise AttributeError(f"module 'chip' has no attribute {name!r}")
