"""The five families sized by hand: LLaVA-1.5, LLaVA-NeXT, Qwen2-VL, Qwen2.5-VL and Idefics3.

Each builder takes every `TinySize` override (widths, depths, image geometry, image tokens), so
benchmarks can build real shapes (LLaVA-1.5's 576 image tokens, a 32k vocabulary); the long-running
tests (learning curves, resumption, distributed, TRL parity) use these families.
"""

from __future__ import annotations

from typing import Any

from transformers import (
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
from chip.testing.sizes import TinyFamily, TinySize, vocab_size
from chip.testing.tiny_tokenizer import (
    IDEFICS3_TEMPLATE,
    IDEFICS3_TOKENS,
    LLAVA_TEMPLATE,
    LLAVA_TOKENS,
    QWEN_TEMPLATE,
    QWEN_TOKENS,
)


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


def build_llava(size: TinySize, tok: PreTrainedTokenizerFast) -> tuple[ProcessorMixin, PretrainedConfig]:
    vocab = vocab_size(size, tok)
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


def build_llava_next(size: TinySize, tok: PreTrainedTokenizerFast) -> tuple[ProcessorMixin, PretrainedConfig]:
    vocab = vocab_size(size, tok)
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


def build_qwen2_vl(size: TinySize, tok: PreTrainedTokenizerFast) -> tuple[ProcessorMixin, PretrainedConfig]:
    vocab = vocab_size(size, tok)
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


def build_qwen2_5_vl(size: TinySize, tok: PreTrainedTokenizerFast) -> tuple[ProcessorMixin, PretrainedConfig]:
    vocab = vocab_size(size, tok)
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


def build_idefics3(size: TinySize, tok: PreTrainedTokenizerFast) -> tuple[ProcessorMixin, PretrainedConfig]:
    vocab = vocab_size(size, tok)
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


HAND_SIZED: dict[str, TinyFamily] = {
    "llava": TinyFamily(LLAVA_TOKENS, build_llava, sized=True),
    "llava_next": TinyFamily(LLAVA_TOKENS, build_llava_next, sized=True),
    "qwen2_vl": TinyFamily(QWEN_TOKENS, build_qwen2_vl, sized=True, tokens_per_side_divisor=2),
    "qwen2_5_vl": TinyFamily(QWEN_TOKENS, build_qwen2_5_vl, sized=True, tokens_per_side_divisor=2),
    "idefics3": TinyFamily(IDEFICS3_TOKENS, build_idefics3, sized=True, tokens_per_side_divisor=2),
}
