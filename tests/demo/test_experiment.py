"""The demo pipeline end to end at toy size, the lr choice and the report's words on hand-made numbers."""

from __future__ import annotations

import json

import pytest

from chip.demo.base import BaseModelConfig
from chip.demo.experiment import DemoConfig, choose_lr, run_experiment, summarise
from chip.demo.methods import METHODS, VARIANTS, method_settings
from chip.demo.report import answer, cost_sentence, write_report, write_results


def test_tiny_demo_end_to_end(tmp_path):
    """Base -> pairs -> lr grid on validation -> test -> a visual variant -> shortcut analysis -> report."""
    config = DemoConfig(
        base=BaseModelConfig.quick(vision_steps=5, steps=8, batch_size=8, eval_scenes=4),
        steps=2,
        num_pairs=16,
        batch_size=4,
        methods=("dpo", "dpo+visual", "chip-multi"),
        variants=("dpo+visual-separate",),
        seeds=(0,),
        lr_grid=(1e-4, 2e-4),
        val_scenes=3,
        test_scenes=4,
        eval_samples=1,
        resamples=50,
        analysis_scenes=4,
        onpolicy_methods=("dpo",),
        long_method="dpo",
        long_factor=2,
        long_every=2,
    )
    results = run_experiment(config, tmp_path / "out", tmp_path / "cache")
    write_results(results, tmp_path / "out")
    report = write_report(results, tmp_path / "out", "test")

    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    kept = saved["onpolicy_pairs_kept"]
    on_policy = {"dpo@onpolicy"} if kept else set()
    assert (
        set(saved["methods"])
        == {"base", "dpo", "dpo+visual", "dpo+visual-separate", "chip-multi"} | on_policy
    )
    # chip-multi trains on rows listing several rejected captions, and uses them all
    multi = [json.loads(line) for line in (tmp_path / "out" / "pairs-multi" / "pairs.jsonl").open()]
    assert (
        all(isinstance(row["rejected"], list) for row in multi) and max(len(r["rejected"]) for r in multi) > 1
    )
    runs = tmp_path / "out" / "runs"
    multi_run = next(runs.glob("chip-multi-lr*-seed0"))
    assert json.loads((multi_run / "method.json").read_text())["max_rejected"] == 0
    assert saved["onpolicy_pairs"]["pairs"]["kept"] == kept
    if kept:
        assert "dpo@onpolicy vs dpo" in saved["comparisons"]
    # every trained run against the base: CHAIR_i, recall and attribute accuracy, each with its CI
    assert set(saved["cost"]) == set(saved["methods"]) - {"base"}
    for cost in saved["cost"].values():
        assert set(cost) == {"chair_i", "recall", "attribute_accuracy"}
        assert cost["attribute_accuracy"]["low"] <= cost["attribute_accuracy"]["high"]
    assert [p["step"] for p in saved["long_run"]["points"]] == [0, 2, 4]
    assert saved["long_run"]["points"][0]["chair_i"] == saved["methods"]["base"]["chair_i"]
    assert set(saved["grids"]["dpo"]) == {"0.0001", "0.0002"}
    assert saved["chosen_lr"]["dpo+visual-separate"] == saved["chosen_lr"]["dpo+visual"]
    assert {"dpo+visual vs dpo", "dpo+visual-separate vs dpo+visual", "base vs dpo"} <= set(
        saved["comparisons"]
    )
    assert saved["comparisons"]["dpo+visual vs dpo"]["greedy"]["level"] == 0.95
    assert set(saved["shortcut"]["margins"]) == {"dpo", "dpo+visual"}
    assert 0.0 <= saved["shortcut"]["noise_probe_accuracy"] <= 1.0
    counts = json.loads((tmp_path / "out" / "scene_counts.json").read_text())
    assert len(counts["greedy/dpo/0"]) == 4  # one (hallucinated, mentions) pair per test scene
    for summary in saved["methods"].values():
        for key in ("chair_i", "recall", "pope_random", "pope_adversarial"):
            assert 0.0 <= summary[key] <= 1.0
    chosen = saved["chosen_lr"]["dpo"]
    state = json.loads(
        (tmp_path / "out" / "runs" / f"dpo-lr{chosen:g}-seed0" / "trainer_state.json").read_text()
    )
    assert state["global_step"] == 2
    text = report.read_text()
    assert "Smoke run" in text and "| dpo+visual |" in text and "noise" in text
    assert "at a cost of" in text and "## Longer training" in text and "| phase | wall time, s |" in text
    assert "±" not in text and "over the seeds" not in text  # one seed: nothing that needs several
    for plot in ("forest.png", "training_curves.png", "long_run.png"):
        assert (tmp_path / "out" / plot).stat().st_size > 0


def test_choose_lr_by_hand():
    """Recall floor 0.75: 3e-4 has the lowest CHAIR_i but recall 0.6, so 1e-4 (0.02) beats 5e-5 (0.05)."""
    grid = {
        5e-5: {"chair_i": 0.05, "recall": 0.9},
        1e-4: {"chair_i": 0.02, "recall": 0.8},
        3e-4: {"chair_i": 0.0, "recall": 0.6},
    }
    assert choose_lr(grid, 0.75) == 1e-4
    assert choose_lr(grid, 0.95) == 5e-5  # nothing keeps the floor: highest recall


def _diff(difference: float, low: float, high: float) -> dict:
    return {
        "difference": difference,
        "low": low,
        "high": high,
        "relative": None,
        "level": 0.95,
        "distinguishable": low > 0 or high < 0,
    }


def test_answer_follows_the_interval():
    """Seeds 0.10/0.20 average 0.15 (std 0.0707); the verdict comes from the CI, not the spread."""

    def run(chair_i: float) -> dict[str, float]:
        return {
            "chair_i": chair_i,
            "recall": 0.9,
            "pope_random": 0.9,
            "pope_popular": 0.85,
            "pope_adversarial": 0.7,
        }

    chip = summarise([run(0.10), run(0.20)])
    assert chip["chair_i"] == pytest.approx(0.15) and chip["chair_i_std"] == pytest.approx(
        0.0707107, rel=1e-5
    )
    results = {
        "methods": {"dpo": summarise([run(0.2), run(0.2)]), "chip": chip},
        "ranks_methods": True,
        "config": {"seeds": [0, 1], "lr_grid": [1e-4, 2e-4], "test_scenes": 1000},
        "comparisons": {
            "chip vs dpo": {"greedy": _diff(-0.05, -0.07, -0.01)},
            "dpo+segment vs dpo": {"greedy": _diff(-0.01, -0.03, 0.01)},
        },
    }
    text = answer(results)
    assert (
        "Does CHiP beat DPO here? **Yes**: greedy CHAIR_i 15.0% vs 20.0%, difference -5.0 [-7.0, -1.0]"
        in text
    )
    assert "dpo+segment -1.0 [-3.0, +1.0] (not distinguishable)" in text
    results["comparisons"]["chip vs dpo"]["greedy"] = _diff(-0.05, -0.11, 0.01)
    results["ranks_methods"] = False
    text = answer(results)
    assert text.startswith("**Smoke run: it cannot rank methods**")
    assert "**Not distinguishable**" in text


def test_methods_table_is_weights_only():
    assert METHODS["dpo"] == {"segment_weight": 0.0, "token_weight": 0.0, "visual_weight": 0.0}
    assert METHODS["chip"] == {}
    assert method_settings("chip-crop") == {"corruption": "crop"}
    assert method_settings("dpo+visual-separate") == {**METHODS["dpo+visual"], "combine": "separate"}
    assert all(parent in METHODS for parent, _ in VARIANTS.values())


def test_command_line_subsets():
    """A variant brings its core method (it reuses that lr); --seeds sets both seed lists."""
    from chip.demo.cli import parse_args

    _, config = parse_args(["--methods", "dpo,chip-random", "--seeds", "2", "--base", "quick"])
    assert config.methods == ("dpo", "chip") and config.variants == ("chip-random",)
    assert config.seeds == config.variant_seeds == (0, 1) and config.base.steps == 500
    _, quick = parse_args(["--quick"])
    assert not quick.ranks_methods and DemoConfig.full().ranks_methods
    with pytest.raises(SystemExit):
        parse_args(["--methods", "nonsense"])
    _, on_policy = parse_args(["--methods", "dpo,chip@onpolicy"])
    assert on_policy.methods == ("dpo",) and on_policy.onpolicy_methods == ("chip",)
    assert parse_args(["--methods", "dpo"])[1].onpolicy_methods == ()
    with pytest.raises(SystemExit):
        parse_args(["--methods", "chip-crop@onpolicy"])  # variants have no on-policy run


def test_cost_sentence_by_hand():
    """CHiP vs base: CHAIR_i 0.10 -> 0.06 (difference -0.04, CI [-0.06, -0.02]) is "lowered by 4.0
    [2.0, 6.0]"; attribute accuracy 0.90 -> 0.87 (-0.03 [-0.05, -0.01]) a cost of 3.0 [1.0, 5.0];
    recall -0.10 [-0.12, -0.08] a cost of 10.0 [8.0, 12.0]. An interval spanning 0 is marked n.d."""
    results = {
        "cost": {
            "chip": {
                "chair_i": _diff(-0.04, -0.06, -0.02),
                "attribute_accuracy": _diff(-0.03, -0.05, -0.01),
                "recall": _diff(-0.10, -0.12, -0.08),
            }
        }
    }
    assert cost_sentence(results, "chip") == (
        "CHiP lowered CHAIR_i by 4.0 [2.0, 6.0] points at a cost of 3.0 [1.0, 5.0] points of attribute "
        "accuracy and 10.0 [8.0, 12.0] of recall (against the base, 95% CIs; a negative cost is a gain)."
    )
    results["cost"]["chip"]["attribute_accuracy"] = _diff(0.01, -0.01, 0.03)
    assert "at a cost of -1.0 [-3.0, 1.0] n.d. points of attribute accuracy" in cost_sentence(results, "chip")
    assert cost_sentence(results, "dpo") is None


def test_training_curves_group_runs_by_margin_weights():
    """DPO and mDPO set λ = 0; CHiP and its on-policy run keep the default λ = 3; chip-anchored also
    multiplies by image-anchored weights: three different margins, three rows of panels."""
    from chip.demo.report import margin_kind

    assert margin_kind("dpo") == margin_kind("mdpo") == "λ = 0"
    assert margin_kind("chip") == margin_kind("chip@onpolicy") == margin_kind("dpo+segment") == "λ = 3"
    assert margin_kind("chip-anchored") == "λ = 3 × image-anchored weights"
