"""The methods the demo compares: DPO, each CHiP term added to DPO alone, CHiP, mDPO, CHiP with
image-anchored token weights, CHiP over several rejected captions per row, and visual-term variants.

Every method is a set of `ChipConfig` overrides (ablations are just weights), applied to the same
base model, pairs, steps, batch and seeds by `chip.demo.experiment`.
"""

from __future__ import annotations

from typing import Any

from chip.corruption import CORRUPTION_KINDS
from chip.losses import ChipLossConfig

# Loss settings per method, as `ChipConfig` overrides (ablations are just weights): each ablation
# turns on one of CHiP's terms at its `ChipLossConfig` default. Each core method gets its own
# learning rate, chosen on validation scenes from the same grid.
TERMS = ("segment_weight", "token_weight", "visual_weight")  # λ, α, μ
DPO = {name: 0.0 for name in TERMS}
METHODS: dict[str, dict[str, Any]] = {
    "dpo": DPO,
    **{
        f"dpo+{name.removesuffix('_weight')}": {**DPO, name: getattr(ChipLossConfig(), name)}
        for name in TERMS
    },
    "chip": {},  # every `chip train` default: λ = 3, α = 0.1 (TDPO2), μ = 1, diffusion noise, joint sigmoid
    # Rivals as `--method` presets: the preset fills what the demo does not set itself (its SFT weight wins).
    "mdpo": {"method": "mdpo"},
    "chip-anchored": {"method": "chip-anchored"},
    "chip-multi": {"method": "chip-multi"},  # on rows with up to 3 rejected captions (`MULTI_REJECTED`)
}
# Variants of the visual term (issue 16, item 4): (the core method whose chosen lr they reuse,
# their overrides on top of that method's).
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "dpo+visual-separate": ("dpo+visual", {"combine": "separate"}),
    "chip-separate": ("chip", {"combine": "separate"}),
    **{f"chip-{kind}": ("chip", {"corruption": kind}) for kind in CORRUPTION_KINDS if kind != "diffusion"},
    "chip-clip20": ("chip", {"max_grad_norm": 20.0}),  # the authors' gradient clipping (chip's recipe: 1)
}
QUICK_METHODS = ("dpo", "chip")
RIVALS = ("mdpo", "chip-anchored", "chip-multi")  # compared with CHiP as well as with DPO
# Methods trained on rows listing several rejected captions (the same pairs, more rejected per row).
MULTI_REJECTED = ("chip-multi",)


def method_settings(name: str) -> dict[str, Any]:
    """The `chip train` overrides of a core method or a variant."""
    if name in METHODS:
        return METHODS[name]
    parent, overrides = VARIANTS[name]
    return {**METHODS[parent], **overrides}


def tuned_as(name: str) -> str:
    """The core method whose learning-rate choice ``name`` uses (itself for a core method)."""
    return name if name in METHODS else VARIANTS[name][0]
