"""The demo pipeline end to end at toy size, and the report's arithmetic on hand-made numbers."""

from __future__ import annotations

import json

import pytest

from chip.demo.base import BaseModelConfig
from chip.demo.experiment import METHODS, DemoConfig, compare, run_experiment, summarise
from chip.demo.report import verdict, write_report, write_results


def test_tiny_demo_end_to_end(tmp_path):
    """Base (a few steps) -> pairs -> DPO and CHiP through `run_training` -> eval -> report files."""
    config = DemoConfig(base=BaseModelConfig.quick(vision_steps=5, steps=8, batch_size=8, eval_scenes=4), steps=3,
                        num_pairs=24, batch_size=4, eval_scenes=4, eval_samples=2, pope_scenes=2)  # fmt: skip
    results = run_experiment(config, tmp_path / "out", tmp_path / "cache")
    write_results(results, tmp_path / "out")
    report = write_report(results, tmp_path / "out", "test")

    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(saved["methods"]) == {"base", "dpo", "chip"}
    for summary in saved["methods"].values():
        for key in ("chair_i", "chair_s", "recall"):
            assert 0.0 <= summary[key] <= 1.0
    for run in ("dpo-seed0", "chip-seed0"):
        state = json.loads((tmp_path / "out" / "runs" / run / "trainer_state.json").read_text())
        assert state["global_step"] == 3
    text = report.read_text()
    assert "| chip |" in text and "52.7%" in text
    assert (tmp_path / "out" / "hallucination.png").stat().st_size > 0
    assert (tmp_path / "out" / "training_curves.png").stat().st_size > 0
    # a second run reuses the cached base and finished runs
    again = run_experiment(config, tmp_path / "out", tmp_path / "cache")
    assert again["methods"]["dpo"]["chair_i"] == pytest.approx(results["methods"]["dpo"]["chair_i"])


def test_summarise_and_compare_by_hand():
    """Seeds chair_i 0.10 and 0.20 -> mean 0.15, sample std 0.0707; DPO 0.2 vs CHiP 0.15 -> 25% reduction."""

    def run(chair_i: float, chair_s: float) -> dict[str, float]:
        return {"chair_i": chair_i, "chair_s": chair_s, "recall": 0.9,
                "sampled_chair_i": chair_i, "sampled_chair_s": chair_s, "sampled_recall": 0.9}  # fmt: skip

    chip = summarise([run(0.10, 0.2), run(0.20, 0.2)])
    assert chip["chair_i"] == pytest.approx(0.15)
    assert chip["chair_i_std"] == pytest.approx(0.0707107, rel=1e-5)
    dpo = summarise([run(0.2, 0.4), run(0.2, 0.4)])
    result = compare({"dpo": dpo, "chip": chip})
    assert result["chair_i_reduction"] == pytest.approx(0.25)
    assert result["chair_s_reduction"] == pytest.approx(0.5)
    text = verdict({"methods": {"dpo": dpo, "chip": chip}, "comparison": result})
    assert text.startswith("Under greedy decoding (the benchmarks' default), CHiP hallucinated less than DPO")
    assert (
        "within the seed spread (7.1 points)" in text
    )  # a 5-point gain with a 7-point spread is not conclusive


def test_methods_table_is_weights_only():
    assert METHODS["dpo"] == {"segment_weight": 0.0, "token_weight": 0.0, "visual_weight": 0.0}
    assert METHODS["chip"] == {}
    assert METHODS["chip-crop"] == {"corruption": "crop"}
