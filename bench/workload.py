"""What every benchmarked step runs on: one model (of a `bench/presets.py` shape), one synthetic dataset.

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
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from transformers import AutoModelForImageTextToText

from bench.presets import Preset
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
            id=f"bench{index}",
            row=index,
            source="bench",
            images=[ImageRef(data=buffer.getvalue())],
            prompt=prompt,
            chosen=chosen,
            rejected=rejected,
        )
        examples.append(example)
        trl_rows.append(
            {
                "images": [Image.fromarray(pixels)],
                "prompt": adapter.format_prompt(prompt, 1),
                "chosen": chosen + eos,
                "rejected": rejected + eos,
            }
        )
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
        prompt=len(prompt),
        image=image,
        chosen=len(adapter.encode_response(example.chosen)),
        rejected=len(adapter.encode_response(example.rejected)),
    )
    if (counts.prompt - image, counts.chosen, counts.rejected) != (prompt_text, chosen_len, rejected_len):
        raise AssertionError(
            f"example {example.id}: token lengths {counts}, wanted {prompt_text} text tokens in the prompt "
            f"and responses of {(chosen_len, rejected_len)}"
        )
    return counts
