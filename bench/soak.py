"""Soak: resident memory of a long `chip train` run must stay flat (no leak that grows with steps).

    python bench/soak.py                                   # 2,000 steps, ~10 CPU-minutes
    python bench/soak.py --steps 200 --eval-steps 20 --save-steps 50 --warmup 50   # the test's twin

A tiny LLaVA trains through `chip.training.cli.run_training` exactly as `chip train` does, with the
full CHiP loss (the default weights: segments, token-level KL, corrupted-image margin), the live
reference model, evaluation on held-out pairs every `--eval-steps` and a checkpoint every
`--save-steps`. The process's resident set size (RSS, from /proc/self/statm) is recorded after
every step. The verdict compares the median RSS of the first `--window` steps after `--warmup`
with the median of the last `--window` steps: growth under `--max-growth` (2 %) passes. The
least-squares slope after the warm-up is printed too (tests/bench/test_soak.py runs the 200-step
twin and holds that slope, extrapolated to 2,000 steps, under the same 2 %). Prints
the curve every `--print-every` steps and writes every sample as JSON.
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

from PIL import Image  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from chip.testing import build_tiny_model  # noqa: E402
from chip.training.cli import parse_config, run_training  # noqa: E402

PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
COLOURS = [(220, 30, 30), (30, 200, 30), (30, 30, 220), (230, 220, 20)]
NAMES = ["red", "green", "blue", "yellow"]


def rss_bytes() -> int:
    """This process's resident set size now (Linux: /proc/self/statm, field 2, in pages)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE_BYTES


class RssRecorder(TrainerCallback):
    """Records ``(step, RSS bytes)`` at the end of every optimizer step."""

    def __init__(self) -> None:
        self.samples: list[tuple[int, int]] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.samples.append((state.global_step, rss_bytes()))
        return control


def growth(samples: list[tuple[int, int]], warmup: int, window: int) -> dict[str, float]:
    """Median RSS of the ``window`` steps after ``warmup`` (start) and of the last ``window`` (end),
    their relative growth end/start - 1, and the least-squares slope of RSS over the steps after
    ``warmup`` (bytes per step), which a short run can extrapolate to a long one."""
    after = [(step, rss) for step, rss in samples if step > warmup]
    if len(after) < 2 * window:
        raise ValueError(f"need {2 * window} steps after the warm-up, got {len(after)}")
    start = statistics.median(rss for _, rss in after[:window])
    end = statistics.median(rss for _, rss in after[-window:])
    slope = statistics.linear_regression([step for step, _ in after], [rss for _, rss in after]).slope
    return {"start_bytes": start, "end_bytes": end, "growth": end / start - 1, "slope_bytes_per_step": slope}


def write_pairs(folder: Path, n: int) -> Path:
    """``n`` pairs over solid-colour images: chosen names the colour, rejected a wrong one."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        right, wrong = i % 4, (i + 1) % 4
        Image.new("RGB", (32, 32), COLOURS[right]).save(folder / f"img{i}.png")
        rows.append(
            {
                "id": f"ex{i}",
                "images": [f"img{i}.png"],
                "prompt": "What colour is the image?",
                "chosen": f"the image is {NAMES[right]} .",
                "rejected": f"the image is {NAMES[wrong]} and big .",
            }
        )
    path = folder / "pairs.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def soak(folder: Path, args: argparse.Namespace) -> list[tuple[int, int]]:
    """Train ``args.steps`` steps in ``folder``; returns the RSS samples."""
    model = build_tiny_model("llava", folder / "model")
    data = write_pairs(folder / "data", 20)
    settings = {
        "model_name_or_path": model,
        "dataset": data,
        "output_dir": folder / "out",
        "max_steps": args.steps,
        "per_device_train_batch_size": 2,
        "per_device_eval_batch_size": 2,
        "eval_fraction": 0.2,
        "eval_strategy": "steps",
        "eval_steps": args.eval_steps,
        "save_strategy": "steps",
        "save_steps": args.save_steps,
        "save_total_limit": 2,
        "logging_steps": args.eval_steps,
        "learning_rate": 1e-4,
        "report_to": "none",
        "use_cpu": True,
        "dataloader_num_workers": 0,
        "disable_tqdm": True,
        "max_length": 512,
        "seed": 0,
    }
    argv = [str(part) for key, value in settings.items() for part in (f"--{key}", value)]
    recorder = RssRecorder()
    run_training(parse_config(argv), callbacks=[recorder])
    return recorder.samples


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--eval-steps", type=int, default=100)
    parser.add_argument("--save-steps", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=200, help="steps before the baseline window")
    parser.add_argument("--window", type=int, default=100, help="steps in each median window")
    parser.add_argument("--max-growth", type=float, default=0.02)
    parser.add_argument("--print-every", type=int, default=100)
    parser.add_argument("--out", default="bench/results/soak.json", help="JSON of every sample")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        samples = soak(Path(tmp), args)
    verdict = growth(samples, args.warmup, args.window)
    report = {
        "command": "python bench/soak.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads {os.environ.get('OMP_NUM_THREADS')}",
        "seconds": round(time.perf_counter() - started, 1),
        **verdict,
        "passed": verdict["growth"] < args.max_growth,
        "samples": samples,
    }
    print(f"{'step':>6} {'RSS MB':>8}")
    for step, rss in samples:
        if step % args.print_every == 0 or step == 1:
            print(f"{step:>6} {rss / 2**20:>8.1f}")
    print(
        f"RSS after warm-up: {verdict['start_bytes'] / 2**20:.1f} MB -> {verdict['end_bytes'] / 2**20:.1f} MB "
        f"({100 * verdict['growth']:+.2f} %, limit {100 * args.max_growth:.0f} %; "
        f"slope {verdict['slope_bytes_per_step'] / 1024:+.2f} KB/step): "
        f"{'PASS' if report['passed'] else 'FAIL'} in {report['seconds']:.0f} s"
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    sys.exit(0 if main()["passed"] else 1)
