"""Which way a model is scored: the logits route and whether a pair may share one sequence."""

from __future__ import annotations

import inspect
from functools import cache
from typing import Literal

import torch
from peft import PeftModel
from torch import nn
from transformers import modeling_utils

from chip.modeling.pair_attention import NAME as PAIR_SDPA
from chip.modeling.pair_attention import decoder_config
from chip.modeling.quirks import quirks_for
from chip.modeling.wrappers import _is_fsdp2, _outer_peft_or_model, core_model

Route = Literal["auto", "trunk", "keep", "full"]


def can_share_prefix(model: nn.Module) -> bool:
    """Whether ``model`` can score a pair batch as one sequence per pair (block mask, explicit positions).

    Needs a family marked ``prefix_sharing`` in the quirk table (decoder-only text models that
    take a ready 4D mask and position ids), eager or SDPA attention (flash kernels take no
    arbitrary mask), no sliding-window layers (a ready mask would bypass the window), and no
    prompt-learning PEFT (its virtual tokens would shift every position).
    """
    outer = _outer_peft_or_model(model)
    if isinstance(outer, PeftModel) and outer.active_peft_config.is_prompt_learning:
        return False
    core = core_model(model)
    if not quirks_for(core.config).prefix_sharing:
        return False
    text = decoder_config(core)
    # A ready mask would bypass a sliding window, and linear-attention (recurrent) layers take no mask.
    other_layers = set(getattr(text, "layer_types", None) or ()) - {"full_attention"}
    sliding = getattr(text, "use_sliding_window", False) or bool(other_layers)
    return (
        quirks_for(core.config).prefix_sharing
        and text._attn_implementation in ("eager", "sdpa", PAIR_SDPA)
        and not sliding
    )


def _choose_route(model: nn.Module) -> Route:
    core = core_model(model)
    lora_style_peft = isinstance(model, PeftModel) and not model.active_peft_config.is_prompt_learning
    # FSDP2 shards in place: the root may be the PEFT wrapper (LoRA) or the model itself
    wrapped = (model is not core and not lora_style_peft) or _is_fsdp2(core) or _is_fsdp2(model)
    trunk_name = quirks_for(core.config).trunk
    trunk = getattr(core, trunk_name, None) if trunk_name else None
    if not wrapped and isinstance(trunk, nn.Module) and core.get_output_embeddings() is not None:
        return "trunk"
    return _own_forward_route(model)


def _own_forward_route(model: nn.Module) -> Route:
    """``"keep"`` where the model's ``forward`` takes a per-row ``logits_to_keep``, else ``"full"``."""
    keeps = "logits_to_keep" in inspect.signature(core_model(model).forward).parameters
    return "keep" if keeps and _slices_per_row() else "full"


@cache
def _slices_per_row() -> bool:
    """Whether this transformers' ``slice_logits_to_keep`` takes a ``(B, R)`` position index.

    Older 5.x releases index dim 1 with any tensor, which would silently mix rows; a probe is
    more reliable than a version number.
    """
    slicer = getattr(modeling_utils, "slice_logits_to_keep", None)
    if slicer is None:
        return False
    hidden = torch.arange(6.0).view(2, 3, 1)  # (B=2, T=3, H=1)
    try:
        kept = slicer(hidden, torch.tensor([[0], [2]]))
    except Exception:
        return False
    return kept.shape == (2, 1, 1) and kept.flatten().tolist() == [0.0, 5.0]
