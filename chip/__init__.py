"""chip: CHiP preference training for vision-language models.

The pure math (losses, segments, corruption) imports only torch and PIL; model and training
code lives in submodules imported on demand.
"""

import os

# Idle OpenMP threads sleep instead of spinning: a spinning thread takes a core another process needs,
# and on a shared machine made `chip train` steps 10-30x slower (docs/performance.md, "Threads").
# libgomp reads this once, when torch loads, so it is set before the first torch import.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from chip.corruption import diffusion_noise  # noqa: E402
from chip.losses import ChipLossConfig, TokenScores, chip_loss, token_kl  # noqa: E402
from chip.segments import changed_segments  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "ChipLossConfig",
    "TokenScores",
    "changed_segments",
    "chip_loss",
    "diffusion_noise",
    "token_kl",
    "__version__",
]
