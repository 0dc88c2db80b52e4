"""Samples/s of `chip pairs` against a plain `model.generate` sampling loop: same model, same prompts.

    python bench/bench_pairs.py                          # CPU default: ~3 CPU-minutes
    python bench/bench_pairs.py --device cuda --images 64 --max-new-tokens 128

Both sides sample `--samples` responses for each of `--images` images (each with a prompt of
chip's default set) at temperature 1 from the same tiny LLaVA (random weights; a 32k vocabulary,
so the LM head and the sampler work on LLaVA's width), `--batch-size` rows per `generate` call,
at most `--max-new-tokens` new tokens each:

- (a) plain loop: `AutoModelForImageTextToText` + `AutoProcessor`, per batch of batch-size/K
  prompts `processor(...)`, `model.generate(do_sample=True, num_return_sequences=K)` (one global
  random stream), `batch_decode`;
- (b) `chip pairs` in process (`chip.pairs.cli.main`): greedy `generate` with per-row seeded
  Gumbel noise, samples appended and fsynced per batch, then the objects annotator, the pairing
  rules, the training folder and the report.

Each side's time runs from loading the model to its last output. Runs are interleaved
(a b a b ...) so that load from other processes hits both alike; samples/s are medians, and the
ratio (b)/(a) is taken in the same run. Prints a table and writes the raw times as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` and `chip` importable from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from chip.pairs.sources import DEFAULT_PROMPTS, pick_prompt  # noqa: E402
from chip.testing import build_tiny_model  # noqa: E402

# The model both sides sample: LLaVA-1.5's layout at a size a CPU samples in seconds.
MODEL_SIZE = dict(
    hidden_size=256,
    intermediate_size=512,
    num_layers=4,
    num_heads=4,
    num_kv_heads=4,
    vocab_size=32_000,
    vision_hidden_size=64,
    vision_layers=2,
    vision_heads=2,
    image_size=64,
    patch_size=8,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=16, help="prompts (one image each)")
    parser.add_argument("--samples", type=int, default=4, help="responses per prompt (K)")
    parser.add_argument("--batch-size", type=int, default=16, help="rows per generate call (a multiple of K)")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each side, interleaved")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--out", default="bench/results/bench_pairs.json", help="JSON of every run")
    args = parser.parse_args(argv)
    if args.batch_size % args.samples:
        parser.error("--batch-size must be a multiple of --samples (the plain loop batches whole prompts)")
    return args


def build_inputs(folder: Path, n_images: int) -> tuple[Path, Path, Path]:
    """(model dir, image dir, objects file) in `folder`."""
    model = build_tiny_model("llava", folder / "model", **MODEL_SIZE)
    images = folder / "images"
    images.mkdir()
    for k in range(n_images):
        pixels = np.random.default_rng(k).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / f"{k:04d}.png")
    objects = folder / "objects.json"
    objects.write_text(json.dumps({f"{k:04d}.png": ["dog", "cat"] for k in range(n_images)}))
    return model, images, objects


def plain_loop(model_dir: Path, images: Path, args: argparse.Namespace) -> int:
    """(a): the loop a user writes with transformers alone; returns the number of samples drawn."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(model_dir).to(args.device).eval()
    processor = AutoProcessor.from_pretrained(model_dir)
    processor.tokenizer.padding_side = "left"
    files = sorted(images.iterdir())
    per_call = args.batch_size // args.samples
    drawn = 0
    for start in range(0, len(files), per_call):
        batch = files[start : start + per_call]
        texts = [
            processor.apply_chat_template(
                [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image"},
                            {"type": "text", "text": pick_prompt(DEFAULT_PROMPTS, f.name, 0)},
                        ],
                    }
                ],
                add_generation_prompt=True,
            )
            for f in batch
        ]
        inputs = processor(
            images=[Image.open(f).convert("RGB") for f in batch],
            text=texts,
            padding=True,
            return_tensors="pt",
        ).to(args.device)
        with torch.no_grad():
            output = model.generate(
                **inputs,
                do_sample=True,
                temperature=1.0,
                top_p=1.0,
                top_k=0,
                num_return_sequences=args.samples,
                max_new_tokens=args.max_new_tokens,
                pad_token_id=processor.tokenizer.pad_token_id,
            )
        drawn += len(
            processor.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        )
    return drawn


def chip_pairs(model_dir: Path, images: Path, objects: Path, output: Path, args: argparse.Namespace) -> int:
    """(b): `chip pairs` as the command runs it; returns the number of samples drawn."""
    from chip.pairs.cli import main

    main(
        [
            "--model",
            str(model_dir),
            "--images",
            str(images),
            "--objects",
            str(objects),
            "--output",
            str(output),
            "--samples",
            str(args.samples),
            "--batch_size",
            str(args.batch_size),
            "--temperature",
            "1.0",
            "--max_new_tokens",
            str(args.max_new_tokens),
            "--device",
            args.device,
        ]
    )
    return json.loads((output / "pairs_report.json").read_text())["samples"]["drawn"]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.manual_seed(0)
    times: dict[str, list[float]] = {"plain_generate": [], "chip_pairs": []}
    counts: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model_dir, images, objects = build_inputs(folder, args.images)
        for repeat in range(args.repeats):
            start = time.perf_counter()
            counts["plain_generate"] = plain_loop(model_dir, images, args)
            times["plain_generate"].append(time.perf_counter() - start)
            start = time.perf_counter()
            counts["chip_pairs"] = chip_pairs(model_dir, images, objects, folder / f"out{repeat}", args)
            times["chip_pairs"].append(time.perf_counter() - start)
    rates = {name: counts[name] / statistics.median(seconds) for name, seconds in times.items()}
    report = {
        "command": "python bench/bench_pairs.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "model": MODEL_SIZE,
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpus": os.cpu_count(),
        },
        "samples": counts,
        "seconds": times,
        "samples_per_second": rates,
        "ratio_chip_to_plain": rates["chip_pairs"] / rates["plain_generate"],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'':34} {'samples':>8} {'median s':>9} {'samples/s':>10} {'x plain':>8}")
    for name, label in (
        ("plain_generate", "(a) plain model.generate loop"),
        ("chip_pairs", "(b) chip pairs"),
    ):
        print(
            f"{label:34} {counts[name]:>8} {statistics.median(times[name]):>9.2f} {rates[name]:>10.2f} "
            f"{rates[name] / rates['plain_generate']:>8.2f}"
        )
    return report


if __name__ == "__main__":
    main()
