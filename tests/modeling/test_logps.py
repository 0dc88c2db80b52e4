"""response_logps equals log-probs taken from a plain full-sequence forward, on every route.

The reference in these tests is the textbook computation: ``model(**inputs).logits`` over the
whole sequence, ``log_softmax``, and the log-prob of token t read at position t-1.
"""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn
from torch.testing import assert_close
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText

from chip.modeling import (
    QUIRKS,
    LayoutSettings,
    ModelQuirks,
    VLMAdapter,
    adapter_disabled,
    has_adapter,
    response_logps,
)
from chip.modeling.plans import response_positions
from chip.modeling.routes import choose_route

RESPONSES = ["A red star on the left.", "No", "Two blue moons at the top left of the picture."]


def _batch(model_dir, make_image, max_length=None):
    adapter = VLMAdapter.from_pretrained(model_dir)
    prompts = [
        adapter.encode_prompt([make_image(0, 32, 32)], "Describe the image."),
        adapter.encode_prompt([make_image(1, 64, 24)], [{"role": "user", "content": "What is at the top?"}]),
        adapter.encode_prompt([make_image(2, 48, 48)], "Describe."),
    ]
    rows = [(prompt, adapter.encode_response(text)) for prompt, text in zip(prompts, RESPONSES)]
    return adapter.collate(rows, max_length=max_length)


def _full_forward_scores(model, batch):
    """(logps (B, R), logits (B, R, V)) read from full-sequence logits at shifted positions."""
    inputs = {k: v for k, v in batch.items() if k != "response_mask"}
    logits = model(**inputs).logits.float()  # (B, T, V)
    logps = torch.log_softmax(logits, dim=-1)  # (B, T, V)
    rows_logps, rows_logits = [], []
    for row in range(len(logits)):
        positions = batch["response_mask"][row].nonzero().flatten()  # token t
        tokens = batch["input_ids"][row, positions]
        rows_logps.append(logps[row, positions - 1].gather(-1, tokens[:, None]).squeeze(-1))
        rows_logits.append(logits[row, positions - 1])
    longest = max(len(r) for r in rows_logps)
    padded_logps = torch.zeros(len(rows_logps), longest)
    padded_logits = torch.zeros(len(rows_logps), longest, logits.shape[-1])
    for row, (lp, lg) in enumerate(zip(rows_logps, rows_logits)):
        padded_logps[row, : len(lp)], padded_logits[row, : len(lg)] = lp, lg
    return padded_logps, padded_logits


def test_matches_full_forward_on_every_route(tiny_model_dir, make_image):
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir).eval()
    batch = _batch(tiny_model_dir, make_image)
    with torch.no_grad():
        expected_logps, expected_logits = _full_forward_scores(model, batch)
        assert choose_route(model) == "trunk"
        for route in ("trunk", "keep", "full"):
            scores = response_logps(model, batch, return_logits=True, settings=LayoutSettings(route=route))
            lengths = batch["response_mask"].sum(1)
            assert scores.mask.sum(1).tolist() == lengths.tolist()
            assert scores.logps.shape == (3, int(lengths.max()))
            assert_close(scores.logps, expected_logps, atol=1e-5, rtol=0, msg=route)
            assert_close(scores.logits, expected_logits, atol=1e-5, rtol=1e-5, msg=route)
            assert scores.logits.dtype == torch.float32
    assert response_logps(model, batch).logits is None


@pytest.mark.parametrize("tiny_model_dir", ["llava", "qwen2_vl"], indirect=True)
def test_truncated_rows_score_a_prefix_of_the_full_rows(tiny_model_dir, make_image):
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir).eval()
    full = _batch(tiny_model_dir, make_image)
    longest_prompt = int(full["response_mask"].int().argmax(1).max())
    cut = _batch(tiny_model_dir, make_image, max_length=longest_prompt + 5)
    with torch.no_grad():
        full_scores, cut_scores = response_logps(model, full), response_logps(model, cut)
    kept = cut_scores.mask.sum(1)
    assert (kept < full_scores.mask.sum(1)).any()
    for row, n in enumerate(kept.tolist()):
        assert_close(cut_scores.logps[row, :n], full_scores.logps[row, :n], atol=1e-5, rtol=0)


@pytest.mark.parametrize("tiny_model_dir", ["llava", "qwen2_5_vl", "idefics3"], indirect=True)
def test_lora_policy_and_its_disabled_adapter_reference(tiny_model_dir, make_image):
    """Scores of a LoRA model match its full forward; with the adapter off they equal the base model's."""
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir).eval()
    batch = _batch(tiny_model_dir, make_image)
    with torch.no_grad():
        base = response_logps(model, batch).logps
    assert not has_adapter(model)
    with pytest.raises(ValueError, match="no PEFT adapter"), adapter_disabled(model):
        pass

    policy = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(0)
    for name, param in policy.named_parameters():
        if "lora_B" in name:
            nn.init.normal_(param, std=0.5)  # LoRA starts as a no-op; make it change the outputs
    with torch.no_grad():
        scores = response_logps(policy, batch)
        expected, _ = _full_forward_scores(policy, batch)
        with adapter_disabled(policy):
            reference = response_logps(policy, batch)
    assert choose_route(policy) == "trunk"
    assert_close(scores.logps, expected, atol=1e-5, rtol=0)
    assert (scores.logps - base).abs().max() > 1e-3
    assert_close(reference.logps, base, atol=1e-6, rtol=0)
    assert has_adapter(policy)


@pytest.mark.parametrize("use_peft", [False, True])
def test_gradients_with_and_without_checkpointing(tiny_model, make_image, use_peft):
    model_dir = tiny_model("llava")
    batch = _batch(model_dir, make_image)

    def grads(checkpointing: bool) -> dict[str, torch.Tensor]:
        model = AutoModelForImageTextToText.from_pretrained(model_dir)
        if use_peft:
            torch.manual_seed(0)  # the same random LoRA weights in both runs
            model = get_peft_model(
                model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
            )
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()
        response_logps(model, batch).logps.sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain, checkpointed = grads(False), grads(True)
    assert plain and plain.keys() == checkpointed.keys()
    for name in plain:
        assert_close(checkpointed[name], plain[name], atol=1e-5, rtol=1e-4, msg=name)


class _Wrapper(nn.Module):
    """Stands in for DDP / DeepSpeed: holds the model as ``.module`` and forwards to it."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, **kwargs):
        return self.module(**kwargs)


def test_wrapped_models_go_through_their_own_forward(tiny_model, make_image):
    model_dir = tiny_model("qwen2_vl")
    model = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
    batch = _batch(model_dir, make_image)
    wrapped = _Wrapper(model)
    assert choose_route(wrapped) == "keep"
    with torch.no_grad():
        assert_close(
            response_logps(wrapped, batch).logps, response_logps(model, batch).logps, atol=1e-6, rtol=0
        )


@pytest.mark.parametrize(
    ("model_type", "quirk"),
    [
        ("gemma2", {"final_logit_softcapping": 0.5}),
        ("granite", {"logits_scaling": 4.0}),
        ("cohere", {"logit_scale": 0.25}),
    ],
)
def test_trunk_route_repeats_the_familys_logit_transform(model_type, quirk, monkeypatch):
    """Text-only models whose forward transforms logits after the head, per the quirk table."""
    config = AutoConfig.for_model(
        model_type,
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        **quirk,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    input_ids = torch.randint(0, 64, (2, 12))
    response_mask = torch.zeros(2, 12, dtype=torch.bool)
    response_mask[0, 5:12], response_mask[1, 8:10] = True, True
    batch = {
        "input_ids": input_ids,
        "attention_mask": torch.ones(2, 12, dtype=torch.long),
        "response_mask": response_mask,
    }
    with torch.no_grad():
        expected, _ = _full_forward_scores(model, batch)
        scores = response_logps(model, batch, settings=LayoutSettings(route="trunk"))
        monkeypatch.setitem(QUIRKS, model_type, ModelQuirks())
        untransformed = response_logps(model, batch, settings=LayoutSettings(route="trunk"))
    assert_close(scores.logps, expected, atol=1e-5, rtol=0)
    assert (untransformed.logps - expected).abs().max() > 1e-3  # the transform matters at these settings


def test_response_positions_require_one_contiguous_run_after_the_prompt():
    mask = torch.tensor([[0, 0, 1, 1, 0], [0, 1, 1, 1, 1]], dtype=torch.bool)
    positions, kept = response_positions(mask)
    assert positions.tolist() == [[2, 3, 0, 0], [1, 2, 3, 4]]
    assert kept.tolist() == [[True, True, False, False], [True] * 4]
    with pytest.raises(ValueError, match="contiguous"):
        response_positions(torch.tensor([[0, 1, 0, 1]], dtype=torch.bool))
    with pytest.raises(ValueError, match="position 0"):
        response_positions(torch.tensor([[1, 1, 0]], dtype=torch.bool))
