"""`--method` presets: every loss weight and the corrupted image of a named method (docs/method.md).

A preset fills each setting it names; a value given explicitly (flag or YAML field) overrides it.
`chip train` applies a preset while parsing (`chip.training.arguments.parse_config`); in Python,
`ChipConfig.for_method(name, **fields)` does the same.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Literal, get_args

from chip.losses import ChipLossConfig

MethodName = Literal["dpo", "chip", "mdpo", "chip-multi", "chip-anchored"]
METHOD_NAMES: tuple[str, ...] = get_args(MethodName)

# The `ChipConfig` fields outside the loss that a preset also sets: the corrupted image ṽ.
CORRUPTION_FIELDS = ("corruption", "noise_step")

_CHIP = {**asdict(ChipLossConfig()), "corruption": "diffusion", "noise_step": 500}
_NO_TERMS = {"segment_weight": 0.0, "token_weight": 0.0, "visual_weight": 0.0}

# Every loss field and the corruption, per method; each row starts from the authors' CHiP recipe.
PRESETS: dict[str, dict[str, Any]] = {
    # Rafailov et al. 2023: sigmoid DPO on summed log-probs, first rejected response only.
    "dpo": {**_CHIP, **_NO_TERMS},
    # Fu et al. 2025 (CHiP), their LLaVA recipe: λ = 3, α = 0.1 (TDPO2), μ = 1, one joint sigmoid.
    "chip": dict(_CHIP),
    # Wang et al. 2024 (mDPO, luka-group/mDPO mdpo_trainer.py): three summed sigmoids (text, image-conditional
    # on a 1-20% random crop, anchor on R(W)), each with weight 1 and β = 0.1.
    "mdpo": {**_CHIP, **_NO_TERMS, "visual_weight": 1.0, "combine": "separate", "anchor_weight": 1.0}
    | {"corruption": "crop"},
    # CHiP with every rejected response a row lists: each pairwise term averaged over them.
    "chip-multi": {**_CHIP, "max_rejected": 0},
    # CHiP with each response token weighted by how much the real image raises its reference log-prob (TPO).
    "chip-anchored": {**_CHIP, "image_anchored_weights": "reference"},
}


def preset(name: str) -> dict[str, Any]:
    """The settings of method ``name`` (a copy): every `ChipLossConfig` field plus the corruption."""
    return dict(PRESETS[name])


def preset_args(name: str, given: set[str]) -> list[str]:
    """``--field value`` arguments of the preset's settings not in ``given`` (explicit values win)."""
    args: list[str] = []
    for key, value in PRESETS[name].items():
        if key not in given:
            args += [f"--{key}", str(value).lower() if isinstance(value, bool) else str(value)]
    return args
