"""Time `chip data view` on a large dataset against `chip data check` on the same files.

    python bench/bench_view.py                       # 100,000 rows, 100,000 distinct JPEGs (~2 min to build once)
    python bench/bench_view.py --rows 20000 --model  # also with a tiny LLaVA's processor (--model)

The dataset is written once into --data_dir (reused by later runs): JSON Lines rows with one
distinct 96×72 JPEG each, responses of ~300 characters, half of them with changed-segment spans,
and 1% bad rows (a missing image, identical responses). Each command runs as a user runs it (a
new process, imports included), interleaved with the others, --repeats times; the table shows
the median wall time and its ratio to `chip data check --image_check header`, which reads and
checks the rows exactly as the view does. `--pages 1-100` shows what the pictures of 5,000 rows cost.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):  # run as a script: make `chip` importable from the checkout
    sys.path.insert(0, str(ROOT))
WORDS = "a red cube sits left of a small blue ball near the green cone on grey floor".split()


def build_dataset(folder: Path, rows: int) -> Path:
    """Write (once) ``rows`` rows with one distinct JPEG each; returns the .jsonl path."""
    data = folder / "train.jsonl"
    if data.exists() and sum(1 for _ in data.open()) == rows:
        return data
    (folder / "img").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (72, 96, 3), dtype=np.uint8)
    with data.open("w") as out:
        for i in range(rows):
            name = f"img/{i:06d}.jpg"
            if not (folder / name).exists():
                Image.fromarray(np.roll(base, i % 96, axis=1)).save(folder / name, quality=85)
            chosen = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(60))
            rejected = chosen.replace("red", "purple", 1)
            row = {
                "id": str(i),
                "images": [name],
                "prompt": f"Describe scene {i} <b>in detail</b>.",
                "chosen": chosen,
                "rejected": rejected,
            }
            if i % 2 == 0 and "red" in chosen:
                start = chosen.index("red")
                row["chosen_segments"] = [[start, start + 3]]
                row["rejected_segments"] = [[start, start + 6]]
            if i % 100 == 1:
                row["images"] = [f"img/missing-{i}.jpg"]
            elif i % 100 == 2:
                row["rejected"] = chosen
            out.write(json.dumps(row) + "\n")
    return data


def run(command: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode not in (0, 1):  # `chip data check` exits 1 when rows are bad, as here
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return seconds


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument(
        "--data_dir", default=None, help="where the dataset is built (default: a temp folder)"
    )
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--model", action="store_true", help="also time --model with a tiny LLaVA")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)

    folder = Path(args.data_dir or Path(tempfile.gettempdir()) / f"chip-bench-view-{args.rows}")
    started = time.perf_counter()
    data = build_dataset(folder, args.rows)
    print(f"dataset {data}: {args.rows:,} rows (built or reused in {time.perf_counter() - started:.0f} s)")
    chip = [sys.executable, "-m", "chip"]
    page = str(folder / "out" / "view.html")
    commands = {
        "check --image_check header": [*chip, "data", "check", str(data), "--image_check", "header"],
        "check (decode, the default)": [*chip, "data", "check", str(data)],
        "view (default: pictures for pages 1-5)": [*chip, "data", "view", str(data), "--output", page],
        "view --pages 1-100": [*chip, "data", "view", str(data), "--output", page, "--pages", "1-100"],
    }
    if args.model:
        from chip.testing import build_tiny_model

        model = build_tiny_model("llava", folder / "tiny-llava")
        commands["view --model tiny-llava"] = [
            *commands["view (default: pictures for pages 1-5)"],
            "--model",
            str(model),
        ]
    times: dict[str, list[float]] = {name: [] for name in commands}
    for repeat in range(args.repeats):
        order = list(commands)[repeat % len(commands) :] + list(commands)[: repeat % len(commands)]
        for name in order:
            times[name].append(run(commands[name]))
    baseline = statistics.median(times["check --image_check header"])
    print(f"\n{'command':<42} {'median s':>9} {'vs check header':>16}")
    results = {}
    for name, values in times.items():
        median = statistics.median(values)
        results[name] = {"seconds": values, "median": median, "ratio_to_check_header": median / baseline}
        print(f"{name:<42} {median:>9.1f} {median / baseline:>15.2f}x")
    report = {"rows": args.rows, "cpus": os.cpu_count(), "repeats": args.repeats, "results": results}
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()
