"""Per-scene counts, POPE by split, the base's question mix and its per-example loss, by hand."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from chip.demo.base import example_mean_loss, training_examples
from chip.demo.measure import pope_metrics, scene_counts
from chip.demo.world import CAPTION_PROMPT, WorldConfig, blank_image, make_scene, make_scenes


def _scene_with(classes: set[str]):
    """The first eval-split scene whose classes are exactly ``classes``."""
    return next(s for i in range(5000) if (s := make_scene(f"find/{i}")).classes == classes)


def test_scene_counts_by_hand():
    """A scene with only a circle: "a red circle and a blue moon ." names 2 objects, 1 absent;
    a second caption "a red ball ." names 1 (synonym), 0 absent -> (1, 3)."""
    scene = _scene_with({"circle"})
    assert scene_counts([scene], [["a red circle and a blue moon .", "a red ball ."]]) == [(1, 3)]


def test_pope_splits_hold_every_positive_and_their_own_negatives():
    """Answer "yes" to everything: each split's accuracy is positives / (positives + its negatives)."""
    scenes = make_scenes(WorldConfig(), "eval", 20)
    answers = [["yes ."] * len(s.questions) for s in scenes]
    result = pope_metrics(scenes, answers)
    for kind in ("random", "popular", "adversarial"):
        positives = sum(q.label for s in scenes for q in s.questions)
        negatives = sum(q.kind == kind for s in scenes for q in s.questions)
        assert result[kind]["accuracy"] == pytest.approx(positives / (positives + negatives))
        assert result[kind]["yes_ratio"] == 1.0


def test_questions_are_balanced_and_follow_the_training_caption():
    """With qa_fraction 1 about half the questions are positives; a "yes" to an absent class
    happens only for a partner the noisy training caption names."""
    scenes = make_scenes(WorldConfig(), "train", 600)
    questions, answers = training_examples(scenes, random.Random(0), qa_fraction=1.0)
    assert CAPTION_PROMPT not in questions
    yes = [a == "yes ." for a in answers]
    positive = [any(q.label and q.text == text for q in s.questions) for s, text in zip(scenes, questions)]
    assert 0.45 < np.mean(positive) < 0.55
    for scene, text, said_yes, pos in zip(scenes, questions, yes, positive):
        if said_yes and not pos:
            assert any(text == f"is there a {c} ?" or text == f"is there an {c} ?" for c in scene.noise)


def test_example_mean_loss_by_hand():
    """Two examples over a 2-word vocabulary with uniform logits: every token costs log 2, so the
    loss is log 2 whatever the answer lengths; a confident right token costs ~0, so an example with
    one such token and one uniform token averages log 2 / 2 and the batch (log 2 + log 2 / 2) / 2."""
    logits = torch.zeros(2, 4, 2)  # (B, T, V)
    labels = torch.tensor([[-100, 0, 1, -100], [-100, -100, 1, 0]])  # predicted from positions 0..2
    assert example_mean_loss(logits, labels).item() == pytest.approx(np.log(2))
    logits[0, 0] = torch.tensor([50.0, 0.0])  # first example's first answer token (label 0) is certain
    expected = (np.log(2) / 2 + np.log(2)) / 2
    assert example_mean_loss(logits, labels).item() == pytest.approx(expected, rel=1e-5)


def test_blank_image_keeps_the_background_noise():
    scene = make_scene("blank/1")
    same = np.asarray(scene.image) == np.asarray(blank_image("blank/1"))
    assert 0.5 < same.mean() < 1.0  # only the objects' pixels changed
