"""Per-family quirks of vision-language models, in one table keyed by ``config.model_type``.

Everything that differs between model families and matters to chip lives here, so supporting a
new family means adding one row, not another ``elif`` in the trainer:

- where the decoder trunk sits (the module that returns ``last_hidden_state`` without the LM head),
- what the family's own ``forward`` does to the logits after the LM head (Gemma-2's soft-capping,
  Granite's and Cohere's scaling), which chip must repeat when it applies the head itself,
- which processor class can stand in when the stock one needs torchvision only for its video part.

Families not in the table get the defaults, which fit the LLaVA-style layout most models share
(``model.model`` trunk, ``model.lm_head`` head, no logit transform).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import PretrainedConfig

LogitsTransform = Callable[[torch.Tensor, PretrainedConfig], torch.Tensor]

# Processor outputs with one value per prompt token (not per image): collate pads them along the
# sequence and gives response tokens 0 ("text"). Qwen-VL's M-RoPE positions need
# `mm_token_type_ids`; Gemma-3's bidirectional image attention needs `token_type_ids`.
TOKEN_LEVEL_KEYS = ("mm_token_type_ids", "token_type_ids")


def _softcap(attribute_owner: str) -> LogitsTransform:
    """Gemma-style final soft-capping ``cap · tanh(logits / cap)``, read from the config at call time."""

    def transform(logits: torch.Tensor, config: PretrainedConfig) -> torch.Tensor:
        owner = config.get_text_config() if attribute_owner == "text" else config
        cap = getattr(owner, "final_logit_softcapping", None)
        if cap is None:
            return logits
        return torch.tanh(logits / cap) * cap  # (..., V)

    return transform


def _divide_by(attribute: str) -> LogitsTransform:
    def transform(logits: torch.Tensor, config: PretrainedConfig) -> torch.Tensor:
        return logits / getattr(config.get_text_config(), attribute)  # (..., V)

    return transform


def _multiply_by(attribute: str) -> LogitsTransform:
    def transform(logits: torch.Tensor, config: PretrainedConfig) -> torch.Tensor:
        return logits * getattr(config.get_text_config(), attribute)  # (..., V)

    return transform


@dataclass(frozen=True)
class ModelQuirks:
    """What chip needs to know about one model family.

    ``trunk``: attribute of the ``*ForConditionalGeneration`` model holding the decoder trunk.
    ``pixel_key``: processor output holding the normalised pixels (where corruption noise goes).
    ``logits_transform``: what the family's ``forward`` applies after the LM head, or ``None``.
    ``image_only_processor``: name of a processor class (in :mod:`chip.modeling.processors`) that
    drops the torchvision-only video part of the stock processor.
    ``prefix_sharing``: the trunk passes a ready 4D attention mask and ``position_ids`` to a plain
    causal decoder unchanged, so a chosen/rejected pair can share one prompt in one sequence
    (:mod:`chip.modeling.pairs`). Off by default: a family whose mask encodes more (Gemma-3's
    bidirectional image attention) would silently lose it.
    ``mrope``: positions come from the trunk's ``get_rope_index`` (Qwen-VL's 3D M-RoPE).
    """

    trunk: str = "model"
    pixel_key: str = "pixel_values"
    logits_transform: LogitsTransform | None = None
    image_only_processor: str | None = None
    prefix_sharing: bool = False
    mrope: bool = False


# Each row mirrors the family's `forward` in transformers 5.x. Gemma-3's multimodal model does not
# soft-cap (Gemma 3 replaced capping by QK-norm); its text-only model keeps the option, as Gemma-2
# and PaliGemma-2 (a Gemma-2 decoder) do.
QUIRKS: dict[str, ModelQuirks] = {
    "llava": ModelQuirks(prefix_sharing=True),
    "llava_next": ModelQuirks(prefix_sharing=True),
    "idefics3": ModelQuirks(prefix_sharing=True),
    "qwen2_vl": ModelQuirks(
        image_only_processor="Qwen2VLImageOnlyProcessor", prefix_sharing=True, mrope=True
    ),
    "qwen2_5_vl": ModelQuirks(
        image_only_processor="Qwen2_5_VLImageOnlyProcessor", prefix_sharing=True, mrope=True
    ),
    "gemma3": ModelQuirks(),
    "gemma3_text": ModelQuirks(logits_transform=_softcap("config")),
    "gemma2": ModelQuirks(logits_transform=_softcap("config")),
    "paligemma": ModelQuirks(logits_transform=_softcap("text")),
    "granite": ModelQuirks(logits_transform=_divide_by("logits_scaling")),
    "granite_docling": ModelQuirks(logits_transform=_divide_by("logits_scaling")),
    "cohere": ModelQuirks(logits_transform=_multiply_by("logit_scale")),
    "cohere2": ModelQuirks(logits_transform=_multiply_by("logit_scale")),
}

DEFAULT_QUIRKS = ModelQuirks()


def quirks_for(config: PretrainedConfig) -> ModelQuirks:
    """The quirks row of ``config.model_type``, or the defaults for a family not in the table."""
    return QUIRKS.get(getattr(config, "model_type", ""), DEFAULT_QUIRKS)
