"""On-policy pairs: sampled captions judged against the scene's truth."""

from __future__ import annotations

import json
import random
from pathlib import Path

from chip.data.cli import check_main
from chip.demo.base import BaseModelConfig, train_base_model
from chip.demo.onpolicy import judge_pair, write_on_policy_pairs
from chip.demo.pairs import changed_spans
from chip.demo.world import WORLD_VOCABULARY, WorldConfig, make_scene
from chip.evaluation.chair import extract_mentions


def _scene_with_lone_star():
    for i in range(1000):
        scene = make_scene(f"lone/{i}")
        if scene.classes == {"star"}:
            return scene
    raise AssertionError("no single-star scene in 1000 draws")


def test_judge_prefers_a_right_sample_and_rejects_a_hallucinating_one() -> None:
    scene = _scene_with_lone_star()
    colour = scene.objects[0].colour
    right, wrong = f"a {colour} star .", f"a {colour} star with a moon ."
    assert judge_pair(scene, [wrong, right, "a blue heart ."], random.Random(0))[0] == right
    chosen, rejected = judge_pair(scene, [wrong, "a blue circle ."], random.Random(0))
    assert chosen == scene.caption and rejected in {wrong, "a blue circle ."}
    assert judge_pair(scene, [right, right], random.Random(0)) is None


def test_word_diff_spans_by_hand() -> None:
    chosen, rejected = "a red star and a blue box .", "a red star with a moon and a green box ."
    c, r = changed_spans(chosen, rejected)
    assert [chosen[s:e] for s, e in c] == ["star", "blue"]
    assert [rejected[s:e] for s, e in r] == ["star with a moon", "green"]


def test_write_on_policy_pairs(tmp_path: Path) -> None:
    tiny = BaseModelConfig(
        vision_hidden=16, text_hidden=32, vision_layers=1, text_layers=1, heads=2,
        vision_steps=1, steps=2, warmup_steps=1, batch_size=4, eval_scenes=2, eval_samples=1,
    )  # fmt: skip
    model_path = train_base_model(tiny, tmp_path / "cache", device="cpu", progress=False)
    path = write_on_policy_pairs(
        model_path, WorldConfig(), tmp_path / "pairs", count=8, samples=2, device="cpu"
    )
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows, "an untrained model should hallucinate somewhere in 16 samples"
    assert check_main([str(path)]) == 0
    for row in rows:
        scene_truth = set(extract_mentions(row["chosen"], WORLD_VOCABULARY))
        assert set(extract_mentions(row["rejected"], WORLD_VOCABULARY)) - scene_truth
