"""Per-family quirks of vision-language models, in one table keyed by ``config.model_type``.

Everything that differs between model families and matters to chip lives here, so supporting a
new family means adding one row, not another ``elif`` in the trainer:

- where the decoder trunk sits (the module that returns ``last_hidden_state`` without the LM head),
  and what the family's own ``forward`` does to the logits after the LM head (Gemma-2's
  soft-capping, Granite's and Cohere's scaling), which chip must repeat when it applies the head,
- which faster layouts are safe: a chosen/rejected pair sharing one prompt in one sequence
  (``prefix_sharing``), each example's image features computed once for both rows
  (``images_once``); every flag here is earned by ``tests/families/test_families.py``, which
  compares each layout with a plain ``model(**inputs)`` forward on a tiny model of the family,
- which processor outputs hold one value per prompt token and how a response token continues them
  (``token_keys``),
- the module names of the vision encoder (frozen by ``freeze_vision_tower``) and of the projector
  (trained, but no LoRA target),
- which processor class can stand in when the stock one needs torchvision only for its video part.

A family not in the table gets :data:`DEFAULT_QUIRKS`: the model's own ``forward`` (so any logit
transform it applies is kept), no prefix sharing, images encoded once per row, and the vision and
projector names most families use. :func:`chip.modeling.response_logps` logs one warning naming
what that turned off.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cache

import torch
from transformers import PretrainedConfig

LogitsTransform = Callable[[torch.Tensor, PretrainedConfig], torch.Tensor]


@dataclass(frozen=True)
class TokenKey:
    """A processor output with one value per prompt token (dim 0 of one example's tensor).

    ``response``: the value a response token gets, or ``None`` to repeat the prompt's last value
    (Mllama's ``cross_attention_mask``: every token after an image attends to it, as the processor
    marks it for a prompt that already holds the response). Padding always gets 0.
    """

    name: str
    response: int | None = 0


# Qwen-VL's and GLM-4V's M-RoPE positions need `mm_token_type_ids`; Gemma-3's bidirectional image
# attention needs `token_type_ids` (1 = image, so responses are 0 = text).
DEFAULT_TOKEN_KEYS = (TokenKey("mm_token_type_ids"), TokenKey("token_type_ids"))

# Vision encoders and projectors under the names most families use (LLaVA layout).
# Audio encoders count as vision here: chip never feeds them, so they are frozen and no LoRA target.
VISION_MODULES = ("vision_tower", "vision_model", "visual", "vision_encoder", "image_encoder", "audio_tower")
PROJECTOR_MODULES = (
    "multi_modal_projector",
    "connector",
    "visual.merger",
    "visual.deepstack_merger_list",
    "embed_audio",
)


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

    ``trunk``: attribute of the ``*ForConditionalGeneration`` model holding the multimodal trunk
    (returns ``last_hidden_state``), or ``None`` where chip must go through the model's ``forward``.
    ``pixel_key``: processor output holding the normalised pixels (where corruption noise goes).
    ``logits_transform``: what the family's ``forward`` applies after the LM head, or ``None``.
    ``image_only_processor``: name of a processor class (in :mod:`chip.modeling.processors`) that
    drops the torchvision-only video part of the stock processor.
    ``prefix_sharing``: the trunk passes a ready 4D attention mask and ``position_ids`` to a plain
    causal decoder unchanged, so a chosen/rejected pair can share one prompt in one sequence
    (:mod:`chip.modeling.pairs`). A family whose mask encodes more (Gemma-3's bidirectional image
    attention, Mllama's cross-attention) would silently lose it.
    ``images_once``: the trunk takes precomputed image features (``mm_encoder_outputs``) in the
    form ``get_image_features`` returns them, so two rows of one example share one vision pass.
    ``mrope``: positions come from the trunk's ``get_rope_index`` (Qwen-VL's 3D M-RoPE).
    ``token_keys``: the per-token processor outputs (see :class:`TokenKey`).
    ``vision_modules`` / ``projector_modules``: module names (a dotted suffix of a module's path) of
    the vision encoder and of the projector between it and the language model.
    ``known``: the family is in the table (its layouts were tested).
    """

    trunk: str | None = "model"
    pixel_key: str = "pixel_values"
    logits_transform: LogitsTransform | None = None
    image_only_processor: str | None = None
    prefix_sharing: bool = False
    images_once: bool = False
    mrope: bool = False
    token_keys: tuple[TokenKey, ...] = DEFAULT_TOKEN_KEYS
    vision_modules: tuple[str, ...] = VISION_MODULES
    projector_modules: tuple[str, ...] = PROJECTOR_MODULES
    known: bool = True
    notes: str = field(default="", compare=False)


LLAVA_LIKE = ModelQuirks(prefix_sharing=True, images_once=True)
QWEN_VL = ModelQuirks(prefix_sharing=True, images_once=True, mrope=True)

# Each row mirrors the family's `forward` in transformers 5.x. Gemma-3's multimodal model does not
# soft-cap (Gemma 3 replaced capping by QK-norm); its text-only model keeps the option, as Gemma-2
# and PaliGemma-2 (a Gemma-2 decoder) do. The Aya-Vision and Cohere2-Vision forwards do not apply
# their Cohere decoder's `logit_scale`.
QUIRKS: dict[str, ModelQuirks] = {
    "llava": LLAVA_LIKE,
    "llava_next": LLAVA_LIKE,
    "llava_onevision": LLAVA_LIKE,
    "vipllava": LLAVA_LIKE,
    "mistral3": LLAVA_LIKE,
    # Cohere-2 decoders interleave sliding-window layers: no shared prefix.
    "aya_vision": replace(LLAVA_LIKE, prefix_sharing=False),
    "internvl": LLAVA_LIKE,
    "cohere2_vision": replace(LLAVA_LIKE, prefix_sharing=False),
    # LFM2 interleaves short causal convolutions, which a block mask cannot separate.
    "lfm2_vl": replace(LLAVA_LIKE, prefix_sharing=False),
    "idefics2": LLAVA_LIKE,
    "idefics3": LLAVA_LIKE,
    "smolvlm": LLAVA_LIKE,
    "qwen2_vl": replace(QWEN_VL, image_only_processor="Qwen2VLImageOnlyProcessor"),
    "qwen2_5_vl": replace(QWEN_VL, image_only_processor="Qwen2_5_VLImageOnlyProcessor"),
    "qwen3_vl": QWEN_VL,
    "qwen3_vl_moe": QWEN_VL,
    # Qwen3.5 mixes linear-attention (Gated DeltaNet) layers in, which take no attention mask.
    "qwen3_5": replace(QWEN_VL, prefix_sharing=False),
    "qwen3_5_moe": replace(QWEN_VL, prefix_sharing=False),
    "glm4v": QWEN_VL,
    "glm4v_moe": QWEN_VL,
    "gemma3": ModelQuirks(images_once=True),
    # Gemma-4's multimodal forward soft-caps with its text config's cap (30 in released checkpoints).
    "gemma4": ModelQuirks(
        logits_transform=_softcap("text"),
        images_once=True,
        projector_modules=(*PROJECTOR_MODULES, "embed_vision"),
    ),
    # PaliGemma's prefix (image + prompt, token type 0) attends bidirectionally; the response is
    # its causal suffix (token type 1).
    "paligemma": ModelQuirks(
        logits_transform=_softcap("text"),
        images_once=True,
        token_keys=(TokenKey("token_type_ids", response=1),),
    ),
    # Mllama's trunk takes no precomputed image features; text tokens cross-attend to the image.
    "mllama": ModelQuirks(token_keys=(TokenKey("cross_attention_mask", response=None),)),
    # Llama-4's forward reads `outputs.image_outputs` from its language model's output, which has
    # none, in transformers 5.24: every call fails, so chip reports it in one line.
    "llama4": ModelQuirks(trunk=None),
    "gemma3_text": ModelQuirks(logits_transform=_softcap("config")),
    "gemma2": ModelQuirks(logits_transform=_softcap("config")),
    "granite": ModelQuirks(logits_transform=_divide_by("logits_scaling")),
    "granite_docling": ModelQuirks(logits_transform=_divide_by("logits_scaling")),
    "cohere": ModelQuirks(logits_transform=_multiply_by("logit_scale")),
    "cohere2": ModelQuirks(logits_transform=_multiply_by("logit_scale")),
}

DEFAULT_QUIRKS = ModelQuirks(trunk=None, known=False)

# Every per-token key any family declares: never an image input, whatever the family.
ALL_TOKEN_KEYS = tuple(
    dict.fromkeys(key.name for row in (*QUIRKS.values(), DEFAULT_QUIRKS) for key in row.token_keys)
)


def quirks_for(config: PretrainedConfig) -> ModelQuirks:
    """The quirks row of ``config.model_type``, or the defaults for a family not in the table."""
    return QUIRKS.get(getattr(config, "model_type", ""), DEFAULT_QUIRKS)


@cache  # called per module of a model, every training step (`chip.modeling.frozen_vision`)
def names_pattern(names: tuple[str, ...]) -> re.Pattern:
    """Matches a parameter or module path holding one of ``names`` (dotted suffixes) as components."""
    return re.compile(r"(^|\.)(" + "|".join(re.escape(name) for name in names) + r")(\.|$)")


def is_projector_parameter(name: str, quirks: ModelQuirks = DEFAULT_QUIRKS) -> bool:
    """Whether a parameter (or module) belongs to the projector between vision encoder and LM."""
    return bool(names_pattern(quirks.projector_modules).search(name))


def is_vision_parameter(name: str, quirks: ModelQuirks = DEFAULT_QUIRKS) -> bool:
    """Whether a parameter (or module) belongs to the vision encoder (projectors excluded).

    The names come from the family's row of the quirks table (``vision_modules``,
    ``projector_modules``); the defaults cover the LLaVA, Qwen-VL and Idefics layouts.
    """
    return bool(names_pattern(quirks.vision_modules).search(name)) and not is_projector_parameter(
        name, quirks
    )
