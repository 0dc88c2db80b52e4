"""What every benchmarked step runs on: one model shape, one synthetic dataset, one set of settings.

All variants of `bench/bench_step.py` get deep copies of the same randomly initialised model and
the same examples, so their step times differ only by how they compute the step. The data is
built to exact token counts (the tiny tokenizer is byte-level: one ASCII character = one token):
every prompt is ``prompt_tokens`` text tokens (chat template included) plus the image tokens,
every response ``response_tokens`` tokens (EOS included), and the rejected response differs from
the chosen one in a few words of the same length, so the changed segments of CHiP are non-empty.
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
    response_tokens: int = 100  # tokens of each response, EOS included
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


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
    # A few-second model for checking the harness itself (tests/perf/test_bench.py), not for timing.
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


@dataclass
class Workload:
    """The model to copy, its processor/adapter, and the examples (chip's and TRL's form)."""

    preset: Preset
    device: torch.device
    base_model: nn.Module
    adapter: VLMAdapter
    examples: list[PreferenceExample]
    trl_rows: list[dict[str, Any]]

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


def build_workload(preset: Preset, device: torch.device, num_examples: int, seed: int = 0) -> Workload:
    """Instantiate the preset's model (random weights, ``seed``) and a matching synthetic dataset."""
    processor, config = tiny_config(preset.family, **preset.sizes)
    torch.manual_seed(seed)
    with torch.device(device):
        base = AutoModelForImageTextToText.from_config(config, dtype=getattr(torch, preset.dtype))
    base.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    adapter = VLMAdapter(processor, base.config)
    image_side = config.vision_config.image_size
    examples, trl_rows = make_examples(adapter, preset, num_examples, image_side, seed)
    return Workload(preset, device, base, adapter, examples, trl_rows)


def make_examples(
    adapter: VLMAdapter, preset: Preset, count: int, image_side: int, seed: int
) -> tuple[list[PreferenceExample], list[dict[str, Any]]]:
    """``count`` pairs of exact token lengths, as chip examples and as TRL's vision-preference rows."""
    rng = random.Random(seed)
    probe = Image.new("RGB", (image_side, image_side))
    image_tokens = sum(int(t) == adapter.image_token_id for t in adapter.encode_prompt([probe], "").input_ids)
    overhead = len(adapter.encode_prompt([probe], "")) - image_tokens
    prompt_chars = preset.prompt_tokens - overhead
    if prompt_chars < 1:
        raise ValueError(
            f"prompt_tokens={preset.prompt_tokens} is shorter than the chat template ({overhead})"
        )
    eos = adapter.tokenizer.eos_token
    examples, trl_rows = [], []
    for index in range(count):
        pixels = np.random.default_rng(seed + index).integers(
            0, 256, (image_side, image_side, 3), dtype=np.uint8
        )
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        prompt = _text(rng, prompt_chars).capitalize()
        chosen = _text(rng, preset.response_tokens - 1)
        rejected = " ".join(SWAPS.get(word, word) for word in chosen.split(" "))
        example = PreferenceExample(
            id=f"bench{index}", row=index, source="bench", images=[ImageRef(data=buffer.getvalue())],
            prompt=prompt, chosen=chosen, rejected=rejected,
        )  # fmt: skip
        examples.append(example)
        trl_rows.append({
            "images": [Image.fromarray(pixels)], "prompt": adapter.format_prompt(prompt, 1),
            "chosen": chosen + eos, "rejected": rejected + eos,
        })  # fmt: skip
        _check_lengths(adapter, example, image_tokens + preset.prompt_tokens, preset.response_tokens)
    return examples, trl_rows


def _text(rng: random.Random, length: int) -> str:
    """Words separated by spaces, exactly ``length`` ASCII characters."""
    words: list[str] = []
    while len(" ".join(words)) < length:
        words.append(rng.choice(WORDS))
    text = " ".join(words)[:length]
    return text[:-1] + "." if text.endswith(" ") else text


def _check_lengths(
    adapter: VLMAdapter, example: PreferenceExample, prompt_len: int, response_len: int
) -> None:
    prompt = adapter.encode_prompt(example.load_images(), example.prompt)
    lengths = (
        len(prompt),
        len(adapter.encode_response(example.chosen)),
        len(adapter.encode_response(example.rejected)),
    )
    if lengths != (prompt_len, response_len, response_len):
        raise AssertionError(
            f"example {example.id}: token lengths {lengths}, wanted {(prompt_len, response_len, response_len)}"
        )
