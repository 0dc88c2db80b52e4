"""The stock processors and shared special tokens of the tiny families of :mod:`chip.testing.families`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import transformers
from transformers import PreTrainedTokenizerFast, ProcessorMixin

from chip.testing.tiny_tokenizer import TokenSpec


def _cls(name: str) -> Any:
    """A transformers class looked up when a family is built, so only that family needs its backends."""
    return getattr(transformers, name)


def qwen3_processor(pixels: int = 32 * 32, patch: int = 8) -> Callable:
    def build(tok: PreTrainedTokenizerFast, template: str) -> ProcessorMixin:
        image = _cls("Qwen2VLImageProcessorPil")(
            size={"shortest_edge": pixels, "longest_edge": pixels},
            patch_size=patch,
            merge_size=2,
            temporal_patch_size=2,
        )
        video = _cls("Qwen3VLVideoProcessor")(patch_size=patch, merge_size=2, temporal_patch_size=2)
        return _cls("Qwen3VLProcessor")(image, tok, video, chat_template=template)

    return build


GEMMA_TOKENS = TokenSpec(
    eos="<end_of_turn>",
    pad="<pad>",
    image="<image_soft_token>",
    bos="<bos>",
    extra=("<start_of_image>", "<end_of_image>"),
    named=(("boi_token", "<start_of_image>"), ("eoi_token", "<end_of_image>")),
)
IDEFICS_TOKENS = TokenSpec(
    eos="<end_of_utterance>",
    pad="<|finetune_right_pad_id|>",
    image="<image>",
    bos="<|begin_of_text|>",
    extra=(
        "<fake_token_around_image>",
        "<global-img>",
        *(f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)),
    ),
    named=(("image_boundary_token", "<fake_token_around_image>"),),
)
INTERNVL_TOKENS = TokenSpec(
    eos="<|im_end|>",
    pad="<|endoftext|>",
    image="<IMG_CONTEXT>",
    extra=("<img>", "</img>", "<video>"),
    named=(
        ("start_image_token", "<img>"),
        ("end_image_token", "</img>"),
        ("context_image_token", "<IMG_CONTEXT>"),
        ("video_token", "<video>"),
    ),
)
COHERE_IMAGE_TOKENS = ("<|START_OF_IMG|>", "<|END_OF_IMG|>", "<|IMG_PATCH|>", "<|IMG_LINE_BREAK|>")
QWEN3_TOKENS = TokenSpec(
    eos="<|im_end|>",
    pad="<|endoftext|>",
    image="<|image_pad|>",
    extra=("<|im_start|>", "<|vision_start|>", "<|vision_end|>", "<|video_pad|>"),
    named=(
        ("video_token", "<|video_pad|>"),
        ("vision_start_token", "<|vision_start|>"),
        ("vision_end_token", "<|vision_end|>"),
    ),
)
QWEN3_IDS = {
    "image_token_id": "<|image_pad|>",
    "video_token_id": "<|video_pad|>",
    "vision_start_token_id": "<|vision_start|>",
    "vision_end_token_id": "<|vision_end|>",
}
QWEN3_VISION = dict(patch_size=8, spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=16)


def qwen3_text() -> dict[str, Any]:
    return {
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 10000.0,
            "mrope_section": [2, 3, 3],
            "mrope_interleaved": True,
        }
    }


def clip_llava_processor(tok: PreTrainedTokenizerFast, template: str) -> ProcessorMixin:
    image = _cls("CLIPImageProcessorPil")(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return _cls("LlavaProcessor")(
        image,
        tok,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=template,
    )


def gemma3_processor(tok: PreTrainedTokenizerFast, template: str) -> ProcessorMixin:
    image = _cls("Gemma3ImageProcessorPil")(size={"height": 32, "width": 32})
    return _cls("Gemma3Processor")(image, tok, chat_template=template, image_seq_length=4)


def paligemma_processor(tok: PreTrainedTokenizerFast, template: str) -> ProcessorMixin:
    image = _cls("SiglipImageProcessorPil")(size={"height": 32, "width": 32})
    image.image_seq_length = 16
    return _cls("PaliGemmaProcessor")(image, tok, chat_template=template)


def idefics2_processor(tok: PreTrainedTokenizerFast, template: str) -> ProcessorMixin:
    image = _cls("Idefics2ImageProcessorPil")(
        size={"shortest_edge": 32, "longest_edge": 64}, do_image_splitting=False
    )
    return _cls("Idefics2Processor")(image, tok, image_seq_len=4, chat_template=template)


def smolvlm_processor(tok: PreTrainedTokenizerFast, template: str) -> ProcessorMixin:
    image = _cls("SmolVLMImageProcessorPil")(
        size={"longest_edge": 64}, max_image_size={"longest_edge": 32}, do_image_splitting=True
    )
    video = _cls("SmolVLMVideoProcessor")(size={"longest_edge": 32}, max_image_size={"longest_edge": 32})
    return _cls("SmolVLMProcessor")(image, tok, video, image_seq_len=4, chat_template=template)


def internvl_processor(tok: PreTrainedTokenizerFast, template: str) -> ProcessorMixin:
    image = _cls("GotOcr2ImageProcessorPil")(size={"height": 32, "width": 32}, crop_to_patches=False)
    video = _cls("InternVLVideoProcessor")(size={"height": 32, "width": 32})
    return _cls("InternVLProcessor")(image, tok, video, image_seq_length=4, chat_template=template)


def pixtral_processor(tok: PreTrainedTokenizerFast, template: str) -> ProcessorMixin:
    image = _cls("PixtralImageProcessorPil")(size={"longest_edge": 32}, patch_size=8)
    return _cls("PixtralProcessor")(image, tok, patch_size=8, spatial_merge_size=2, chat_template=template)


def aya_processor(tok: PreTrainedTokenizerFast, template: str) -> ProcessorMixin:
    image = _cls("GotOcr2ImageProcessorPil")(size={"height": 32, "width": 32}, crop_to_patches=False)
    return _cls("AyaVisionProcessor")(
        image, tok, patch_size=16, img_size=32, downsample_factor=2, chat_template=template
    )


def mllama_processor(tok: PreTrainedTokenizerFast, template: str) -> ProcessorMixin:
    image = _cls("MllamaImageProcessorPil")(size={"height": 32, "width": 32}, max_image_tiles=2)
    return _cls("MllamaProcessor")(image, tok, chat_template=template)


def llama4_processor(tok: PreTrainedTokenizerFast, template: str) -> ProcessorMixin:
    image = _cls("Llama4ImageProcessor")(size={"height": 32, "width": 32}, max_patches=2)
    return _cls("Llama4Processor")(image, tok, patch_size=8, pixel_shuffle_ratio=0.5, chat_template=template)


def glm4v_processor(tok: PreTrainedTokenizerFast, template: str) -> ProcessorMixin:
    pixels = 32 * 32
    image = _cls("Glm4vImageProcessorPil")(
        size={"shortest_edge": pixels, "longest_edge": pixels},
        patch_size=8,
        merge_size=2,
        temporal_patch_size=2,
    )
    video = _cls("Glm4vVideoProcessor")(patch_size=8, merge_size=2, temporal_patch_size=2)
    return _cls("Glm4vProcessor")(image, tok, video, chat_template=template)


def lfm2_vl_processor(tok: PreTrainedTokenizerFast, template: str) -> ProcessorMixin:
    image = _cls("Lfm2VlImageProcessor")(
        tile_size=32,
        encoder_patch_size=8,
        downsample_factor=2,
        min_image_tokens=4,
        max_image_tokens=16,
        max_num_patches=64,
        do_image_splitting=False,
    )
    return _cls("Lfm2VlProcessor")(image, tok, chat_template=template)


def cohere2_vision_processor(tok: PreTrainedTokenizerFast, template: str) -> ProcessorMixin:
    image = _cls("Cohere2VisionImageProcessor")(
        size={"height": 32, "width": 32}, patch_size=2, crop_to_patches=False, max_patches=1
    )
    return _cls("Cohere2VisionProcessor")(image, tok, chat_template=template)


def llava_onevision_processor(tok: PreTrainedTokenizerFast, template: str) -> ProcessorMixin:
    image = _cls("LlavaOnevisionImageProcessorPil")(
        size={"height": 32, "width": 32}, image_grid_pinpoints=[[32, 32], [32, 64], [64, 32]]
    )
    video = _cls("LlavaOnevisionVideoProcessor")(size={"height": 32, "width": 32})
    return _cls("LlavaOnevisionProcessor")(
        image,
        tok,
        video,
        num_image_tokens=16,
        vision_feature_select_strategy="full",
        chat_template=template,
        vision_aspect_ratio="anyres_max_9",
    )


def gemma4_processor(tok: PreTrainedTokenizerFast, template: str) -> ProcessorMixin:
    image = _cls("Gemma4ImageProcessorPil")(patch_size=8, max_soft_tokens=70, pooling_kernel_size=2)
    video = _cls("Gemma4VideoProcessor")(patch_size=8, max_soft_tokens=70, pooling_kernel_size=2)
    audio = _cls("Gemma4AudioFeatureExtractor")()
    return _cls("Gemma4Processor")(audio, image, tok, video, chat_template=template, image_seq_length=70)
