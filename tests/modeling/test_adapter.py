"""VLMAdapter: prompt templating, response tokenization, and collation into model inputs."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from transformers.utils import is_torchvision_available

from chip.errors import DataError
from chip.modeling import VLMAdapter
from chip.modeling.processors import Qwen2VLImageOnlyProcessor

RESPONSES = ["A red star.", "Two blue moons at the top left of the picture.", "Ok"]


def test_string_prompt_and_trl_messages_format_alike(tiny_model_dir):
    adapter = VLMAdapter.from_pretrained(tiny_model_dir)
    as_string = adapter.format_prompt("Describe the image.", num_images=2)
    as_messages = adapter.format_prompt([{"role": "user", "content": "Describe the image."}], num_images=2)
    explicit = adapter.format_prompt(
        [
            {
                "role": "user",
                "content": [
                    {"type": "image"},
                    {"type": "image"},
                    {"type": "text", "text": "Describe the image."},
                ],
            }
        ],
        num_images=2,
    )
    assert as_string == as_messages == explicit
    with pytest.raises(DataError, match="2 image blocks but the example has 1"):
        adapter.format_prompt([{"role": "user", "content": [{"type": "image"}] * 2}], num_images=1)


@pytest.mark.parametrize("tiny_model_dir", ["llava", "idefics3", "qwen2_vl"], indirect=True)
def test_bos_appears_exactly_once(tiny_model_dir, make_image):
    """LLaVA's tokenizer adds BOS (template lacks it), Idefics3's template has it, Qwen has none."""
    adapter = VLMAdapter.from_pretrained(tiny_model_dir)
    ids = adapter.encode_prompt([make_image(0)], "Hi").input_ids
    bos = adapter.tokenizer.bos_token_id
    if bos is None:
        assert adapter.tokenizer.bos_token is None
    else:
        assert ids[0] == bos and int((ids == bos).sum()) == 1


@pytest.mark.parametrize("tiny_model_dir", ["llava", "qwen2_vl"], indirect=True)
def test_response_tokens_end_with_eos_and_carry_offsets(tiny_model_dir):
    adapter = VLMAdapter.from_pretrained(tiny_model_dir)
    text = "A café, two dogs."
    ids, offsets = adapter.encode_response(text), adapter.response_offsets(text)
    assert ids[-1] == adapter.tokenizer.eos_token_id and ids.count(adapter.tokenizer.eos_token_id) == 1
    assert ids[:-1] == adapter.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(offsets) == len(ids) and offsets[-1] == (len(text), len(text))
    assert adapter.tokenizer.decode(ids[:-1]) == text
    assert all(text[start:end] for start, end in offsets[:-1])


def test_collate_batches_images_like_the_processor(tiny_model_dir, make_image):
    """Per-example encodings joined by collate equal the processor's own batch of the same inputs."""
    adapter = VLMAdapter.from_pretrained(tiny_model_dir)
    images = [[make_image(0, 32, 32)], [make_image(1, 64, 24)]]
    prompts = ["Describe the image.", "What is at the top?"]
    encoded = [adapter.encode_prompt(im, p) for im, p in zip(images, prompts)]
    texts = [adapter.format_prompt(p, 1) for p in prompts]
    reference = adapter.processor(
        images=[im[0] for im in images],
        text=texts,
        padding=True,
        add_special_tokens=False,
        return_tensors="pt",
    )
    batch = adapter.collate([(prompt, adapter.encode_response(r)) for prompt, r in zip(encoded, RESPONSES)])

    for key in encoded[0].image_inputs:
        torch.testing.assert_close(batch[key], reference[key], rtol=0, atol=0, msg=key)
    for row, prompt in enumerate(encoded):
        n = len(prompt)
        assert torch.equal(batch["input_ids"][row, :n], prompt.input_ids)
        assert torch.equal(
            prompt.input_ids, reference["input_ids"][row][reference["attention_mask"][row].bool()]
        )
        for key, value in prompt.token_inputs.items():
            assert torch.equal(batch[key][row, :n], value)
            assert not batch[key][row, n:].any()  # response tokens and padding count as text


def test_collate_layout(tiny_model, make_image):
    adapter = VLMAdapter.from_pretrained(tiny_model("llava"))
    prompt = adapter.encode_prompt([make_image(0)], "Describe.")
    responses = [adapter.encode_response(r) for r in RESPONSES]
    batch = adapter.collate([(prompt, r) for r in responses])

    n_prompt, lengths = len(prompt), [len(r) for r in responses]
    assert batch["input_ids"].shape == (3, n_prompt + max(lengths))
    for row, response in enumerate(responses):
        end = n_prompt + len(response)
        assert batch["input_ids"][row, n_prompt:end].tolist() == response
        assert (batch["input_ids"][row, end:] == adapter.pad_token_id).all()
        assert batch["attention_mask"][row].tolist() == [1] * end + [0] * (batch["input_ids"].shape[1] - end)
        assert batch["response_mask"][row].nonzero().flatten().tolist() == list(range(n_prompt, end))


def test_truncation_cuts_response_tokens_only(tiny_model_dir, make_image):
    adapter = VLMAdapter.from_pretrained(tiny_model_dir)
    prompt = adapter.encode_prompt([make_image(0)], "Describe.")
    short, long = adapter.encode_response("Hi"), adapter.encode_response(RESPONSES[1])
    max_length = len(prompt) + 5
    batch = adapter.collate([(prompt, short), (prompt, long)], max_length=max_length)

    assert batch["input_ids"].shape[1] == max_length
    assert batch["response_mask"].sum(1).tolist() == [len(short), 5]
    assert batch["input_ids"][1, len(prompt) :].tolist() == long[:5]
    for row in range(2):
        assert torch.equal(batch["input_ids"][row, : len(prompt)], prompt.input_ids)
    assert int((batch["input_ids"] == adapter.image_token_id).sum()) == 2 * int(
        (prompt.input_ids == adapter.image_token_id).sum()
    )


def test_a_prompt_longer_than_max_length_is_a_clear_error(tiny_model, make_image):
    adapter = VLMAdapter.from_pretrained(tiny_model("llava"))
    prompt = adapter.encode_prompt([make_image(0)], "Describe.")
    rows = [(prompt, adapter.encode_response("ok"))] * 2
    with pytest.raises(
        DataError, match=rf"row 0: the prompt alone is {len(prompt)} tokens .* max_length={len(prompt)}"
    ):
        adapter.collate(rows, max_length=len(prompt))


def test_rows_with_and_without_images_are_not_mixed(tiny_model, make_image):
    adapter = VLMAdapter.from_pretrained(tiny_model("llava"))
    with_image, without = (
        adapter.encode_prompt([make_image(0)], "Describe."),
        adapter.encode_prompt([], "Hello"),
    )
    response = adapter.encode_response("ok")
    with pytest.raises(DataError, match="mixes rows"):
        adapter.collate([(with_image, response), (without, response)])


@pytest.mark.skipif(is_torchvision_available(), reason="the fallback only applies without torchvision")
def test_stock_qwen_checkpoint_loads_image_only_without_torchvision(tiny_model, tmp_path):
    """A real Qwen2-VL folder names Qwen2VLProcessor and has a video processor entry."""
    folder = shutil.copytree(tiny_model("qwen2_vl"), tmp_path / "stock")
    config = json.loads((folder / "processor_config.json").read_text())
    config["processor_class"] = "Qwen2VLProcessor"
    config["video_processor"] = {"video_processor_type": "Qwen2VLVideoProcessor", "merge_size": 2}
    (folder / "processor_config.json").write_text(json.dumps(config))

    adapter = VLMAdapter.from_pretrained(folder)
    assert isinstance(adapter.processor, Qwen2VLImageOnlyProcessor)
    assert adapter.image_token_id == adapter.tokenizer.convert_tokens_to_ids("<|image_pad|>")


def test_prompt_length_from_image_sizes_equals_the_encoded_prompt(tiny_model_dir):
    """`prompt_length` (headers only, cached per size tuple) counts what `encode_prompt` builds."""
    from PIL import Image

    adapter = VLMAdapter.from_pretrained(tiny_model_dir)
    cases = [
        ([(32, 32)], "Describe the image."),
        ([(64, 40)], "What is in the top left corner of this picture?"),
        ([(40, 64), (32, 32)], "Compare the two images."),
        ([(32, 32)], [{"role": "user", "content": "Is there a cat?"}]),
        ([], "No image at all."),
    ]
    for sizes, prompt in cases:
        images = [Image.new("RGB", size, (120, 30, 200)) for size in sizes]
        assert adapter.prompt_length(sizes, prompt) == len(adapter.encode_prompt(images, prompt)), (
            sizes,
            prompt,
        )
