"""Which path a pair batch takes, what each path costs in model calls, and the fallback's numbers.

- the shared-prefix path runs the decoder on B rows and encodes each image once;
- where prefix sharing is impossible (flash attention, sliding windows, a family not marked in
  the quirk table, prompt-learning PEFT) the batch is unpacked into 2B rows, with each image
  still encoded once unless that is switched off — and the scores do not change;
- the LM head only ever sees the response positions: never a ``(B, T, V)`` logits tensor.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from peft import PromptTuningConfig, get_peft_model
from torch import nn
from torch.testing import assert_close
from transformers import AutoModelForImageTextToText

from chip.modeling import QUIRKS, LayoutSettings, VLMAdapter, can_share_prefix, response_logps
from chip.modeling.quirks import quirks_for
from chip.modeling.wrappers import core_model

VISION_MODULES = ("vision_tower", "visual", "vision_model")


def _pairs_and_rows(model_dir, make_image):
    adapter = VLMAdapter.from_pretrained(model_dir)
    prompts = [
        adapter.encode_prompt([make_image(0, 32, 32)], "Describe the image."),
        adapter.encode_prompt([make_image(1, 48, 32)], "What is at the top?"),
    ]
    chosen = [adapter.encode_response("A red star."), adapter.encode_response("No")]
    rejected = [adapter.encode_response("Two blue moons at the top."), adapter.encode_response("Yes it is")]
    pairs = adapter.collate_pairs(list(zip(prompts, chosen, rejected)))
    rows = adapter.collate(list(zip(prompts + prompts, chosen + rejected)))
    return pairs, rows


class _Calls:
    """Records the leading dimension of what the trunk's decoder, the vision encoder and the LM head receive."""

    def __init__(self, model: nn.Module):
        core = core_model(model)
        owner = getattr(core, quirks_for(core.config).trunk)
        vision = next(getattr(owner, name) for name in VISION_MODULES if hasattr(owner, name))
        language = next(
            getattr(owner, name) for name in ("language_model", "text_model") if hasattr(owner, name)
        )
        self.vision_inputs: list[int] = []
        self.decoder_rows: list[int] = []
        self.decoder_shapes: list[tuple[int, int]] = []
        self.head_inputs: list[tuple[int, ...]] = []
        self.handles = [
            vision.register_forward_pre_hook(self._vision, with_kwargs=True),
            language.register_forward_pre_hook(self._decoder, with_kwargs=True),
            core.get_output_embeddings().register_forward_pre_hook(
                lambda m, a: self.head_inputs.append(tuple(a[0].shape))
            ),
        ]

    def _vision(self, module, args, kwargs):
        pixels = args[0] if args else kwargs.get("pixel_values", kwargs.get("hidden_states"))
        self.vision_inputs.append(pixels.shape[0])

    def _decoder(self, module, args, kwargs):
        self.decoder_rows.append(kwargs["inputs_embeds"].shape[0])
        self.decoder_shapes.append(tuple(kwargs["inputs_embeds"].shape[:2]))

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def _scores(model, batch, **options):
    calls = _Calls(model)
    with torch.no_grad():
        scores = response_logps(model, batch, return_logits=True, settings=LayoutSettings(**options))
    calls.close()
    return scores, calls


def test_each_path_runs_the_decoder_and_vision_encoder_as_often_as_promised(tiny_model_dir, make_image):
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir).eval()
    pairs, rows = _pairs_and_rows(tiny_model_dir, make_image)
    expected, row_calls = _scores(model, rows)
    padded = dict(padding_free=False)
    shared, shared_calls = _scores(model, pairs, **padded)
    once, once_calls = _scores(model, pairs, share_prefix=False, **padded)
    twice, twice_calls = _scores(model, pairs, share_prefix=False, encode_images_once=False, **padded)
    packed, packed_calls = _scores(model, pairs)
    packed_rows, packed_rows_calls = _scores(model, pairs, share_prefix=False)
    for scores in (shared, once, twice, packed, packed_rows):
        assert_close(scores.logps, expected.logps, atol=2e-6, rtol=0)
        assert_close(scores.logits, expected.logits, atol=2e-6, rtol=1e-5)
        assert torch.equal(scores.mask, expected.mask)
    assert shared_calls.decoder_rows == [2] and once_calls.decoder_rows == twice_calls.decoder_rows == [4]
    assert shared_calls.vision_inputs == once_calls.vision_inputs == packed_calls.vision_inputs
    assert 2 * sum(once_calls.vision_inputs) == sum(twice_calls.vision_inputs) == sum(row_calls.vision_inputs)
    # packed: one row of exactly the real tokens, no padding
    assert packed_calls.decoder_shapes == [(1, int(pairs["pair_lengths"].sum()))]
    assert packed_rows_calls.decoder_shapes == [(1, int(rows["attention_mask"].sum()))]
    assert pairs["input_ids"].numel() > int(pairs["pair_lengths"].sum())  # the padded batch had padding
    # logits only at the real response tokens: (tokens, hidden) into the head
    tokens = int(expected.mask.sum())
    for calls in (shared_calls, once_calls, twice_calls, packed_calls, packed_rows_calls):
        assert calls.head_inputs == [(tokens, model.config.get_text_config().hidden_size)]
    assert tokens < expected.mask.numel()  # responses of different lengths: padding never reaches the head


@pytest.mark.parametrize("tiny_model_dir", ["llava", "qwen2_5_vl"], indirect=True)
def test_models_that_cannot_share_a_prefix_fall_back_to_two_rows(tiny_model_dir, make_image, monkeypatch):
    pairs, rows = _pairs_and_rows(tiny_model_dir, make_image)
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir).eval()
    expected, _ = _scores(model, rows)
    model_type = model.config.model_type

    def falls_back(candidate) -> None:
        assert not can_share_prefix(candidate)
        scores, calls = _scores(candidate, pairs)
        assert calls.decoder_rows == [4]  # two rows per pair ...
        assert sum(calls.vision_inputs) * 2 == sum(
            _scores(candidate, rows)[1].vision_inputs
        )  # ... images once
        assert_close(scores.logps, expected.logps, atol=2e-6, rtol=0)

    text = model.config.get_text_config()
    with monkeypatch.context() as patch:  # flash attention takes no arbitrary mask
        patch.setattr(text, "_attn_implementation", "flash_attention_2")
        assert not can_share_prefix(model)
    with monkeypatch.context() as patch:  # a ready mask would bypass the sliding window
        patch.setattr(text, "layer_types", ["sliding_attention"] * text.num_hidden_layers, raising=False)
        assert not can_share_prefix(model)
    with monkeypatch.context() as patch:  # a family not marked in the quirk table
        patch.setitem(QUIRKS, model_type, dataclasses.replace(QUIRKS[model_type], prefix_sharing=False))
        falls_back(model)


def test_prompt_learning_peft_falls_back(tiny_model, make_image):
    model_dir = tiny_model("llava")
    base = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
    prompt_tuned = get_peft_model(base, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3))
    assert not can_share_prefix(prompt_tuned)


class _Wrapper(nn.Module):
    """Stands in for DDP / DeepSpeed: holds the model as ``.module`` and forwards to it."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, **kwargs):
        return self.module(**kwargs)


@pytest.mark.parametrize("tiny_model_dir", ["llava_next", "qwen2_vl"], indirect=True)
def test_wrapped_models_share_the_prefix_through_their_own_forward(tiny_model_dir, make_image):
    """DDP-style wrappers go through ``forward`` with ``logits_to_keep``; the block mask and positions pass through."""
    pairs, rows = _pairs_and_rows(tiny_model_dir, make_image)
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir).eval()
    wrapped = _Wrapper(model)
    expected, _ = _scores(model, rows)
    scores, calls = _scores(wrapped, pairs, padding_free=False)
    assert can_share_prefix(wrapped) and calls.decoder_rows == [2]
    assert_close(scores.logps, expected.logps, atol=2e-6, rtol=0)
    unshared, calls = _scores(wrapped, pairs, share_prefix=False, padding_free=False)
    assert calls.decoder_rows == [4]
    assert_close(unshared.logps, expected.logps, atol=2e-6, rtol=0)
    packed, calls = _scores(wrapped, pairs)  # rows back to back, through the wrapper's forward too
    assert calls.decoder_shapes == [(1, int(pairs["pair_lengths"].sum()))]
    tokens = int(expected.mask.sum())  # the head at the real response tokens only
    assert calls.head_inputs == [(1, tokens, model.config.get_text_config().hidden_size)]
    assert_close(packed.logps, expected.logps, atol=2e-6, rtol=0)
