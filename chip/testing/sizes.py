"""The one interface every tiny family is built through: its sizes (`TinySize`) and its builder (`TinyFamily`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from transformers import PretrainedConfig, PreTrainedTokenizerFast, ProcessorMixin

from chip.testing.tiny_tokenizer import TokenSpec


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


# (sizes, the family's byte-level tokenizer) -> (processor, config)
Builder = Callable[[TinySize, PreTrainedTokenizerFast], tuple[ProcessorMixin, PretrainedConfig]]


def vocab_size(size: TinySize, tokenizer: PreTrainedTokenizerFast) -> int:
    """The model's vocabulary: ``size.vocab_size``, by default the tokenizer's length (read after the
    processor added its tokens); never smaller than the tokenizer."""
    vocab = size.vocab_size if size.vocab_size is not None else len(tokenizer)
    if vocab < len(tokenizer):
        raise ValueError(f"vocab_size {vocab} is smaller than the tokenizer's {len(tokenizer)} tokens")
    return vocab


@dataclass(frozen=True)
class TinyFamily:
    """How `chip.testing.tiny_config` builds one family: its special tokens and its builder."""

    tokens: TokenSpec
    build: Builder
    sized: bool  # takes every TinySize override; otherwise (a shrunk stock config) only vocab_size
    tokens_per_side_divisor: int = 1  # image tokens per image side = (image_size / patch_size) / divisor
