"""How a run asks for its batches to be laid out: one frozen value, passed from the trainer to the scorer.

Every switch changes the cost of scoring a batch, never its numbers; which of them a given model
can honour is decided per model (`chip.modeling.routes`). A leaf module, so settings
(`chip.training.config.ChipConfig.layout_settings`) can name it without importing the model layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# Which forward produces the logits: "auto" picks per model (`chip.modeling.routes.choose_route`).
Route = Literal["auto", "trunk", "keep", "full"]


@dataclass(frozen=True)
class LayoutSettings:
    """The layout switches of `chip.modeling.logps.ResponseScorer` (``chip train`` "speed" settings)."""

    route: Route = "auto"  # "auto": the fastest route the model allows, and the first-batch fallback
    share_prefix: bool = True  # a pair as one sequence holding its image and prompt once
    encode_images_once: bool = True  # unpacked pair rows: each example's image features computed once
    chunk_size: int = 0  # LM head over this many response tokens at a time (0: all at once)
    padding_free: bool = True  # a batch's rows back to back in one sequence without padding
