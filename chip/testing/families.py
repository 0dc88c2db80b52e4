"""The other families of transformers' image-text-to-text mapping: what `chip.testing.shrink` needs per family.

Per family: its special tokens, how the chat template writes an image, its stock processor
(`chip.testing.family_processors`) and the config values that differ from the shrunk defaults.
Families whose stock processor holds a video processor (or whose image processor only exists in
its torchvision version) need torchvision to be built: :data:`NEEDS_TORCHVISION`;
:func:`missing_packages` lists what a family still lacks on this machine.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from transformers import PreTrainedTokenizerFast, ProcessorMixin

from chip.testing.family_processors import (
    COHERE_IMAGE_TOKENS,
    GEMMA_TOKENS,
    IDEFICS_TOKENS,
    INTERNVL_TOKENS,
    QWEN3_IDS,
    QWEN3_TOKENS,
    QWEN3_VISION,
    aya_processor,
    clip_llava_processor,
    cohere2_vision_processor,
    gemma3_processor,
    gemma4_processor,
    glm4v_processor,
    idefics2_processor,
    internvl_processor,
    lfm2_vl_processor,
    llama4_processor,
    llava_onevision_processor,
    mllama_processor,
    paligemma_processor,
    pixtral_processor,
    qwen3_processor,
    qwen3_text,
    smolvlm_processor,
)
from chip.testing.tiny_tokenizer import LLAVA_TOKENS, TokenSpec


@dataclass(frozen=True)
class Family:
    """How to build one family: tokens, template placeholder, processor and config overrides."""

    tokens: TokenSpec
    image_text: str  # what the chat template writes for one image
    processor: Callable[[PreTrainedTokenizerFast, str], ProcessorMixin]  # (tokenizer, template)
    token_ids: dict[str, str] = field(default_factory=dict)  # config attribute -> special token
    config: dict[str, Any] = field(default_factory=dict)  # top-level config overrides
    text: dict[str, Any] = field(default_factory=dict)  # text config overrides after shrinking
    vision: dict[str, Any] = field(default_factory=dict)  # vision config overrides after shrinking
    template_bos: bool = False  # the template writes BOS (Gemma, Llama 3 style)
    vision_type: str | None = None  # vision config model type, where the default config has none


def _qwen3_family(**vision: Any) -> Family:
    """Qwen3-VL, Qwen3.5 and their MoE variants share tokens, placeholder, processor and M-RoPE text config."""
    return Family(
        QWEN3_TOKENS,
        "<|vision_start|><|image_pad|><|vision_end|>",
        qwen3_processor(),
        QWEN3_IDS,
        text=qwen3_text(),
        vision={**QWEN3_VISION, **vision},
    )


FAMILIES: dict[str, Family] = {
    "vipllava": Family(
        LLAVA_TOKENS,
        "<image>\n",
        clip_llava_processor,
        {"image_token_index": "<image>"},
        config={"vision_feature_layers": [-2, -1]},
        vision={"image_size": 32, "patch_size": 8},
    ),
    "llava_onevision": Family(
        TokenSpec(
            eos="<|im_end|>",
            pad="<|endoftext|>",
            image="<image>",
            extra=("<video>",),
            named=(("video_token", "<video>"),),
        ),
        "<image>\n",
        llava_onevision_processor,
        {"image_token_index": "<image>", "video_token_index": "<video>"},
        config={
            "image_grid_pinpoints": [[32, 32], [32, 64], [64, 32]],
            "vision_feature_select_strategy": "full",
        },
        vision={"image_size": 32, "patch_size": 8},
    ),
    "qwen3_vl": _qwen3_family(deepstack_visual_indexes=[0]),
    "qwen3_vl_moe": _qwen3_family(deepstack_visual_indexes=[0]),
    "qwen3_5": _qwen3_family(),
    "qwen3_5_moe": _qwen3_family(),
    "gemma3": Family(
        GEMMA_TOKENS,
        "<start_of_image>",
        gemma3_processor,
        {
            "boi_token_index": "<start_of_image>",
            "eoi_token_index": "<end_of_image>",
            "image_token_index": "<image_soft_token>",
        },
        config={"mm_tokens_per_image": 4},
        vision={"image_size": 32, "patch_size": 8},
        template_bos=True,
    ),
    "paligemma": Family(
        TokenSpec(eos="<eos>", pad="<pad>", image="<image>", bos="<bos>"),
        "",
        paligemma_processor,
        {"image_token_index": "<image>"},
        text={"final_logit_softcapping": 0.5},  # PaliGemma-2's Gemma-2 decoder caps; small, to matter here
        vision={"image_size": 32, "patch_size": 8},
    ),
    "idefics2": Family(
        IDEFICS_TOKENS,
        "<image>",
        idefics2_processor,
        {"image_token_id": "<image>"},
        vision={"image_size": 32, "patch_size": 8},
        config={
            "perceiver_config": {
                "hidden_size": 64,
                "resampler_n_latents": 4,
                "resampler_depth": 1,
                "resampler_n_heads": 2,
                "resampler_head_dim": 16,
                "num_key_value_heads": 1,
                "intermediate_size": 128,
            }
        },
    ),
    "smolvlm": Family(
        IDEFICS_TOKENS,
        "<image>",
        smolvlm_processor,
        {"image_token_id": "<image>"},
        config={"scale_factor": 2},
        vision={"image_size": 32, "patch_size": 8},
    ),
    "internvl": Family(
        INTERNVL_TOKENS,
        "<IMG_CONTEXT>",
        internvl_processor,
        {"image_token_id": "<IMG_CONTEXT>"},
        config={"downsample_ratio": 0.5},
        vision={"image_size": [32, 32], "patch_size": [8, 8]},
    ),
    "mistral3": Family(
        TokenSpec(eos="</s>", pad="<pad>", image="[IMG]", bos="<s>", extra=("[IMG_BREAK]", "[IMG_END]")),
        "[IMG]",
        pixtral_processor,
        {"image_token_index": "[IMG]"},
        config={"spatial_merge_size": 2},
        vision={"image_size": 32, "patch_size": 8},
        template_bos=True,
    ),
    "aya_vision": Family(
        TokenSpec(
            eos="<|END_OF_TURN_TOKEN|>",
            pad="<PAD>",
            image="<image>",
            bos="<BOS_TOKEN>",
            extra=COHERE_IMAGE_TOKENS + ("TILE", "TILE_GLOBAL"),
        ),
        "<image>",
        aya_processor,
        {"image_token_index": "<|IMG_PATCH|>"},
        config={"downsample_factor": 2},
        vision={"image_size": 32, "patch_size": 16},
        template_bos=True,
    ),
    "mllama": Family(
        TokenSpec(
            eos="<|eot_id|>", pad="<|finetune_right_pad_id|>", image="<|image|>", bos="<|begin_of_text|>"
        ),
        "<|image|>",
        mllama_processor,
        {"image_token_index": "<|image|>"},
        text={"cross_attention_layers": [1]},
        vision={
            "image_size": 32,
            "patch_size": 8,
            "max_num_tiles": 2,
            "intermediate_layers_indices": [0],
            "num_global_layers": 1,
            "vision_output_dim": 64,
            "supported_aspect_ratios": [[1, 1], [1, 2], [2, 1]],
        },
        template_bos=True,
    ),
    "llama4": Family(
        TokenSpec(
            eos="<|eot|>",
            pad="<|finetune_right_pad|>",
            image="<|image|>",
            bos="<|begin_of_text|>",
            extra=(
                "<|image_start|>",
                "<|image_end|>",
                "<|patch|>",
                "<|tile_x_separator|>",
                "<|tile_y_separator|>",
            ),
        ),
        "<|image|>",
        llama4_processor,
        {
            "boi_token_index": "<|image_start|>",
            "eoi_token_index": "<|image_end|>",
            "image_token_index": "<|patch|>",
        },
        text={"interleave_moe_layer_step": 1, "no_rope_layers": [1, 1], "moe_layers": [1]},
        vision={
            "image_size": 32,
            "patch_size": 8,
            "pixel_shuffle_ratio": 0.5,
            "projector_input_dim": 64,
            "intermediate_size": 128,
            "projector_output_dim": 64,
            "vision_output_dim": 64,
        },
        template_bos=True,
    ),
    "glm4v": Family(
        TokenSpec(
            eos="<|endoftext|>",
            pad="<|pad|>",
            image="<|image|>",
            extra=(
                "<|begin_of_image|>",
                "<|end_of_image|>",
                "<|video|>",
                "<|begin_of_video|>",
                "<|end_of_video|>",
            ),
            named=(("video_token", "<|video|>"),),
        ),
        "<|begin_of_image|><|image|><|end_of_image|>",
        glm4v_processor,
        {
            "image_token_id": "<|image|>",
            "video_token_id": "<|video|>",
            "image_start_token_id": "<|begin_of_image|>",
            "image_end_token_id": "<|end_of_image|>",
            "video_start_token_id": "<|begin_of_video|>",
            "video_end_token_id": "<|end_of_video|>",
        },
        text={
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 10000.0,
                "mrope_section": [2, 1, 1],
                "partial_rotary_factor": 0.5,
            }
        },
        vision={"image_size": 32, "patch_size": 8, "spatial_merge_size": 2, "temporal_patch_size": 2},
    ),
    "lfm2_vl": Family(
        TokenSpec(
            eos="<|im_end|>",
            pad="<|pad|>",
            image="<image>",
            bos="<|startoftext|>",
            extra=(
                "<|image_start|>",
                "<|image_end|>",
                "<|img_thumbnail|>",
                *(f"<|img_row_{r}_col_{c}|>" for r in range(1, 4) for c in range(1, 4)),
            ),
        ),
        "<image>",
        lfm2_vl_processor,
        {"image_token_id": "<image>"},
        config={"projector_hidden_size": 64, "downsample_factor": 2},
        text={"layer_types": ["conv", "full_attention"], "full_attn_idxs": [1]},
        vision={"patch_size": 8, "num_patches": 16},
    ),
    "cohere2_vision": Family(
        TokenSpec(
            eos="<|END_OF_TURN_TOKEN|>",
            pad="<PAD>",
            image="<|IMG_PATCH|>",
            bos="<BOS_TOKEN>",
            extra=COHERE_IMAGE_TOKENS,
            named=(
                ("boi_token", "<|START_OF_IMG|>"),
                ("eoi_token", "<|END_OF_IMG|>"),
                ("img_line_break_token", "<|IMG_LINE_BREAK|>"),
            ),
        ),
        "<|IMG_PATCH|>",
        cohere2_vision_processor,
        {"image_token_id": "<|IMG_PATCH|>"},
        config={"downsample_factor": 2, "alignment_intermediate_size": 64},
        vision={"image_size": 32, "patch_size": 8},
        template_bos=True,
    ),
    "gemma4": Family(
        TokenSpec(
            eos="<turn|>",
            pad="<pad>",
            image="<|image|>",
            bos="<bos>",
            extra=("<|image>", "<image|>", "<|audio|>", "<|audio>", "<audio|>", "<|video|>"),
            named=(
                ("boi_token", "<|image>"),
                ("eoi_token", "<image|>"),
                ("audio_token", "<|audio|>"),
                ("boa_token", "<|audio>"),
                ("eoa_token", "<audio|>"),
                ("video_token", "<|video|>"),
            ),
        ),
        "<|image|>",
        gemma4_processor,
        {
            "boi_token_id": "<|image>",
            "eoi_token_id": "<image|>",
            "image_token_id": "<|image|>",
            "audio_token_id": "<|audio|>",
            "boa_token_id": "<|audio>",
            "eoa_token_index": "<audio|>",
            "video_token_id": "<|video|>",
        },
        config={"audio_config": None},
        text={"final_logit_softcapping": 0.5},  # released checkpoints cap at 30; small, to matter here
        vision={"patch_size": 8, "pooling_kernel_size": 2, "position_embedding_size": 64},
        template_bos=True,
        vision_type="gemma4_vision",
    ),
}

FAMILIES["glm4v_moe"] = FAMILIES["glm4v"]

# Families whose stock processor cannot be built without torchvision (a video processor, or an
# image processor that only exists in its torchvision version).
NEEDS_TORCHVISION = frozenset(
    {
        "llava_onevision",
        "qwen3_vl",
        "qwen3_vl_moe",
        "qwen3_5",
        "qwen3_5_moe",
        "smolvlm",
        "internvl",
        "llama4",
        "glm4v",
        "glm4v_moe",
        "lfm2_vl",
        "cohere2_vision",
        "gemma4",
        "mistral3",
    }
)
# Other packages a family's stock processor imports (SmolVLM writes tile positions as words).
NEEDS_PACKAGES: dict[str, tuple[str, ...]] = {"smolvlm": ("num2words",)}


def missing_packages(family: str) -> list[str]:
    """The packages building ``family``'s tiny model needs that are not installed here."""
    needed = (*(("torchvision",) if family in NEEDS_TORCHVISION else ()), *NEEDS_PACKAGES.get(family, ()))
    return [name for name in needed if importlib.util.find_spec(name) is None]
