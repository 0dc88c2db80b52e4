"""Per-scene counts, POPE by split, the base's question mix and its per-example loss, by hand."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from chip.demo.base import example_mean_loss, training_examples
from chip.demo.measure import attribute_metrics, pope_metrics, recall_counts, scene_counts
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


def test_attribute_questions_by_hand():
    """Scene "find/…" holding a star with its moon partner and a lone circle elsewhere: the star and
    the circle are anchors (colour, cell, "large"), the moon a partner ("small", no colour or cell
    question), and there are two large objects. The answers are read off the drawn objects."""
    scene = next(
        s
        for i in range(5000)
        if (s := make_scene(f"find/{i}")).classes == {"star", "moon", "circle"}
        and [(o.shape, o.partner_of is None) for o in s.objects if o.shape != "circle"]
        == [("star", True), ("moon", False)]
    )
    star = next(o for o in scene.objects if o.shape == "star")
    circle = next(o for o in scene.objects if o.shape == "circle")
    rows, cols = ("top", "middle", "bottom"), ("left", "centre", "right")
    expected = {
        ("what colour is the circle ?", circle.colour, "colour"),
        ("where is the circle ?", f"{rows[circle.cell // 3]} {cols[circle.cell % 3]}", "position"),
        ("is the circle large or small ?", "large", "size"),
        ("what colour is the star ?", star.colour, "colour"),
        ("where is the star ?", f"{rows[star.cell // 3]} {cols[star.cell % 3]}", "position"),
        ("is the star large or small ?", "large", "size"),
        ("is the moon large or small ?", "small", "size"),
        ("how many large objects ?", "two", "count"),
    }
    assert {(q.text, q.answer, q.kind) for q in scene.attributes} == expected


def test_attribute_metrics_and_recall_counts_by_hand():
    """Lone circle: questions colour, position, size, count (4). Answers: right colour with " .",
    a wrong cell, "large ." right, "two ." wrong -> 2 of 4 right: accuracy 0.5, per kind 1, 0, 1, 0,
    counts [(2, 4)]. Recall of "a red ball ." (synonym of circle) and "a blue moon ." over the one
    class: (1 + 0, 1 + 1) = (1, 2)."""
    scene = _scene_with({"circle"})
    by_kind = {q.kind: q for q in scene.attributes}
    assert set(by_kind) == {"colour", "position", "size", "count"}
    wrong_cell = "top left" if by_kind["position"].answer != "top left" else "bottom right"
    answers = {
        "colour": f"{by_kind['colour'].answer} .",
        "position": wrong_cell,
        "size": "large .",
        "count": "two .",
    }
    result = attribute_metrics([scene], [[answers[q.kind] for q in scene.attributes]])
    assert result["accuracy"] == 0.5 and result["questions"] == 4 and result["counts"] == [(2, 4)]
    assert (result["colour"], result["position"], result["size"], result["count"]) == (1.0, 0.0, 1.0, 0.0)
    assert recall_counts([scene], [["a red ball .", "a blue moon ."]]) == [(1, 2)]


def test_attribute_questions_train_the_base():
    """attribute_fraction 1 with qa_fraction 0: every example is one of its scene's attribute questions."""
    scenes = make_scenes(WorldConfig(), "train", 50)
    questions, answers = training_examples(scenes, random.Random(0), qa_fraction=0.0, attribute_fraction=1.0)
    for scene, text, answer in zip(scenes, questions, answers):
        assert (text, answer) in {(q.text, f"{q.answer} .") for q in scene.attributes}
