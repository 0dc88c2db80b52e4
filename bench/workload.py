"""What every benchmarked step runs on: one model shape, one synthetic dataset, one set of settings.

All variants of `bench/bench_step.py` get deep copies of the same randomly initialised model and
the same examples, so their step times differ only by how they compute the step. The data is
built to exact token counts (the tiny tokenizer is byte-level: one ASCII character = one token):
every prompt is ``prompt_tokens`` text tokens (chat template included) plus the image tokens.
In the fixed-length presets every response is ``response_tokens`` tokens (EOS included) and the
rejected response differs from the chosen one in a few words of the same length, so the changed
segments of CHiP are non-empty. The variable-length presets (``varlen``, ``anyres``,
``qwen-dynamic``) draw each example's chosen and rejected lengths and its image size
(`bench/distributions.py`); their rejected response is the chosen one with the same words
swapped, cut short or continued to its own length.
"""

from __future__ import annotations

import copy
import io
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from transformers import AutoModelForImageTextToText

from bench.distributions import ImageSizes, ResponseLengths
from chip.data import PreferenceExample
from chip.data.images import ImageRef
from chip.modeling import VLMAdapter
from chip.testing import tiny_config
from chip.training.models import freeze_vision_tower

WORDS = [
    "red",
    "cat",
    "dog",
    "sofa",
    "blue",
    "tree",
    "left",
    "two",
    "small",
    "table",
    "near",
    "the",
    "a",
    "lamp",
]
SWAPS = {
    "red": "tan",
    "cat": "owl",
    "dog": "pig",
    "blue": "gray",
    "left": "west",
    "two": "six",
    "tree": "bush",
}


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
# slow as (a) on varlen. Each would take a full run past 10 minutes on a 2-core CPU.
VARLEN_VARIANTS = ("trl-completion", "chip-live", "chip-precomputed", "chip-dpo")
# LLaVA-NeXT-7B's (llava-v1.6) anyres tilings, in 336 px tiles: up to 2x2, or 1x3 for wide images.
LLAVA_NEXT_PINPOINTS = ((1, 2), (2, 1), (2, 2), (1, 3), (3, 1))

PRESETS: dict[str, Preset] = {
    # LLaVA-1.5's layout (CLIP ViT with 14 px patches on 336 px images = 576 image tokens, a 2-layer
    # MLP projector, a LLaMA decoder with a 32k vocabulary and full multi-head attention) at ~28 M
    # parameters, so a step takes seconds on a laptop CPU.
    "cpu": Preset(
        family="llava",
        sizes=dict(
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
        ),  # fmt: skip
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
        ),  # fmt: skip
        dtype="float32",
        batch_size=2,
        prompt_tokens=40,
        response_tokens=512,
        notes="152k vocabulary, 512-token responses, small decoder (memory of the logits)",
    ),
    # The comparison of the issue "a realistic variable-length workload": the cpu preset's LLaVA-1.5
    # layout (576 image tokens, 32k vocabulary, 256 wide) with 6 decoder layers, 4 pairs per step,
    # RLHF-V-like responses of 10-240 words, the rejected answer often shorter or longer.
    "varlen": Preset(
        family="llava",
        sizes=dict(
            num_image_tokens=576,
            patch_size=14,
            vocab_size=32_000,
            hidden_size=256,
            intermediate_size=1024,
            num_layers=6,
            num_heads=8,
            num_kv_heads=8,
            vision_hidden_size=256,
            vision_intermediate_size=1024,
            vision_layers=4,
            vision_heads=4,
        ),  # fmt: skip
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
            max_position_embeddings=8192,
        ),  # fmt: skip
        dtype="float32",
        batch_size=4,
        response_lengths=ResponseLengths(),
        image_sizes=ImageSizes(
            min_pixels=100_000,
            max_pixels=2_000_000,
            aspect_ratios=(1.0, 4 / 3, 3 / 4, 3 / 2, 2 / 3, 16 / 9, 9 / 16, 2.0, 1 / 2, 3.0, 1 / 3),
        ),  # fmt: skip
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
        ),  # fmt: skip
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
        ),  # fmt: skip
        dtype="bfloat16",
        batch_size=2,
        notes="LLaVA-1.5-7B shape, random weights, bf16 (needs a GPU with ~120 GB)",
    ),
}


@dataclass(frozen=True)
class ExampleTokens:
    """Token counts of one example, as the adapter encodes it (each checked against what was drawn)."""

    prompt: int  # the templated prompt, image tokens included
    image: int  # image tokens among them
    chosen: int  # the chosen response, EOS included
    rejected: int  # the rejected response, EOS included

    @property
    def real(self) -> int:
        """The example's tokens, each counted once: prompt (with the image) and both responses."""
        return self.prompt + self.chosen + self.rejected


@dataclass
class Workload:
    """The model to copy, its processor/adapter, and the examples (chip's and TRL's form)."""

    preset: Preset
    device: torch.device
    base_model: nn.Module
    adapter: VLMAdapter
    examples: list[PreferenceExample]
    trl_rows: list[dict[str, Any]]
    tokens: list[ExampleTokens]  # per example

    @property
    def dtype(self) -> torch.dtype:
        return getattr(torch, self.preset.dtype)

    def fresh_model(self, trainable: bool) -> nn.Module:
        """A deep copy of the base model on the device; vision tower frozen (the recipe's setting)."""
        model = copy.deepcopy(self.base_model).to(self.device)
        if trainable:
            freeze_vision_tower(model)
            return model.train()
        return model.eval().requires_grad_(False)

    def batches(self, num_batches: int) -> list[list[int]]:
        """Example indices of each step's batch, cycling through the examples."""
        size = self.preset.batch_size
        return [[(b * size + i) % len(self.examples) for i in range(size)] for b in range(num_batches)]

    def batch_tokens(self, indices: list[int]) -> int:
        """Real tokens of a batch: every example's prompt (image tokens included) and both responses."""
        return sum(self.tokens[i].real for i in indices)


def build_workload(preset: Preset, device: torch.device, num_examples: int, seed: int = 0) -> Workload:
    """Instantiate the preset's model (random weights, ``seed``) and a matching synthetic dataset."""
    processor, config = tiny_config(preset.family, **preset.sizes)
    torch.manual_seed(seed)
    with torch.device(device):
        base = AutoModelForImageTextToText.from_config(config, dtype=getattr(torch, preset.dtype))
    base.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    adapter = VLMAdapter(processor, base.config)
    image_side = getattr(config.vision_config, "image_size", None)  # Qwen-VL's tower takes any size
    examples, trl_rows, tokens = make_examples(adapter, preset, num_examples, image_side, seed)
    return Workload(preset, device, base, adapter, examples, trl_rows, tokens)


def make_examples(
    adapter: VLMAdapter, preset: Preset, count: int, image_side: int | None, seed: int
) -> tuple[list[PreferenceExample], list[dict[str, Any]], list[ExampleTokens]]:
    """``count`` pairs of exact token lengths: chip examples, TRL's vision-preference rows, their token counts.

    Lengths and image sizes the preset draws come from their own generator, so the text of the
    fixed-length presets is the same as before those existed.
    """
    rng = random.Random(seed)
    draws = np.random.default_rng([seed, 1])
    sizes = [
        preset.image_sizes.draw(draws) if preset.image_sizes else (image_side, image_side)
        for _ in range(count)
    ]
    probe = Image.new("RGB", sizes[0])
    overhead = len(adapter.encode_prompt([probe], "")) - _image_tokens(adapter, [probe])
    prompt_chars = preset.prompt_tokens - overhead
    if prompt_chars < 1:
        raise ValueError(
            f"prompt_tokens={preset.prompt_tokens} is shorter than the chat template ({overhead})"
        )
    eos = adapter.tokenizer.eos_token
    examples, trl_rows, tokens = [], [], []
    for index, (width, height) in enumerate(sizes):
        pixels = np.random.default_rng(seed + index).integers(0, 256, (height, width, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        prompt = _text(rng, prompt_chars).capitalize()
        if preset.response_lengths is None:
            chosen_len = rejected_len = preset.response_tokens
            chosen = _text(rng, chosen_len - 1)
            rejected = _swapped(chosen)
        else:
            chosen_len, rejected_len = preset.response_lengths.draw(draws)
            chosen = _text(rng, chosen_len - 1)
            rejected = _fit(rng, _swapped(chosen), rejected_len - 1)
        example = PreferenceExample(
            id=f"bench{index}", row=index, source="bench", images=[ImageRef(data=buffer.getvalue())],
            prompt=prompt, chosen=chosen, rejected=rejected,
        )  # fmt: skip
        examples.append(example)
        trl_rows.append({
            "images": [Image.fromarray(pixels)], "prompt": adapter.format_prompt(prompt, 1),
            "chosen": chosen + eos, "rejected": rejected + eos,
        })  # fmt: skip
        tokens.append(_check_lengths(adapter, example, preset.prompt_tokens, chosen_len, rejected_len))
    return examples, trl_rows, tokens


def _text(rng: random.Random, length: int) -> str:
    """Words separated by spaces, exactly ``length`` ASCII characters."""
    words: list[str] = []
    while len(" ".join(words)) < length:
        words.append(rng.choice(WORDS))
    text = " ".join(words)[:length]
    return text[:-1] + "." if text.endswith(" ") else text


def _swapped(text: str) -> str:
    """``text`` with a few words replaced by others of the same length (a hallucination-like edit)."""
    return " ".join(SWAPS.get(word, word) for word in text.split(" "))


def _fit(rng: random.Random, text: str, length: int) -> str:
    """``text`` cut to exactly ``length`` characters, or continued with more words up to it."""
    if length <= len(text):
        cut = text[:length]
        return cut[:-1] + "." if cut.endswith(" ") else cut
    if length == len(text) + 1:
        return text + "."
    return text + " " + _text(rng, length - len(text) - 1)


def _image_tokens(adapter: VLMAdapter, images: list[Image.Image]) -> int:
    return sum(int(t) == adapter.image_token_id for t in adapter.encode_prompt(images, "").input_ids)


def _check_lengths(
    adapter: VLMAdapter, example: PreferenceExample, prompt_text: int, chosen_len: int, rejected_len: int
) -> ExampleTokens:
    """The example's token counts; raises unless its prompt has ``prompt_text`` non-image tokens and its
    responses the lengths drawn."""
    images = example.load_images()
    prompt = adapter.encode_prompt(images, example.prompt)
    image = sum(int(t) == adapter.image_token_id for t in prompt.input_ids)
    counts = ExampleTokens(
        prompt=len(prompt), image=image, chosen=len(adapter.encode_response(example.chosen)),
        rejected=len(adapter.encode_response(example.rejected)),
    )  # fmt: skip
    if (counts.prompt - image, counts.chosen, counts.rejected) != (prompt_text, chosen_len, rejected_len):
        raise AssertionError(
            f"example {example.id}: token lengths {counts}, wanted {prompt_text} text tokens in the prompt "
            f"and responses of {(chosen_len, rejected_len)}"
        )
    return counts
