"""On-policy pairs: sampled captions judged against the scene's truth, through `chip pairs`."""

from __future__ import annotations

import json
from pathlib import Path

from chip.data.cli import check_main
from chip.demo.base import BaseModelConfig, train_base_model
from chip.demo.onpolicy import world_annotator, write_on_policy_pairs
from chip.demo.world import WORLD_VOCABULARY, WorldConfig, make_scene, make_scenes
from chip.evaluation.chair import extract_mentions
from chip.pairs.pairing import Candidate, PairingRules, pair_item
from chip.segments import changed_spans


def _scene_with_lone_star():
    for i in range(1000):
        scene = make_scene(f"lone/{i}")
        if scene.classes == {"star"}:
            return scene
    raise AssertionError("no single-star scene in 1000 draws")


def test_world_annotator_counts_marks_and_pairs_by_hand() -> None:
    """A lone star. "a C star with a moon ." names an absent moon: 1 hallucination, coverage 1 (the
    star), span "moon". "a blue heart ." names an absent heart and misses the star: 1 hallucination,
    coverage 0. "a C star ." is right: 0 hallucinations, coverage 1, so it is chosen against both
    (coverage 1 >= 1 and >= 0). The moon pair ranks first: equal gaps (1), and its texts are closer
    (difflib ratio 2*4/(4+7) = 0.73 against 2*2/(4+4) = 0.5 for "a blue heart .")."""
    scene = _scene_with_lone_star()
    colour = scene.objects[0].colour
    right, wrong, other = f"a {colour} star .", f"a {colour} star with a moon .", "a blue heart ."
    annotator = world_annotator({"s": scene})
    found = annotator.annotate_text(wrong, scene.classes)
    assert (found.hallucinations, found.coverage, found.hallucinated) == (1, 1, ("moon",))
    assert [wrong[s:e] for s, e in found.spans] == ["moon"]
    heart = annotator.annotate_text(other, scene.classes)
    assert (heart.hallucinations, heart.coverage) == (1, 0)

    candidates = [
        Candidate(k, text, annotator.annotate_text(text, scene.classes))
        for k, text in enumerate([wrong, right, other])
    ]
    pairs, reason = pair_item("s", candidates, PairingRules(pairs_per_prompt=2))
    assert reason is None
    assert [(p.chosen.text, p.rejected.text) for p in pairs] == [(right, wrong), (right, other)]
    same = [Candidate(k, right, annotator.annotate_text(right, scene.classes)) for k in range(2)]
    assert pair_item("s", same, PairingRules()) == ([], "no_hallucination")


def test_word_diff_spans_by_hand() -> None:
    chosen, rejected = "a red star and a blue box .", "a red star with a moon and a green box ."
    c, r = changed_spans(chosen, rejected)
    assert [chosen[s:e] for s, e in c] == ["star", "blue"]
    assert [rejected[s:e] for s, e in r] == ["star with a moon", "green"]


def test_write_on_policy_pairs(tmp_path: Path) -> None:
    tiny = BaseModelConfig(
        vision_hidden=16,
        text_hidden=32,
        vision_layers=1,
        text_layers=1,
        heads=2,
        vision_steps=1,
        steps=2,
        warmup_steps=1,
        batch_size=4,
        eval_scenes=2,
        eval_samples=1,
    )
    model_path = train_base_model(tiny, tmp_path / "cache", device="cpu", progress=False)
    path = write_on_policy_pairs(
        model_path, WorldConfig(), tmp_path / "pairs", count=8, samples=6, device="cpu"
    )
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    report = json.loads((tmp_path / "pairs" / "pairs_report.json").read_text())
    assert report["samples"]["drawn"] == 48 and report["pairs"]["kept"] == len(rows)
    assert sum(report["dropped"]["prompts"].values()) + report["pairs"]["prompts_with_pairs"] == 8
    assert rows, "an untrained model should hallucinate somewhere in 48 samples, and sometimes less"
    assert check_main([str(path)]) == 0
    scenes = {f"onpolicy-{i}": scene for i, scene in enumerate(make_scenes(WorldConfig(), "onpolicy", 8))}
    for row in rows:
        truth = scenes[row["source_id"]].classes
        wrong = [m for m in extract_mentions(row["rejected"], WORLD_VOCABULARY) if m not in truth]
        marked = [
            m
            for s, e in row["rejected_segments"]
            for m in extract_mentions(row["rejected"][s:e], WORLD_VOCABULARY)
        ]
        assert marked == wrong and len(wrong) >= 1
        chosen_wrong = [m for m in extract_mentions(row["chosen"], WORLD_VOCABULARY) if m not in truth]
        assert len(chosen_wrong) < len(wrong)
