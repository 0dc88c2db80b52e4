"""Which way a model is scored: the logits route, whether a pair may share one sequence, and the
layouts a batch is tried with (the one asked for first, then the plainer fallbacks)."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from functools import cache

import torch
from peft import PeftModel
from torch import nn
from transformers import modeling_utils

from chip.modeling.images_once import images_once_allowed
from chip.modeling.layout import LayoutSettings, Route
from chip.modeling.pair_attention import NAME as PAIR_SDPA
from chip.modeling.pair_attention import decoder_config
from chip.modeling.pairs import is_pair_batch
from chip.modeling.quirks import quirks_for
from chip.modeling.wrappers import core_model, is_fsdp2, outer_peft_or_model


def can_share_prefix(model: nn.Module) -> bool:
    """Whether ``model`` can score a pair batch as one sequence per pair (block mask, explicit positions).

    Needs a family marked ``prefix_sharing`` in the quirk table (decoder-only text models that
    take a ready 4D mask and position ids), eager or SDPA attention (flash kernels take no
    arbitrary mask), no sliding-window layers (a ready mask would bypass the window), and no
    prompt-learning PEFT (its virtual tokens would shift every position).
    """
    outer = outer_peft_or_model(model)
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


def can_pack(model: nn.Module) -> bool:
    """Whether ``model`` can run a batch's rows back to back without padding: what
    :func:`can_share_prefix` needs (ready masks and positions), on SDPA attention, which
    `chip.modeling.pair_attention` splits per sequence."""
    attention = decoder_config(core_model(model))._attn_implementation
    return can_share_prefix(model) and attention in ("sdpa", PAIR_SDPA)


def choose_route(model: nn.Module) -> Route:
    """``"trunk"`` for an unwrapped model whose family names its trunk, else :func:`own_forward_route`."""
    core = core_model(model)
    lora_style_peft = isinstance(model, PeftModel) and not model.active_peft_config.is_prompt_learning
    # FSDP2 shards in place: the root may be the PEFT wrapper (LoRA) or the model itself
    wrapped = (model is not core and not lora_style_peft) or is_fsdp2(core) or is_fsdp2(model)
    trunk_name = quirks_for(core.config).trunk
    trunk = getattr(core, trunk_name, None) if trunk_name else None
    if not wrapped and isinstance(trunk, nn.Module) and core.get_output_embeddings() is not None:
        return "trunk"
    return own_forward_route(model)


def own_forward_route(model: nn.Module) -> Route:
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
    except (TypeError, IndexError, ValueError, RuntimeError):  # a release that takes no (B, R) index
        return False
    return kept.shape == (2, 1, 1) and kept.flatten().tolist() == [0.0, 5.0]


@dataclass(frozen=True)
class Layout:
    """How one batch is scored: the logits route, a shared prefix, image features computed once,
    rows packed without padding."""

    route: Route
    shared_prefix: bool
    images_once: bool
    padding_free: bool = False

    def describe(self) -> str:
        parts = [f"the {self.route} route"]
        parts += ["a shared prefix"] if self.shared_prefix else []
        parts += ["images encoded once"] if self.images_once else []
        parts += ["rows packed without padding"] if self.padding_free else []
        return " with ".join([parts[0], " and ".join(parts[1:])]) if len(parts) > 1 else parts[0]


def candidate_layouts(model: nn.Module, batch: dict, settings: LayoutSettings) -> list[Layout]:
    """The layout ``settings`` ask for, as far as ``model`` allows it, then (for ``route="auto"``)
    the plainer fallbacks, without repeats."""
    route = choose_route(model) if settings.route == "auto" else settings.route
    pairs = is_pair_batch(batch)
    shared = pairs and settings.share_prefix and can_share_prefix(model)
    once = (
        pairs
        and not shared
        and settings.encode_images_once
        and route == "trunk"
        and images_once_allowed(model)
    )
    layouts = [Layout(route, shared, once, settings.padding_free and can_pack(model))]
    if settings.route == "auto":
        layouts += [
            Layout(route, shared, once),
            Layout(own_forward_route(model), False, False),
            Layout("full", False, False),
        ]
    return list(dict.fromkeys(layouts))
