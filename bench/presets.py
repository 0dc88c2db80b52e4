"""The model shapes and workloads `bench/bench_step.py` can run, by name (``--preset``).

A preset is a tiny-model family with its sizes (`chip.testing.TinySize` overrides), a dtype, the
pairs per step and the token geometry of the synthetic data `bench/workload.py` builds: fixed
prompt and response lengths (``cpu``, ``equal``, ``qwen-vocab``, ``smoke``, ``llava-7b``), or response lengths
and image sizes drawn per example (``varlen``, ``anyres``, ``qwen-dynamic``; `bench/distributions.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bench.distributions import ImageSizes, ResponseLengths


@dataclass(frozen=True)
class Preset:
    """A model shape and the workload run on it."""

    family: str
    sizes: dict[str, Any]  # chip.testing.TinySize overrides
    dtype: str  # weights dtype of every variant
    batch_size: int  # preference pairs per step
    prompt_tokens: int = 40  # text tokens of the templated prompt (image tokens come on top)
    response_tokens: int = 100  # tokens of each response, EOS included (when not drawn)
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    response_lengths: ResponseLengths | None = None  # drawn per example; None = response_tokens each
    image_sizes: ImageSizes | None = None  # drawn per example; None = the vision tower's square image
    variants: tuple[str, ...] | None = None  # run by default; None = bench/variants.py's DEFAULT_VARIANTS
    num_batches: int = 2  # distinct batches the steps cycle through (by default)


# What the variable-length presets run by default: TRL's DPO step with its LM head on completions
# only, as TRL runs on a GPU (a'), and chip's three variants. Left out, each a --variants away
# (`trl`, `naive`): TRL's CPU-only head over every position, (a), ~3x (a')'s step on varlen and
# ~110 s a step on anyres (~9x (a'), with a 2-layer decoder); and the naive CHiP baseline, about as
# slow as (a) on varlen. Each adds minutes to a full run on a 2-core CPU.
VARLEN_VARIANTS = ("trl-completion", "chip-live", "chip-precomputed", "chip-dpo")
# LLaVA-NeXT-7B's (llava-v1.6) anyres tilings, in 336 px tiles: up to 2x2, or 1x3 for wide images.
LLAVA_NEXT_PINPOINTS = ((1, 2), (2, 1), (2, 2), (1, 3), (3, 1))

# LLaVA-1.5's layout (CLIP ViT with 14 px patches on 336 px images = 576 image tokens, a 2-layer
# MLP projector, a LLaMA decoder with a 32k vocabulary and full multi-head attention) at ~28 M
# parameters, so a step takes seconds on a laptop CPU.
LLAVA15_SIZES = dict(
    num_image_tokens=576,
    patch_size=14,
    vocab_size=32_000,
    hidden_size=256,
    intermediate_size=1024,
    num_layers=8,
    num_heads=8,
    num_kv_heads=8,
    vision_hidden_size=256,
    vision_intermediate_size=1024,
    vision_layers=4,
    vision_heads=4,
)

# The variable-image presets' model: a one-layer vision tower and a 4-layer decoder 128 wide, so
# that 1,000-3,000 image tokens per example fit a CPU step.
SMALL_DECODER = dict(
    vocab_size=32_000,
    hidden_size=128,
    intermediate_size=512,
    num_layers=4,
    num_heads=4,
    num_kv_heads=4,
    vision_hidden_size=64,
    vision_intermediate_size=128,
    vision_layers=1,
    vision_heads=2,
)

PRESETS: dict[str, Preset] = {
    "cpu": Preset(
        family="llava",
        sizes=LLAVA15_SIZES,
        dtype="float32",
        batch_size=2,
        notes="LLaVA-1.5-shaped, ~28M parameters, float32",
    ),
    # Qwen2-VL's 151,936-token vocabulary with 512-token responses, on a small decoder: the shape
    # where (rows, response, vocabulary) float32 tensors dominate memory (logits_chunk_size).
    "qwen-vocab": Preset(
        family="llava",
        sizes=dict(
            num_image_tokens=64,
            patch_size=14,
            vocab_size=151_936,
            hidden_size=128,
            intermediate_size=256,
            num_layers=2,
            num_heads=4,
            num_kv_heads=4,
            vision_hidden_size=64,
            vision_intermediate_size=128,
            vision_layers=1,
            vision_heads=2,
        ),
        dtype="float32",
        batch_size=2,
        prompt_tokens=40,
        response_tokens=512,
        notes="152k vocabulary, 512-token responses, small decoder (memory of the logits)",
    ),
    # The equal-length comparison: the `cpu` layout with a 6-layer decoder, 80-token
    # responses of equal length, 2 pairs per step (nothing to pad: the token-count bound applies).
    "equal": Preset(
        family="llava",
        sizes={**LLAVA15_SIZES, "num_layers": 6},
        dtype="float32",
        batch_size=2,
        response_tokens=80,
        variants=VARLEN_VARIANTS,
        notes="LLaVA-1.5-shaped, 6-layer decoder, equal 80-token responses",
    ),
    # The comparison of the issue "a realistic variable-length workload": the cpu preset's LLaVA-1.5
    # layout (576 image tokens, 32k vocabulary, 256 wide) with 6 decoder layers, 4 pairs per step,
    # RLHF-V-like responses of 10-240 words, the rejected answer often shorter or longer.
    "varlen": Preset(
        family="llava",
        sizes={**LLAVA15_SIZES, "num_layers": 6},
        dtype="float32",
        batch_size=4,
        response_lengths=ResponseLengths(),
        variants=VARLEN_VARIANTS,
        num_batches=3,
        notes="LLaVA-1.5-shaped, 6-layer decoder, responses of 10-240 words",
    ),
    # LLaVA-NeXT's anyres geometry (336 px tiles of 576 tokens, LLaVA-NeXT-7B's tilings, one
    # newline token per row of features): a base view plus up to 4 tiles, minus the rows or columns
    # the image's aspect ratio leaves empty, so 1,100-2,900 image tokens per example. Small vision
    # tower and decoder, so that the token geometry fits a CPU.
    "anyres": Preset(
        family="llava_next",
        sizes=dict(
            num_image_tokens=576,
            patch_size=14,
            image_grid_pinpoints=LLAVA_NEXT_PINPOINTS,
            **SMALL_DECODER,
            max_position_embeddings=8192,
        ),
        dtype="float32",
        batch_size=4,
        response_lengths=ResponseLengths(),
        image_sizes=ImageSizes(
            min_pixels=100_000,
            max_pixels=2_000_000,
            aspect_ratios=(1.0, 4 / 3, 3 / 4, 3 / 2, 2 / 3, 16 / 9, 9 / 16, 2.0, 1 / 2, 3.0, 1 / 3),
        ),
        variants=VARLEN_VARIANTS,
        num_batches=3,
        notes="LLaVA-NeXT anyres, 1,100-2,900 image tokens, small decoder, responses of 10-240 words",
    ),
    # Qwen2-VL's dynamic resolution: one token per 28 x 28 pixels of the image as it comes (within
    # Qwen's recommended pixel range, 4-1,280 tokens), images drawn to give 100-1,200 tokens.
    "qwen-dynamic": Preset(
        family="qwen2_vl",
        sizes=dict(
            num_image_tokens=256,  # only the tiny config's nominal image size; the pixel range decides
            patch_size=14,
            min_pixels=4 * 28 * 28,
            max_pixels=1280 * 28 * 28,
            **SMALL_DECODER,
        ),
        dtype="float32",
        batch_size=8,
        response_lengths=ResponseLengths(),
        image_sizes=ImageSizes(min_pixels=100 * 28 * 28, max_pixels=1200 * 28 * 28, multiple=28),
        variants=VARLEN_VARIANTS,
        num_batches=3,
        notes="Qwen2-VL dynamic resolution, 100-1,200 image tokens, small decoder, responses of 10-240 words",
    ),
    # A few-second model for checking the harness itself (tests/bench/test_bench.py), not for timing.
    "smoke": Preset(
        family="llava",
        sizes=dict(num_image_tokens=16, vocab_size=512, hidden_size=32, intermediate_size=64, num_layers=2),
        dtype="float32",
        batch_size=2,
        prompt_tokens=30,
        response_tokens=12,
        notes="tiny smoke-test shape (harness check only)",
    ),
    # llava-hf/llava-1.5-7b-hf: Vicuna-7B (4096 wide, 32 layers, 11008 MLP, 32 heads, vocab 32064)
    # and CLIP ViT-L/14-336 (1024 wide, 24 layers, 16 heads, 4096 MLP), random weights, bf16.
    "llava-7b": Preset(
        family="llava",
        sizes=dict(
            num_image_tokens=576,
            patch_size=14,
            vocab_size=32_064,
            hidden_size=4096,
            intermediate_size=11_008,
            num_layers=32,
            num_heads=32,
            num_kv_heads=32,
            vision_hidden_size=1024,
            vision_intermediate_size=4096,
            vision_layers=24,
            vision_heads=16,
        ),
        dtype="bfloat16",
        batch_size=2,
        notes="LLaVA-1.5-7B shape, random weights, bf16 (needs a GPU with ~120 GB)",
    ),
    # bench/gpu_check.py: llava-hf/llava-v1.6-vicuna-7b-hf (Vicuna-7B, CLIP ViT-L/14-336, anyres
    # tilings) and Qwen/Qwen2-VL-7B-Instruct (3584 wide, 28 layers, 4 KV heads, 152k vocabulary, a
    # 1280-wide 32-layer vision tower), random weights, bf16, with the variable-length draws.
    "llava-next-7b-varlen": Preset(
        family="llava_next",
        sizes=dict(
            num_image_tokens=576,
            patch_size=14,
            image_grid_pinpoints=LLAVA_NEXT_PINPOINTS,
            vocab_size=32_064,
            hidden_size=4096,
            intermediate_size=11_008,
            num_layers=32,
            num_heads=32,
            num_kv_heads=32,
            vision_hidden_size=1024,
            vision_intermediate_size=4096,
            vision_layers=24,
            vision_heads=16,
            max_position_embeddings=8192,
        ),
        dtype="bfloat16",
        batch_size=2,
        response_lengths=ResponseLengths(),
        image_sizes=ImageSizes(
            min_pixels=100_000, max_pixels=2_000_000, aspect_ratios=(1.0, 4 / 3, 3 / 4, 2.0)
        ),
        variants=VARLEN_VARIANTS,
        num_batches=2,
        notes="LLaVA-1.6-7B shape, anyres, random weights, bf16, responses of 10-240 words (one GPU)",
    ),
    "qwen2-vl-7b-varlen": Preset(
        family="qwen2_vl",
        sizes=dict(
            num_image_tokens=256,
            patch_size=14,
            min_pixels=4 * 28 * 28,
            max_pixels=1280 * 28 * 28,
            vocab_size=152_064,
            hidden_size=3584,
            intermediate_size=18_944,
            num_layers=28,
            num_heads=28,
            num_kv_heads=4,
            vision_hidden_size=1280,
            vision_intermediate_size=5120,
            vision_layers=32,
            vision_heads=16,
        ),
        dtype="bfloat16",
        batch_size=2,
        response_lengths=ResponseLengths(),
        image_sizes=ImageSizes(min_pixels=100 * 28 * 28, max_pixels=1200 * 28 * 28, multiple=28),
        variants=VARLEN_VARIANTS,
        num_batches=2,
        notes="Qwen2-VL-7B shape, dynamic resolution, random weights, bf16, responses of 10-240 words (one GPU)",
    ),
}
