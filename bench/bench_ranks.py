"""Examples/s of `chip data precompute` and `chip eval --model` on 2 processes against 1, same work.

    python bench/bench_ranks.py                                   # CPU default: ~15 wall-minutes here
    python bench/bench_ranks.py --examples 256 --repeats 3 --config configs/accelerate/ddp.yaml

Each command runs as a user runs it: (a) one process, ``python -m chip ...``; (b) ``accelerate
launch --num_processes 2 -m chip ...`` with the CPU config (gloo), each rank splitting the work
by example id and the main process merging. Every process gets one torch thread
(``OMP_NUM_THREADS=1``), so (b) uses two cores where (a) uses one. The model is a small LLaVA of
random weights (a 32k vocabulary, as LLaVA's; see MODEL_SIZE); precompute scores ``--examples``
pairs with the reference top-k for the KL; eval answers ``--examples`` POPE questions greedily,
``--max-new-tokens`` tokens each.

Times are wall-clock from starting the command to its exit, so they include importing torch,
loading the model and (b)'s process group: a run on ``--startup-examples`` examples measures that
fixed part, and the "marginal" rate is (examples - startup examples) / (time - startup time).
Runs are interleaved (a b a b ...) so that load from other processes hits both alike; the table
gives medians, the ratios (b)/(a) from the same run, and the load average around each run, which
says how busy the machine was. Writes every time as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` and `chip` importable from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from chip.testing import build_tiny_model  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CPU_CONFIG = REPO / "configs" / "accelerate" / "ddp_cpu.yaml"
# LLaVA-1.5's layout at a size a CPU runs in seconds; the 32k vocabulary makes the head and top-k real.
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
TASKS = ("precompute", "eval")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--examples", type=int, default=64, help="pairs to score / questions to answer")
    parser.add_argument(
        "--startup-examples", type=int, default=2, help="the run that measures the fixed cost"
    )
    parser.add_argument("--batch-size", type=int, default=4, help="examples per forward / generate call")
    parser.add_argument("--max-new-tokens", type=int, default=16, help="eval: tokens per answer")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of each side, interleaved")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--config", default=str(CPU_CONFIG), help="accelerate config of the 2-process side")
    parser.add_argument("--out", default="bench/results/bench_ranks.json", help="JSON of every run")
    return parser.parse_args(argv)


def build_inputs(folder: Path, n: int) -> dict[str, Path]:
    """The model, n preference pairs and n POPE questions over n noise images, in ``folder``."""
    model = build_tiny_model("llava", folder / "model", **MODEL_SIZE)
    images = folder / "images"
    images.mkdir()
    pairs, questions = [], []
    for k in range(n):
        pixels = np.random.default_rng(k).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / f"{k:04d}.png")
        prompt = "What is in the image?" + " Answer briefly." * (k % 3)  # unequal lengths: padded batches
        pairs.append(
            {
                "id": f"ex{k}",
                "images": [f"images/{k:04d}.png"],
                "prompt": prompt,
                "chosen": f"a picture of noise number {k} .",
                "rejected": f"a dog and a cat next to a red car number {k} .",
            }
        )
        questions.append(
            {
                "question_id": k,
                "image": f"{k:04d}.png",
                "text": "Is there a dog in the image?",
                "label": "yes" if k % 2 else "no",
                "category": "random",
            }
        )
    files = {"model": model, "images": images}
    for name, rows, count in (("pairs", pairs, n), ("questions", questions, n)):
        files[name] = folder / f"{name}.jsonl"
        files[name].write_text("".join(json.dumps(row) + "\n" for row in rows[:count]))
    return files


def chip_args(task: str, files: dict[str, Path], out: Path, n: int, args: argparse.Namespace) -> list[str]:
    """The `chip` command line of one run on the first ``n`` examples (``n`` rows of its input)."""
    if task == "precompute":
        data = files["pairs"].with_name(f"pairs-{n}.jsonl")  # beside images/, which its rows name
        data.write_text("".join(files["pairs"].read_text().splitlines(keepends=True)[:n]))
        return [
            *("data", "precompute", "--model_name_or_path", str(files["model"]), "--dataset", str(data)),
            *("--output_dir", str(out / "run"), "--reference_cache", str(out / "cache"), "--use_cpu", "true"),
            *("--per_device_eval_batch_size", str(args.batch_size), "--report_to", "none"),
        ]
    return [
        *("eval", "--bench", "pope", "--model", str(files["model"]), "--questions", str(files["questions"])),
        *("--image-root", str(files["images"]), "--limit", str(n), "--batch-size", str(args.batch_size)),
        *("--max-new-tokens", str(args.max_new_tokens), "--output", str(out / "metrics.json")),
    ]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def timed_run(command_args: list[str], processes: int, config: str) -> dict[str, Any]:
    """Run ``chip ARGS`` in one process or launched on ``processes``; wall seconds and load averages."""
    if processes == 1:
        command = [sys.executable, "-m", "chip", *command_args]
    else:
        command = [
            *(sys.executable, "-m", "accelerate.commands.launch", "--config_file", config),
            *("--num_processes", str(processes), "--main_process_port", str(_free_port()), "-m", "chip"),
            *command_args,
        ]
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": path}
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return {"seconds": seconds, "load_before": load_before, "load_after": os.getloadavg()[0]}


def measure(files: dict[str, Path], folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {}
    for repeat in range(args.repeats):
        for task in args.tasks:
            for n in (args.startup_examples, args.examples):
                for processes in (1, 2):
                    out = folder / f"{task}-{n}-{processes}-{repeat}"
                    run = timed_run(chip_args(task, files, out, n, args), processes, args.config)
                    runs.setdefault(f"{task}/{n}/{processes}", []).append(run)
                    print(f"{task} {n} examples, {processes} process(es): {run['seconds']:.1f} s", flush=True)
    return runs


def summarise(runs: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> dict[str, Any]:
    """Median seconds, end-to-end and marginal examples/s per side, and the 2/1 ratios."""
    summary: dict[str, Any] = {}
    for task in args.tasks:
        rows = {}
        for processes in (1, 2):
            full = statistics.median(r["seconds"] for r in runs[f"{task}/{args.examples}/{processes}"])
            startup = statistics.median(
                r["seconds"] for r in runs[f"{task}/{args.startup_examples}/{processes}"]
            )
            rows[processes] = {
                "seconds": full,
                "startup_seconds": startup,
                "examples_per_second": args.examples / full,
                # None when the small run took longer than the full one: load from elsewhere, not work
                "marginal_examples_per_second": (args.examples - args.startup_examples) / (full - startup)
                if full > startup
                else None,
            }
        marginal = [rows[n]["marginal_examples_per_second"] for n in (1, 2)]
        summary[task] = {
            "one_process": rows[1],
            "two_processes": rows[2],
            "ratio_end_to_end": rows[2]["examples_per_second"] / rows[1]["examples_per_second"],
            "ratio_marginal": marginal[1] / marginal[0] if None not in marginal else None,
        }
    return summary


def render(summary: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [
        f"{args.examples} examples (startup measured on {args.startup_examples}); medians of {args.repeats}",
        "| command | processes | seconds | startup s | examples/s | marginal examples/s |",
        "|---|---|---|---|---|---|",
    ]
    for task, result in summary.items():
        for label, key in (("1", "one_process"), ("2", "two_processes")):
            row = result[key]
            lines.append(
                f"| {task} | {label} | {row['seconds']:.1f} | {row['startup_seconds']:.1f} | "
                f"{row['examples_per_second']:.2f} | {_rate(row['marginal_examples_per_second'])} |"
            )
    for task, result in summary.items():
        lines.append(
            f"{task}: 2 processes / 1 = {result['ratio_end_to_end']:.2f}x end to end, "
            f"{_rate(result['ratio_marginal'])}x marginal"
        )
    return "\n".join(lines) + "\n"


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = build_inputs(folder, args.examples)
        runs = measure(files, folder, args)
    summary = summarise(runs, args)
    report = {
        "command": "python bench/bench_ranks.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "model": MODEL_SIZE,
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "threads_per_process": 1,
        },
        "runs": runs,
        "summary": summary,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(render(summary, args), end="")
    return report


if __name__ == "__main__":
    main()
