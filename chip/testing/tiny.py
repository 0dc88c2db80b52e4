"""Tiny, randomly initialised vision-language models for tests and benchmarks, built offline.

    from chip.testing import build_tiny_model
    path = build_tiny_model("qwen2_vl", tmp_path / "qwen")            # ~0.15 M parameters, 32 px
    path = build_tiny_model("llava", out, num_image_tokens=576, vocab_size=32_000)  # LLaVA-1.5 shapes

Each folder holds what a hub checkpoint holds (``config.json``, weights, tokenizer, processor, chat
template), so users load it with ``AutoModelForImageTextToText.from_pretrained`` and
``AutoProcessor.from_pretrained`` and exercise the real model classes and processors: image-token
expansion, LLaVA-NeXT tiling, Qwen-VL's flat patches and M-RoPE, Idefics3 image splitting. Only the
sizes are small. The tokenizer is byte-level (every text encodes, one token per byte) plus the
family's special tokens.

Every family goes through the one path here (:func:`tiny_config`): its `TinyFamily` entry, a
byte-level tokenizer of its special tokens, its builder. Five families are sized by hand
(`chip.testing.hand_sized`, every `TinySize` override); the others start from transformers'
default config of the family, shrunk (`chip.testing.shrink`, only ``vocab_size``).
"""

from __future__ import annotations

import math
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForImageTextToText, PretrainedConfig, ProcessorMixin

from chip.testing.families import missing_packages
from chip.testing.hand_sized import HAND_SIZED
from chip.testing.shrink import SHRUNK
from chip.testing.sizes import TinyFamily, TinySize
from chip.testing.tiny_tokenizer import byte_level_tokenizer

TINY_FAMILIES: dict[str, TinyFamily] = {**HAND_SIZED, **SHRUNK}
FAMILIES = tuple(HAND_SIZED)  # sized by hand: every TinySize override
ALL_FAMILIES = tuple(TINY_FAMILIES)  # every family chip builds


def resolve_size(family: TinyFamily, overrides: dict[str, Any]) -> TinySize:
    """``overrides`` as a `TinySize` for ``family``, ``num_image_tokens`` turned into an image size."""
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
    if family not in TINY_FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose one of {ALL_FAMILIES}")
    spec = TINY_FAMILIES[family]
    if not spec.sized and set(size_overrides) - {"vocab_size"}:
        raise ValueError(f"{family} takes only a vocab_size override, got {sorted(size_overrides)}")
    size = resolve_size(spec, size_overrides)
    missing = missing_packages(family)
    if missing:
        raise ImportError(f"the stock {family} processor needs {', '.join(missing)} (pip install them)")
    return spec.build(size, byte_level_tokenizer(spec.tokens))


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
