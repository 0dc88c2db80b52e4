"""The shapes world: determinism, captions and questions against the drawn objects, vocabulary."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from chip.demo.world import (
    CLASSES,
    PARTNER,
    SYNONYMS,
    WORDS,
    WORLD_VOCABULARY,
    WorldConfig,
    make_scene,
    make_scenes,
    scene_seed,
)
from chip.evaluation.chair import extract_mentions

SCENES = make_scenes(WorldConfig(), "test", 300)


def test_same_seed_same_scene_pixel_for_pixel() -> None:
    a, b = make_scene("s/1"), make_scene("s/1")
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert (a.objects, a.caption, a.train_caption, a.questions) == (
        b.objects,
        b.caption,
        b.train_caption,
        b.questions,
    )


def test_different_seeds_and_splits_differ() -> None:
    images = {
        np.asarray(make_scene(scene_seed(0, split, i)).image).tobytes()
        for split in ("train", "eval")
        for i in range(20)
    }
    assert len(images) == 40


def test_scene_shape_and_object_counts() -> None:
    config = WorldConfig()
    for scene in SCENES:
        assert scene.image.size == (config.image_size, config.image_size) and scene.image.mode == "RGB"
        assert 1 <= len(scene.objects) <= config.max_objects
        anchors = [o for o in scene.objects if o.partner_of is None]
        assert len({o.cell for o in anchors}) == len(anchors)  # distinct cells
        for obj in scene.objects:
            if obj.partner_of is not None:
                assert obj.shape == PARTNER[scene.objects[obj.partner_of].shape]


def test_caption_mentions_exactly_the_drawn_objects() -> None:
    """Every object mentioned is drawn and every drawn object is mentioned, once per object."""
    for scene in SCENES:
        assert Counter(extract_mentions(scene.caption, WORLD_VOCABULARY)) == Counter(
            o.shape for o in scene.objects
        )


def test_training_caption_adds_only_labelled_absent_partners() -> None:
    noisy = 0
    for scene in SCENES:
        mentions = Counter(extract_mentions(scene.train_caption, WORLD_VOCABULARY))
        assert mentions == Counter(o.shape for o in scene.objects) + Counter(scene.noise)
        for shape in scene.noise:
            assert shape not in scene.classes
            assert any(PARTNER.get(o.shape) == shape for o in scene.objects)
        noisy += bool(scene.noise)
    assert 0.05 < noisy / len(SCENES) < 0.5  # the prior is there, and a minority


def test_no_caption_noise_means_faithful_training_captions() -> None:
    for i in range(50):
        scene = make_scene(f"clean/{i}", WorldConfig(caption_noise=0.0))
        assert scene.train_caption == scene.caption and scene.noise == ()


def test_caption_noise_leaves_the_faithful_caption_unchanged() -> None:
    for i in range(50):
        a, b = (
            make_scene(f"n/{i}", WorldConfig(caption_noise=0.0)),
            make_scene(f"n/{i}", WorldConfig(caption_noise=1.0)),
        )
        assert a.caption == b.caption and np.array_equal(np.asarray(a.image), np.asarray(b.image))


def test_question_labels() -> None:
    kinds: Counter[str] = Counter()
    for scene in SCENES:
        for q in scene.questions:
            assert q.label == (q.shape in scene.classes)
            assert q.text.split()[-2] == q.shape and extract_mentions(q.text, WORLD_VOCABULARY) == [q.shape]
            if q.kind == "adversarial":
                assert any(PARTNER.get(c) == q.shape for c in scene.classes)
            kinds[q.kind] += 1
        assert len({q.shape for q in scene.questions}) == len(scene.questions)
    assert set(kinds) == {"positive", "random", "popular", "adversarial"}


def test_synonyms_map_back_to_their_class() -> None:
    for shape, synonyms in SYNONYMS.items():
        for surface in (shape, *synonyms):
            assert extract_mentions(f"a red {surface} with a moon .", WORLD_VOCABULARY) == [shape, "moon"]
    assert WORLD_VOCABULARY.classes == frozenset(CLASSES)


def test_synonyms_appear_in_captions() -> None:
    words = Counter(w for scene in SCENES for w in scene.caption.split())
    assert words["box"] and words["crescent"] and words["sign"]


def test_every_caption_word_is_in_the_tokenizer_vocabulary() -> None:
    vocab = set(WORDS)
    for scene in SCENES:
        for text in (scene.caption, scene.train_caption, *(q.text for q in scene.questions)):
            assert set(text.split()) <= vocab, text


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="caption_noise"):
        WorldConfig(caption_noise=1.5)
    with pytest.raises(ValueError, match="multiple"):
        WorldConfig(image_size=50)
