"""chip: CHiP preference training for vision-language models.

The pure math (losses, segments, corruption) imports only torch and PIL; model and training
code lives in submodules imported on demand.
"""

from chip.corruption import diffusion_noise
from chip.losses import ChipLossConfig, TokenScores, chip_loss, token_kl
from chip.segments import changed_segments

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
