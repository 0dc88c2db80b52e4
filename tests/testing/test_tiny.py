"""The tiny models load through the Auto classes and are internally consistent."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from chip.testing import FAMILIES, build_tiny_model

PROCESSOR_CLASSES = {
    "llava": "LlavaProcessor",
    "llava_next": "LlavaNextProcessor",
    "qwen2_vl": "Qwen2VLImageOnlyProcessor",
    "qwen2_5_vl": "Qwen2_5_VLImageOnlyProcessor",
    "idefics3": "Idefics3Processor",
}


def _image_feature_count(model, image_inputs: dict) -> int:
    """Number of image feature vectors the model produces, counted from the vision side."""
    with torch.no_grad():
        features = model.model.get_image_features(**image_inputs).pooler_output
    features = [features] if isinstance(features, torch.Tensor) else features
    return sum(f.numel() for f in features) // model.config.get_text_config().hidden_size


def test_round_trip_through_auto_classes(tiny_model_dir):
    """Saved folders load with the stock Auto classes into the family's real classes, and stay tiny."""
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    family = model.config.model_type
    assert family in FAMILIES
    assert type(processor).__name__ == PROCESSOR_CLASSES[family]
    assert sum(p.numel() for p in model.parameters()) < 500_000
    tokenizer = processor.tokenizer
    assert tokenizer.eos_token_id is not None and tokenizer.pad_token_id is not None
    assert model.config.get_text_config().vocab_size >= len(tokenizer)
    assert processor.chat_template
    # Byte-level: any text encodes and decodes back.
    text = "A café with 2 dogs."
    assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text


def test_image_tokens_match_the_models_image_features(tiny_model_dir, make_image):
    """The processor expands two differently sized images to exactly as many tokens as features."""
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    images = [make_image(0, 32, 32), make_image(1, 64, 24)]
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Hi"}]}
    ]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    encoded = processor(images=images, text=[text], return_tensors="pt", add_special_tokens=False)
    image_inputs = {
        k: v for k, v in encoded.items() if k not in ("input_ids", "attention_mask", "mm_token_type_ids")
    }

    n_tokens = int((encoded["input_ids"] == processor.image_token_id).sum())
    assert n_tokens > 0
    assert n_tokens == _image_feature_count(model, image_inputs)
    with torch.no_grad():
        model(**encoded)


def test_llava_15_shapes_for_benchmarks(tmp_path, make_image):
    """Size overrides give LLaVA-1.5's 576 image tokens and a 32k vocabulary."""
    path = build_tiny_model("llava", tmp_path, num_image_tokens=576, vocab_size=32_000)
    model = AutoModelForImageTextToText.from_pretrained(path)
    processor = AutoProcessor.from_pretrained(path)
    assert model.config.get_text_config().vocab_size == 32_000
    assert model.config.vision_config.image_size == 576**0.5 * 8
    encoded = processor(
        images=[make_image(0, 50, 40)], text=["USER: <image>\nHi ASSISTANT:"], return_tensors="pt"
    )
    assert int((encoded["input_ids"] == processor.image_token_id).sum()) == 576
    with torch.no_grad():
        assert model(**encoded).logits.shape[-1] == 32_000


def test_qwen_processor_is_saved_without_a_video_part(tiny_model):
    config = json.loads((tiny_model("qwen2_vl") / "processor_config.json").read_text())
    assert config["processor_class"] == "Qwen2VLImageOnlyProcessor"
    assert "video_processor" not in config and "image_processor" in config


def test_weights_depend_on_the_seed(tmp_path):
    first = AutoModelForImageTextToText.from_pretrained(build_tiny_model("llava", tmp_path / "a", seed=1))
    again = AutoModelForImageTextToText.from_pretrained(build_tiny_model("llava", tmp_path / "b", seed=1))
    other = AutoModelForImageTextToText.from_pretrained(build_tiny_model("llava", tmp_path / "c", seed=2))
    name, weight = next(iter(first.state_dict().items()))
    assert torch.equal(weight, again.state_dict()[name])
    assert not torch.equal(weight, other.state_dict()[name])


@pytest.mark.parametrize(
    ("family", "overrides", "message"),
    [
        ("blip", {}, "unknown family"),
        ("llava", {"hidden": 8}, "unknown size override"),
        ("llava", {"num_image_tokens": 10}, "perfect square"),
        ("llava", {"vocab_size": 10}, "smaller than the tokenizer"),
        ("qwen2_vl", {"image_size": 40}, "multiple of 16"),
        ("llava", {"num_image_tokens": 16, "image_size": 64}, "contradicts"),
    ],
)
def test_bad_arguments_are_refused(tmp_path, family, overrides, message):
    with pytest.raises(ValueError, match=message):
        build_tiny_model(family, tmp_path, **overrides)
