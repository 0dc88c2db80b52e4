"""The base model: a tiny training run that saves, reloads through the Auto classes, generates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from chip.demo import base
from chip.demo.base import SUMMARY_FILE, BaseModelConfig, lr_at, train_base_model
from chip.demo.tiny_vlm import PromptEncoder, build_processor, pixel_values, prompt_text
from chip.demo.world import CAPTION_PROMPT, WorldConfig, make_scenes

TINY = BaseModelConfig(
    vision_hidden=16,
    vision_layers=1,
    text_hidden=32,
    text_layers=1,
    heads=2,
    vision_steps=2,
    steps=3,
    warmup_steps=1,
    batch_size=4,
    eval_scenes=3,
    eval_samples=2,
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return train_base_model(TINY, tmp_path_factory.mktemp("cache"), device="cpu", progress=False)


def test_saved_model_reloads_and_generates(trained: Path) -> None:
    model = AutoModelForImageTextToText.from_pretrained(trained)
    processor = AutoProcessor.from_pretrained(trained)
    scene = make_scenes(WorldConfig(), "eval", 1)[0]
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": CAPTION_PROMPT}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(images=scene.image, text=text, return_tensors="pt")
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == 9  # 3x3 patches of 16 px
    output = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    prompt_length = inputs["input_ids"].shape[1]
    assert output.shape[1] > prompt_length
    # greedy decoding's first token is the argmax of the reloaded model's own forward pass
    with torch.no_grad():
        first = model(**inputs).logits[0, -1].argmax()
    assert int(output[0, prompt_length]) == int(first)


def test_summary_records_config_and_measurements(trained: Path) -> None:
    summary = json.loads((trained / SUMMARY_FILE).read_text())
    assert summary["hash"] == TINY.hash() and trained.name == f"base-{TINY.hash()}"
    for decoding in ("greedy", "sampled"):
        assert {"chair_i", "chair_s", "recall", "partner_rate"} <= set(summary["measurements"][decoding])
    assert summary["measurements"]["sampled"]["captions"] == 3 * 2


def test_cached_model_is_reused(trained: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base, "_train", lambda *a, **k: pytest.fail("retrained a cached model"))
    assert train_base_model(TINY, trained.parent, progress=False) == trained


def test_config_hash_covers_world_model_and_training() -> None:
    hashes = {
        TINY.hash(),
        BaseModelConfig(**{**TINY.__dict__, "steps": 4}).hash(),
        BaseModelConfig(**{**TINY.__dict__, "text_hidden": 64}).hash(),
        BaseModelConfig(**{**TINY.__dict__, "world": WorldConfig(caption_noise=0.2)}).hash(),
    }
    assert len(hashes) == 4
    assert BaseModelConfig.quick().steps < BaseModelConfig.full().steps


def test_fast_pixels_match_the_image_processor() -> None:
    processor = build_processor(48, 16)
    images = [s.image for s in make_scenes(WorldConfig(), "eval", 4)]
    expected = processor.image_processor(images, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(pixel_values(images), expected)


def test_training_batch_labels_only_the_answer() -> None:
    processor = build_processor(48, 16)
    scenes = make_scenes(WorldConfig(), "eval", 2)
    batch = PromptEncoder(processor, 48).batch(
        [s.image for s in scenes], [CAPTION_PROMPT] * 2, [s.caption for s in scenes]
    )
    prompt_len = len(
        processor(images=scenes[0].image, text=prompt_text(processor, CAPTION_PROMPT))["input_ids"][0]
    )
    for row, scene in zip(batch["labels"], scenes):
        answer = row[row != -100]
        assert (row[:prompt_len] == -100).all()
        assert processor.tokenizer.decode(answer, skip_special_tokens=True) == scene.caption
        assert answer[-1] == processor.tokenizer.eos_token_id


def test_learning_rate_schedule() -> None:
    config = BaseModelConfig(steps=100, warmup_steps=10, lr=1.0, min_lr_ratio=0.1)
    assert lr_at(0, config) == pytest.approx(0.1) and lr_at(9, config) == pytest.approx(1.0)
    assert lr_at(99, config) == pytest.approx(0.1, abs=1e-3)
