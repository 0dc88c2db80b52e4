"""`bench/bench_step.py` runs end to end on a tiny shape and reports what docs/performance.md quotes.

Only the harness is checked here (every variant builds and steps, ratios and memory are filled
in, the JSON is written); speed is measured by running the script, never by a test. The run is
sequential and bf16, the code path of ``--preset llava-7b`` on a GPU, so that path is exercised
on every machine.
"""

from __future__ import annotations

import json
import math

from bench.bench_step import main
from bench.variants import VARIANTS


def test_every_variant_runs_and_is_reported(tmp_path, capsys):
    out = tmp_path / "bench.json"
    report = main(
        [
            "--preset",
            "smoke",
            "--variants",
            ",".join(VARIANTS),
            "--warmup",
            "1",
            "--repeats",
            "1",
            "--sequential",
            "--dtype",
            "bfloat16",
            "--out",
            str(out),
        ]
    )
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    assert report["order"] == "sequential" and report["dtype"] == "bfloat16"
    assert set(report["variants"]) == set(VARIANTS)
    for key, result in report["variants"].items():
        assert len(result["step_seconds"]) == 1 and all(math.isfinite(loss) for loss in result["losses"]), key
        assert result["peak_bytes"] > result["resident_bytes"] > 0, key
        assert result["time_ratio_to_trl"] > 0 and result["memory_ratio_to_trl_completion"] > 0, key
    assert report["variants"]["trl"]["time_ratio_to_trl"] == 1.0
    error = report["topk_kl_error"]
    # the bucketed KL is a lower bound of the exact one, so its relative error lies in [0, 1]
    assert error["top_k"] == 64
    for model in ("benchmark_model", "sharpened"):
        assert 0.0 <= error[model]["token_rel_error_mean"] <= error[model]["token_rel_error_max"] <= 1.0, (
            model
        )
    assert abs(error["sharpened"]["reference_entropy_mean_nats"] - 2.0) < 0.05
    table = capsys.readouterr().out
    assert "(a) TRL DPOTrainer, plain DPO" in table and "(d) chip CHiP, precomputed reference" in table
