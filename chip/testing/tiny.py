"""Tiny, randomly initialised vision-language models for tests and benchmarks, built offline.

    from chip.testing import build_tiny_model
    path = build_tiny_model("qwen2_vl", tmp_path / "qwen")            # ~0.15 M parameters, 32 px
    path = build_tiny_model("llava", out, num_image_tokens=576, vocab_size=32_000)  # LLaVA-1.5 shapes

Each folder holds what a hub checkpoint holds (``config.json``, weights, tokenizer, processor, chat
template), so users load it with ``AutoModelForImageTextToText.from_pretrained`` and
``AutoProcessor.from_pretrained`` and exercise the real model classes and processors: image-token
expansion, LLaVA-NeXT tiling, Qwen-VL's flat patches and M-RoPE, Idefics3 image splitting. Only the
sizes are small. The tokenizer is byte-level (every text encodes, one token per byte) plus the
family's special tokens; the chat templates follow each family's turn layout.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForImageTextToText,
    CLIPVisionConfig,
    Idefics3Config,
    Idefics3Processor,
    LlamaConfig,
    LlavaConfig,
    LlavaNextConfig,
    LlavaNextProcessor,
    LlavaProcessor,
    PretrainedConfig,
    PreTrainedTokenizerFast,
    ProcessorMixin,
    Qwen2_5_VLConfig,
    Qwen2VLConfig,
)
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
from transformers.models.idefics3.configuration_idefics3 import Idefics3VisionConfig
from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil
from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from chip.modeling.processors import Qwen2_5_VLImageOnlyProcessor, Qwen2VLImageOnlyProcessor
from chip.testing.families import FAMILIES as SHRUNK_FAMILIES
from chip.testing.families import build_family, missing_packages
from chip.testing.tiny_tokenizer import (
    IDEFICS3_TEMPLATE,
    IDEFICS3_TOKENS,
    LLAVA_TEMPLATE,
    LLAVA_TOKENS,
    QWEN_TEMPLATE,
    QWEN_TOKENS,
    TokenSpec,
    byte_level_tokenizer,
)

FAMILIES = ("llava", "llava_next", "qwen2_vl", "qwen2_5_vl", "idefics3")
# Every family chip builds: the five above (hand-sized, every TinySize override) and the families
# of `chip.testing.families` (shrunk stock configs; only `vocab_size` can be overridden).
ALL_FAMILIES = FAMILIES + tuple(SHRUNK_FAMILIES)


@dataclass(frozen=True)
class TinySize:
    """Model dimensions; every field can be overridden through ``build_tiny_model(**overrides)``."""

    hidden_size: int = 64  # language model width
    intermediate_size: int = 128  # language model MLP width
    num_layers: int = 2  # language model decoder layers
    num_heads: int = 4  # attention heads (head dim 16)
    num_kv_heads: int = 2  # grouped-query KV heads
    vocab_size: int | None = None  # model vocabulary; None = the tokenizer's (~300); larger pads the LM head
    vision_hidden_size: int = 32  # vision tower width
    vision_intermediate_size: int | None = None  # vision tower MLP width; None = 2 x vision_hidden_size
    vision_layers: int = 2  # vision tower layers
    vision_heads: int = 2  # vision tower heads
    patch_size: int = 8  # vision patch side in pixels
    image_size: int = 32  # side of one image (tile) as the vision tower sees it
    num_image_tokens: int | None = None  # image tokens per image (tile); sets image_size when given
    max_position_embeddings: int = 4096  # longest sequence the language model accepts
    # LLaVA-NeXT's "anyres" tilings, (rows, columns) of image_size tiles; LLaVA-NeXT-7B's own are
    # ((1, 2), (2, 1), (2, 2), (1, 3), (3, 1)).
    image_grid_pinpoints: tuple[tuple[int, int], ...] = ((1, 2), (2, 1), (2, 2))
    # Qwen-VL: the pixel range an image is resized into, keeping its aspect ratio (Qwen's
    # min_pixels / max_pixels); None = image_size², so every square image is image_size x image_size.
    min_pixels: int | None = None
    max_pixels: int | None = None


def _llama(size: TinySize, tokenizer: PreTrainedTokenizerFast, vocab_size: int) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=size.hidden_size,
        intermediate_size=size.intermediate_size,
        num_hidden_layers=size.num_layers,
        num_attention_heads=size.num_heads,
        num_key_value_heads=size.num_kv_heads,
        max_position_embeddings=size.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _vision_mlp(size: TinySize) -> int:
    return size.vision_intermediate_size or 2 * size.vision_hidden_size


def _clip(size: TinySize) -> CLIPVisionConfig:
    return CLIPVisionConfig(
        hidden_size=size.vision_hidden_size,
        intermediate_size=_vision_mlp(size),
        num_hidden_layers=size.vision_layers,
        num_attention_heads=size.vision_heads,
        image_size=size.image_size,
        patch_size=size.patch_size,
    )


def _build_llava(
    size: TinySize, tok: PreTrainedTokenizerFast, vocab: int
) -> tuple[ProcessorMixin, PretrainedConfig]:
    side = size.image_size
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": side}, crop_size={"height": side, "width": side}
    )
    # CLIP keeps a CLS token the "default" strategy drops: without the +1 the processor would
    # emit one image token too few (transformers 5 defaults num_additional_image_tokens to 0).
    processor = LlavaProcessor(
        image_processor,
        tok,
        patch_size=size.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_TEMPLATE,
    )
    config = LlavaConfig(
        vision_config=_clip(size),
        text_config=_llama(size, tok, vocab),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-1,  # the default -2 would drop the last layer of a 2-layer tower
        image_seq_length=(side // size.patch_size) ** 2,
    )
    return processor, config


def _build_llava_next(
    size: TinySize, tok: PreTrainedTokenizerFast, vocab: int
) -> tuple[ProcessorMixin, PretrainedConfig]:
    side = size.image_size
    pinpoints = [[rows * side, cols * side] for rows, cols in size.image_grid_pinpoints]  # [height, width]
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": side},
        crop_size={"height": side, "width": side},
        image_grid_pinpoints=pinpoints,
    )
    processor = LlavaNextProcessor(
        image_processor,
        tok,
        patch_size=size.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_TEMPLATE,
    )
    config = LlavaNextConfig(
        vision_config=_clip(size),
        text_config=_llama(size, tok, vocab),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-1,
        image_grid_pinpoints=pinpoints,
        image_seq_length=(side // size.patch_size) ** 2,
    )
    return processor, config


def _qwen_text(size: TinySize, tok: PreTrainedTokenizerFast, vocab: int) -> dict[str, Any]:
    # M-RoPE splits each head's rotary half into (temporal, height, width) sections.
    half = size.hidden_size // size.num_heads // 2
    spatial = (half - half // 4) // 2
    return dict(
        vocab_size=vocab,
        hidden_size=size.hidden_size,
        intermediate_size=size.intermediate_size,
        num_hidden_layers=size.num_layers,
        num_attention_heads=size.num_heads,
        num_key_value_heads=size.num_kv_heads,
        max_position_embeddings=size.max_position_embeddings,
        bos_token_id=None,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": 10000.0,
            "mrope_section": [half - 2 * spatial, spatial, spatial],
        },
    )


def _qwen_processor(
    size: TinySize, tok: PreTrainedTokenizerFast, processor_class: type[ProcessorMixin]
) -> ProcessorMixin:
    # By default a fixed pixel budget: square images become exactly image_size x image_size.
    pixels = size.image_size**2
    image_processor = Qwen2VLImageProcessorPil(
        size={"shortest_edge": size.min_pixels or pixels, "longest_edge": size.max_pixels or pixels},
        patch_size=size.patch_size,
        merge_size=2,
        temporal_patch_size=2,
    )
    return processor_class(image_processor, tok, chat_template=QWEN_TEMPLATE)


def _qwen_ids(tok: PreTrainedTokenizerFast) -> dict[str, int]:
    names = {
        "image_token_id": "<|image_pad|>",
        "video_token_id": "<|video_pad|>",
        "vision_start_token_id": "<|vision_start|>",
        "vision_end_token_id": "<|vision_end|>",
    }
    return {key: tok.convert_tokens_to_ids(token) for key, token in names.items()}


def _build_qwen2_vl(
    size: TinySize, tok: PreTrainedTokenizerFast, vocab: int
) -> tuple[ProcessorMixin, PretrainedConfig]:
    vision = dict(
        depth=size.vision_layers,
        embed_dim=size.vision_hidden_size,
        hidden_size=size.hidden_size,
        mlp_ratio=_vision_mlp(size) // size.vision_hidden_size,  # an int in Qwen2-VL's config
        num_heads=size.vision_heads,
        patch_size=size.patch_size,
        spatial_merge_size=2,
        temporal_patch_size=2,
    )
    config = Qwen2VLConfig(text_config=_qwen_text(size, tok, vocab), vision_config=vision, **_qwen_ids(tok))
    return _qwen_processor(size, tok, Qwen2VLImageOnlyProcessor), config


def _build_qwen2_5_vl(
    size: TinySize, tok: PreTrainedTokenizerFast, vocab: int
) -> tuple[ProcessorMixin, PretrainedConfig]:
    vision = dict(
        depth=size.vision_layers,
        hidden_size=size.vision_hidden_size,
        intermediate_size=_vision_mlp(size),
        num_heads=size.vision_heads,
        out_hidden_size=size.hidden_size,
        patch_size=size.patch_size,
        spatial_merge_size=2,
        temporal_patch_size=2,
        window_size=2 * size.patch_size * 2,  # windows of 2x2 merged tokens
        fullatt_block_indexes=[size.vision_layers - 1],
    )
    config = Qwen2_5_VLConfig(
        text_config=_qwen_text(size, tok, vocab), vision_config=vision, **_qwen_ids(tok)
    )
    return _qwen_processor(size, tok, Qwen2_5_VLImageOnlyProcessor), config


def _build_idefics3(
    size: TinySize, tok: PreTrainedTokenizerFast, vocab: int
) -> tuple[ProcessorMixin, PretrainedConfig]:
    side, scale = size.image_size, 2
    # Images are resized to at most 2x2 tiles of image_size, each encoded with a global view.
    image_processor = Idefics3ImageProcessorPil(
        size={"longest_edge": 2 * side}, max_image_size={"longest_edge": side}, do_image_splitting=True
    )
    processor = Idefics3Processor(
        image_processor,
        tok,
        image_seq_len=(side // size.patch_size) ** 2 // scale**2,
        chat_template=IDEFICS3_TEMPLATE,
    )
    vision = Idefics3VisionConfig(
        hidden_size=size.vision_hidden_size,
        intermediate_size=_vision_mlp(size),
        num_hidden_layers=size.vision_layers,
        num_attention_heads=size.vision_heads,
        image_size=side,
        patch_size=size.patch_size,
    )
    config = Idefics3Config(
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        vision_config=vision,
        text_config=_llama(size, tok, vocab),
        scale_factor=scale,
    )
    return processor, config


@dataclass(frozen=True)
class _Family:
    tokens: TokenSpec
    build: Callable[[TinySize, PreTrainedTokenizerFast, int], tuple[ProcessorMixin, PretrainedConfig]]
    tokens_per_side_divisor: int  # image tokens per image side = (image_size / patch_size) / divisor


_FAMILIES: dict[str, _Family] = {
    "llava": _Family(LLAVA_TOKENS, _build_llava, 1),
    "llava_next": _Family(LLAVA_TOKENS, _build_llava_next, 1),
    "qwen2_vl": _Family(QWEN_TOKENS, _build_qwen2_vl, 2),
    "qwen2_5_vl": _Family(QWEN_TOKENS, _build_qwen2_5_vl, 2),
    "idefics3": _Family(IDEFICS3_TOKENS, _build_idefics3, 2),
}


def _resolve_size(family: _Family, overrides: dict[str, Any]) -> TinySize:
    known = {f.name for f in fields(TinySize)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown size override(s) {unknown}; valid: {sorted(known)}")
    size = TinySize(**overrides)
    if size.num_image_tokens is not None:
        per_side = math.isqrt(size.num_image_tokens)
        if per_side**2 != size.num_image_tokens:
            raise ValueError(
                f"num_image_tokens must be a perfect square (a square grid), got {size.num_image_tokens}"
            )
        image_size = per_side * family.tokens_per_side_divisor * size.patch_size
        if "image_size" in overrides and overrides["image_size"] != image_size:
            raise ValueError(
                f"image_size={overrides['image_size']} contradicts num_image_tokens (needs {image_size})"
            )
        size = TinySize(**{**overrides, "image_size": image_size})
    if size.image_size % (size.patch_size * family.tokens_per_side_divisor):
        raise ValueError(
            f"image_size {size.image_size} must be a multiple of {size.patch_size * family.tokens_per_side_divisor}"
        )
    return size


def tiny_config(family: str, **size_overrides: Any) -> tuple[ProcessorMixin, PretrainedConfig]:
    """The processor and model config :func:`build_tiny_model` would save, without any weights.

    For benchmarks that instantiate the model themselves, e.g. a 7B shape directly on a GPU in
    bf16 (``AutoModelForImageTextToText.from_config(config, dtype=...)``), where writing random
    weights to disk first would only cost time.
    """
    if family in SHRUNK_FAMILIES:
        if set(size_overrides) - {"vocab_size"}:
            raise ValueError(f"{family} takes only a vocab_size override, got {sorted(size_overrides)}")
        missing = missing_packages(family)
        if missing:
            raise ImportError(f"the stock {family} processor needs {', '.join(missing)} (pip install them)")
        return build_family(family, size_overrides.get("vocab_size"))
    if family not in _FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose one of {ALL_FAMILIES}")
    spec = _FAMILIES[family]
    size = _resolve_size(spec, size_overrides)
    tokenizer = byte_level_tokenizer(spec.tokens)
    vocab_size = size.vocab_size if size.vocab_size is not None else len(tokenizer)
    if vocab_size < len(tokenizer):
        raise ValueError(f"vocab_size {vocab_size} is smaller than the tokenizer's {len(tokenizer)} tokens")
    return spec.build(size, tokenizer, vocab_size)


def build_tiny_model(family: str, output_dir: str | Path, seed: int = 0, **size_overrides: Any) -> Path:
    """Build a randomly initialised model of ``family`` with its tokenizer and processor in ``output_dir``.

    ``size_overrides`` are :class:`TinySize` fields. ``num_image_tokens`` is per image for LLaVA-1.5
    and Qwen-VL (square images) and per tile for LLaVA-NeXT and Idefics3, whose processors tile
    larger images. Weights depend only on ``family``, the sizes and ``seed``.
    """
    processor, config = tiny_config(family, **size_overrides)
    tokenizer = processor.tokenizer
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config)
    generation = model.generation_config
    generation.bos_token_id = tokenizer.bos_token_id
    generation.eos_token_id = tokenizer.eos_token_id
    generation.pad_token_id = tokenizer.pad_token_id

    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    return output_dir
