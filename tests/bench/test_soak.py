"""The soak benchmark's 200-step twin: resident memory of `chip train` (full CHiP loss, live reference,
evaluation every 20 steps, a checkpoint every 50) is flat after warm-up.

The 2,000-step run is `python bench/soak.py` (docs/reliability.md). Here the least-squares slope
of RSS over steps 51-200, extrapolated to 2,000 steps, must stay under the benchmark's 2 % of the
post-warm-up RSS, and the end window under it directly. Slow: about a minute and a half of CPU.
"""

from __future__ import annotations

import json

import pytest

from bench.soak import growth, main


def test_growth_reads_windows_and_slope() -> None:
    """Steps 1-4 (warm-up 0, windows of 2): RSS 100, 102, 104, 106 -> start median(100, 102) = 101,
    end median(104, 106) = 105, growth 105/101 - 1 = 0.0396; slope exactly 2 bytes per step."""
    verdict = growth([(1, 100), (2, 102), (3, 104), (4, 106)], warmup=0, window=2)
    assert verdict["start_bytes"] == 101 and verdict["end_bytes"] == 105
    assert verdict["growth"] == pytest.approx(4 / 101)
    assert verdict["slope_bytes_per_step"] == pytest.approx(2.0)


@pytest.mark.slow
def test_two_hundred_steps_keep_memory_flat(tmp_path) -> None:
    out = tmp_path / "soak.json"
    report = main(
        ["--steps", "200", "--eval-steps", "20", "--save-steps", "50", "--warmup", "50", "--window", "50"]
        + ["--print-every", "50", "--out", str(out)]
    )
    assert [step for step, _ in report["samples"]] == list(range(1, 201))
    assert report["passed"], report["growth"]
    assert report["slope_bytes_per_step"] * 2000 < 0.02 * report["start_bytes"]
    assert json.loads(out.read_text())["samples"] == [list(sample) for sample in report["samples"]]
