"""`bench/bench_view.py` runs end to end on a small dataset and reports what docs/data.md quotes.

Only the harness is checked (every command runs, the baseline's ratio is 1, the JSON is written);
speed is measured by running the script, never by a test.
"""

from __future__ import annotations

import json

import pytest

from bench.bench_view import main


@pytest.mark.slow
def test_every_command_runs_and_is_reported(tmp_path):
    out = tmp_path / "bench.json"
    report = main(
        ["--rows", "120", "--repeats", "1", "--data_dir", str(tmp_path / "data"), "--out", str(out)]
    )
    assert json.loads(out.read_text()) == report
    results = report["results"]
    assert len(results) == 4 and results["check --image_check header"]["ratio_to_check_header"] == 1.0
    assert all(len(r["seconds"]) == 1 and r["median"] > 0 for r in results.values())
    assert sum(1 for line in (tmp_path / "data" / "train.jsonl").open()) == 120
    assert (tmp_path / "data" / "out" / "view.html").is_file()
