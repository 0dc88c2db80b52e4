"""Time a short `chip train` and `chip demo --quick` idle and beside one busy process, per thread setting.

    python bench/bench_threads.py                   # chip train: 6 steps of a tiny LLaVA, 3 repeats each
    python bench/bench_threads.py --demo            # also `chip demo --quick` (minutes per run)

Each command runs as a user runs it (a new process). "busy" starts one other process that keeps
one core busy (``python -c "while True: pass"``) for the duration of the command. The thread
settings: chip's own choice (no OMP_NUM_THREADS), ``OMP_NUM_THREADS=<cores>`` (torch's default,
what chip used before choosing), ``OMP_NUM_THREADS=1``. For `chip train` the figure is the
Trainer's ``train_runtime`` (the steps only, imports and loading excluded), the median of
--repeats runs; for the demo, the wall time of the whole command. Ratios are against torch's
default in the same condition. The machine's load average is printed with each row, so a
measurement on a shared machine says what else was running.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):  # run as a script: make `chip` importable from the checkout
    sys.path.insert(0, str(ROOT))
BUSY = [sys.executable, "-c", "while True: pass"]


def settings() -> dict[str, dict[str, str]]:
    """Each thread setting as the environment variables it sets."""
    from chip.training.threads import usable_cores

    cores = str(usable_cores())
    return {
        "chip's choice": {},
        "torch default": {"OMP_NUM_THREADS": cores},
        "torch default, passive wait": {"OMP_NUM_THREADS": cores, "OMP_WAIT_POLICY": "PASSIVE"},
        "1 thread": {"OMP_NUM_THREADS": "1"},
    }


def run(command: list[str], setting: dict[str, str], busy: bool, timeout: float | None = None) -> float:
    """Wall seconds of ``command`` under the environment ``setting`` (inf when it ran past ``timeout``)."""
    unset = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env["PYTHONPATH"] = str(ROOT)
    env.update(setting)
    other = subprocess.Popen(BUSY) if busy else None
    try:
        start = time.perf_counter()
        try:
            subprocess.run(command, env=env, check=True, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return float("inf")
        return time.perf_counter() - start
    finally:
        if other is not None:
            other.kill()
            other.wait()


def train_command(work: Path) -> tuple[list[str], Path]:
    from chip.testing import build_tiny_model
    from tests.train_helpers import train_args, write_pairs

    model = work / "model"
    if not model.exists():
        build_tiny_model("llava", model)
    data = write_pairs(work / "data", n=24)
    out = work / "out"
    args = train_args(model, data, out, max_steps=6, per_device_train_batch_size=4)
    return [sys.executable, "-m", "chip", "train", *args, "--overwrite_output_dir", "true"], out


def train_runtime(out: Path) -> float:
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    return next(entry["train_runtime"] for entry in history if "train_runtime" in entry)


def table(rows: list[tuple[str, str, float, float]], unit: str) -> None:
    base = {cond: secs for cond, name, secs, _ in rows if name == "torch default"}
    print(f"| condition | threads | {unit} | vs torch default | load avg (1 min) |")
    print("|---|---|---|---|---|")
    for cond, name, secs, load in rows:
        print(f"| {cond} | {name} | {secs:.2f} | {secs / base[cond]:.2f}× | {load:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--demo", action="store_true", help="also time `chip demo --quick`")
    parser.add_argument(
        "--demo_timeout", type=float, default=1200, help="seconds before a demo run is stopped"
    )
    parser.add_argument("--skip_train", action="store_true", help="time the demo only")
    parser.add_argument("--work_dir", type=Path, default=Path(tempfile.gettempdir()) / "chip-bench-threads")
    args = parser.parse_args()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    if not args.skip_train:
        command, out = train_command(args.work_dir)
        rows = []
        for busy in (False, True):
            for name, setting in settings().items():
                times = []
                for _ in range(args.repeats):
                    run(command, setting, busy)
                    times.append(train_runtime(out))
                rows.append(("busy" if busy else "idle", name, statistics.median(times), os.getloadavg()[0]))
                print(rows[-1], flush=True)
        table(rows, "train_runtime, s (6 steps)")
    if args.demo:
        demo_rows = []
        for busy in (False, True):
            for name, setting in settings().items():
                if name in ("1 thread", "torch default, passive wait"):  # 1 thread is the demo's own choice
                    continue
                folder = args.work_dir / f"demo-{int(busy)}-{len(demo_rows)}"
                shutil.rmtree(folder, ignore_errors=True)
                # a fresh cache each time: the base model is trained in every run, as on a first day
                demo = ["chip", "demo", "--quick", "--output_dir", str(folder / "out")]
                cmd = [sys.executable, "-m", *demo, "--cache_dir", str(folder / "cache")]
                secs = run(cmd, setting, busy, timeout=args.demo_timeout)
                demo_rows.append(("busy" if busy else "idle", name, secs, os.getloadavg()[0]))
                print(demo_rows[-1], flush=True)
        table(demo_rows, "wall time, s")


if __name__ == "__main__":
    main()
