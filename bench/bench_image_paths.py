"""Time image-path resolution over a dataset's rows: the root resolved once (now) or once per row (before).

    python bench/bench_image_paths.py                  # the 100,000 rows bench/bench_view.py builds
    python bench/bench_image_paths.py --rows 20000

Both ways give the same paths (checked here). The baseline is what `chip data check` / `chip data
view` did until the image root was resolved once per dataset: `ImagePathResolver(root)` built for
every row, which resolves the root (a stat of every folder above it) each time. Each way runs
--repeats times, interleaved; the table shows medians and the ratio to the baseline.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):  # run as a script: make `chip` importable from the checkout
    sys.path.insert(0, str(ROOT))

from bench.bench_view import build_dataset  # noqa: E402
from chip.data.images import ImagePathResolver  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--data_dir", default=None, help="where bench_view's dataset is (built if missing)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    folder = Path(args.data_dir or Path(tempfile.gettempdir()) / f"chip-bench-view-{args.rows}")
    data = build_dataset(folder, args.rows)
    paths = [json.loads(line)["images"][0] for line in data.open()]
    root = data.parent

    def per_row() -> list[Path]:
        return [ImagePathResolver(root)(raw) for raw in paths]

    def once() -> list[Path]:
        resolve = ImagePathResolver(root)
        return [resolve(raw) for raw in paths]

    assert per_row() == once(), "the two ways resolve different paths"
    times: dict[str, list[float]] = {"root resolved per row (before)": [], "root resolved once (now)": []}
    for _ in range(args.repeats):
        for name, run in zip(times, (per_row, once), strict=True):
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    baseline = statistics.median(times["root resolved per row (before)"])
    print(f"{len(paths):,} image paths, medians of {args.repeats}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:34s} {median:7.2f} s  {median / baseline:5.2f}x")


if __name__ == "__main__":
    main()
