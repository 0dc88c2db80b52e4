"""`bench/bench_pairs.py` runs end to end on a small workload and reports both sides and their ratio.

Only the harness is checked (both sides draw the same number of samples, the JSON holds what
docs/performance.md quotes); speed is measured by running the script, never by a test.
"""

from __future__ import annotations

import json

from bench.bench_pairs import main


def test_both_sides_run_and_are_reported(tmp_path, capsys) -> None:
    out = tmp_path / "bench_pairs.json"
    report = main(
        [
            "--images",
            "2",
            "--samples",
            "2",
            "--batch-size",
            "2",
            "--max-new-tokens",
            "3",
            "--repeats",
            "1",
            "--out",
            str(out),
        ]
    )
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    assert report["samples"] == {"plain_generate": 4, "chip_pairs": 4}
    rates = report["samples_per_second"]
    assert report["ratio_chip_to_plain"] == rates["chip_pairs"] / rates["plain_generate"] > 0
    assert "(b) chip pairs" in capsys.readouterr().out
