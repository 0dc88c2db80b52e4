"""`bench/bench_ranks.py` runs both sides (one process, an `accelerate launch` of two) and reports
their rates; speed is measured by running the script, never by a test (slow: four launches)."""

from __future__ import annotations

import json

import pytest

from bench.bench_ranks import main


@pytest.mark.slow
def test_both_sides_run_and_are_reported(tmp_path, capsys) -> None:
    out = tmp_path / "bench_ranks.json"
    report = main(
        ["--tasks", "eval", "--examples", "3", "--max-new-tokens", "2", "--repeats", "1", "--out", str(out)]
    )
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    assert set(report["runs"]) == {"eval/2/1", "eval/2/2", "eval/3/1", "eval/3/2"}
    result = report["summary"]["eval"]
    assert result["ratio_end_to_end"] == pytest.approx(
        result["two_processes"]["examples_per_second"] / result["one_process"]["examples_per_second"]
    )
    assert all(run["seconds"] > 0 for runs in report["runs"].values() for run in runs)
    assert "| eval | 2 |" in capsys.readouterr().out
