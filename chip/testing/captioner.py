"""A tiny model that writes captions: a short supervised fine-tune of a tiny random model.

    path = train_captioner(build_tiny_model("llava", tmp / "base"), tmp / "captioner",
                           {"img/1.jpg": ["A dog catches a frisbee.", "A dog and a cat ..."]}, prompts)

A random tiny model writes random bytes, which name no object, so nothing about object
hallucination can be tested on it. Fine-tuned for a few hundred steps on a handful of captions
per image (some of them naming objects that are not in the image), it answers each image with
one of its captions, now and then garbled: sampled at temperature 1, its answers vary, name
objects, and sometimes hallucinate, as a real captioner's do. Used by the `chip pairs` tests and
`bench/bench_pairs.py`.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from PIL import Image
from transformers import AutoModelForImageTextToText

from chip.modeling import VLMAdapter


def train_captioner(
    model_dir: str | Path,
    output_dir: str | Path,
    captions: Mapping[str | Path, Sequence[str]],
    prompts: Sequence[str],
    steps: int = 300,
    batch_size: int = 4,
    learning_rate: float = 3e-3,
    seed: int = 0,
) -> Path:
    """Fine-tune the model in `model_dir` to answer each image of `captions` with one of its captions.

    Every step trains on `batch_size` (image, caption) pairs drawn at random, each under a prompt
    drawn from `prompts`; the loss is the cross-entropy of the caption tokens (and EOS) only. Saves model and processor
    to `output_dir` and returns it.
    """
    torch.manual_seed(seed)
    rng = random.Random(seed)
    adapter = VLMAdapter.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32)
    model.train()
    images = {}
    for path in captions:
        with Image.open(path) as image:
            images[path] = image.convert("RGB")
    pairs = [(path, adapter.encode_response(text)) for path, texts in captions.items() for text in texts]
    encoded: dict[tuple[str | Path, str], object] = {}
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    for _ in range(steps):
        rows = []
        for path, response in rng.sample(pairs, min(batch_size, len(pairs))):
            prompt = rng.choice(list(prompts))
            if (path, prompt) not in encoded:
                encoded[(path, prompt)] = adapter.encode_prompt([images[path]], prompt)
            rows.append((encoded[(path, prompt)], response))
        batch = adapter.collate(rows)
        response_mask = batch.pop("response_mask")  # (B, T)
        labels = batch["input_ids"].masked_fill(~response_mask, -100)  # (B, T)
        loss = model(**batch, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    adapter.processor.save_pretrained(output_dir)
    return output_dir
