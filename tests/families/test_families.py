"""Every family chip builds a tiny model of: scores, gradients, `chip train` and generation.

Per family, on one small batch of two examples (images of two sizes):

- for every layout chip uses on the family (the trunk route or the model's own forward; a shared
  prefix, images encoded once, two plain rows), the policy's per-token log-probs of the W and L
  rows and of a corrupted-image C row equal a plain ``model(**inputs)`` forward's log-softmax at
  the response tokens, computed here independently of chip, and so do the gradients;
- each ``prefix_sharing`` / ``images_once`` flag of the quirks table is live (the layout really
  runs), so a flag cannot pass its test by being ignored;
- ``chip train`` with the full CHiP loss and a live reference runs 2 steps, full fine-tuning and
  LoRA, without falling back to a slower layout;
- greedy generation (``chip eval --model``'s code path) answers.

The other reference modes (precomputed, none) run for one representative family per layout kind
by default and for every family under ``-m slow``.
"""

from __future__ import annotations

import logging
import math

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close
from transformers import AutoModelForImageTextToText

from chip.corruption import diffusion_noise
from chip.evaluation.benchmarks import Question
from chip.evaluation.generate import GenerationSettings, generate_answers
from chip.modeling import LayoutSettings, VLMAdapter, can_share_prefix, response_logps
from chip.modeling.images_once import images_once_allowed
from chip.modeling.quirks import quirks_for
from chip.testing import ALL_FAMILIES
from tests.conftest import family_params, random_image
from tests.train_helpers import train, write_pairs

# Llama-4's own forward fails in transformers 5.24 (tests/families/test_robustness.py).
BROKEN_UPSTREAM = {"llama4"}
TRAINABLE = [f for f in ALL_FAMILIES if f not in BROKEN_UPSTREAM]


def _examples(adapter: VLMAdapter):
    prompts = [
        adapter.encode_prompt([random_image(0, 32, 32)], "Describe the image."),
        adapter.encode_prompt([random_image(1, 48, 32)], "What is at the top?"),
    ]
    chosen = [adapter.encode_response("A red star."), adapter.encode_response("No")]
    rejected = [adapter.encode_response("Two blue moons at the top."), adapter.encode_response("Yes it is")]
    return prompts, chosen, rejected


def _corrupted(adapter: VLMAdapter, prompt):
    pixels = prompt.image_inputs[adapter.pixel_key]
    noisy = diffusion_noise(pixels.float(), 500, generator=torch.Generator().manual_seed(0)).to(pixels.dtype)
    return type(prompt)(
        prompt.input_ids, {**prompt.image_inputs, adapter.pixel_key: noisy}, prompt.token_inputs
    )


def _plain_logps(model, rows: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The textbook computation: full logits, log-softmax, the log-prob of token t read at t - 1.

    Returns ``(logps (B, R), logits (B, R, V))``, zero-padded on the right.
    """
    inputs = {
        k: v.to(model.dtype) if v.is_floating_point() else v for k, v in rows.items() if k != "response_mask"
    }
    logits = model(**inputs).logits.float()  # (B, T, V)
    logps = torch.log_softmax(logits, dim=-1)  # (B, T, V)
    out, out_logits = [], []
    for row in range(len(logps)):
        positions = rows["response_mask"][row].nonzero().flatten()
        tokens = rows["input_ids"][row, positions]
        out.append(logps[row, positions - 1].gather(-1, tokens[:, None]).squeeze(-1))
        out_logits.append(logits[row, positions - 1].detach())
    longest = max(len(r) for r in out)
    padded = torch.stack([F.pad(r, (0, longest - len(r))) for r in out])  # (B, R)
    return padded, torch.stack([F.pad(r, (0, 0, 0, longest - len(r))) for r in out_logits])  # (B, R, V)


def _assert_grads_close(model, expected: dict[str, torch.Tensor], label: str) -> None:
    """Every parameter's gradient, within float32 noise relative to that tensor's largest entry."""
    grads = _grads(model)
    assert grads.keys() == expected.keys(), label
    for name, grad in grads.items():
        atol = 1e-6 + 1e-3 * float(expected[name].abs().max())
        assert_close(
            grad, expected[name], atol=atol, rtol=1e-3, msg=lambda m, name=name: f"{label} {name}: {m}"
        )


def _grads(model) -> dict[str, torch.Tensor]:
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return grads


@pytest.mark.parametrize("family", family_params(TRAINABLE))
def test_every_layout_matches_a_plain_forward(tiny_model, family):
    model_dir = tiny_model(family)
    adapter = VLMAdapter.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
    quirks = quirks_for(model.config)
    assert quirks.known
    prompts, chosen, rejected = _examples(adapter)
    pairs = adapter.collate_pairs(list(zip(prompts, chosen, rejected)))
    rows = adapter.collate(list(zip(prompts + prompts, chosen + rejected)))
    corrupt = adapter.collate([(_corrupted(adapter, p), c) for p, c in zip(prompts, chosen)])
    weights = torch.rand(
        4, rows["response_mask"].sum(1).max().item(), generator=torch.Generator().manual_seed(1)
    )

    expected, expected_logits = _plain_logps(model, rows)  # (2B, R) W rows then L rows
    (expected * weights[:, : expected.shape[1]]).sum().backward()
    expected_grads = _grads(model)
    expected_corrupt, _ = _plain_logps(model, corrupt)  # (B, R) C rows
    expected_corrupt.sum().backward()
    expected_corrupt_grads = _grads(model)

    assert can_share_prefix(model) == quirks.prefix_sharing, "prefix_sharing flag not in effect"
    assert images_once_allowed(model) == quirks.images_once, "images_once flag not in effect"
    # The own-forward route ("keep", DDP/FSDP/DeepSpeed) never encodes images once.
    # Families that share a prefix also pack every layout without padding (the default); the padded
    # forms are checked beside them.
    plain, packed, once = (
        dict(share_prefix=False, encode_images_once=False),
        dict(share_prefix=True),
        dict(share_prefix=False, encode_images_once=True),
    )
    padded = [{**plain, "padding_free": False}, {**packed, "padding_free": False}]
    sharing = [packed, *padded] if quirks.prefix_sharing else []
    layouts = {"keep": [plain, *sharing]}
    if quirks.trunk:
        layouts["trunk"] = [plain, *sharing, *([once] if quirks.images_once else [])]
    for route, route_layouts in layouts.items():
        for layout in route_layouts:
            label = f"{family} {route} {layout}"
            scores = response_logps(
                model, pairs, return_logits=True, settings=LayoutSettings(route=route, **layout)
            )
            assert scores.mask.sum(1).tolist() == rows["response_mask"].sum(1).tolist()
            assert_close(scores.logps, expected, atol=2e-5, rtol=1e-5, msg=label)
            # logits too: a post-head transform (soft-capping) left out would show here first
            assert_close(scores.logits.detach(), expected_logits, atol=1e-5, rtol=1e-5, msg=label)
            (scores.logps * weights[:, : expected.shape[1]]).sum().backward()
            _assert_grads_close(model, expected_grads, label)
    route = "trunk" if quirks.trunk else "keep"
    for padding_free in (True, False):
        label = f"{family} {route} C padding_free={padding_free}"
        scores = response_logps(
            model, corrupt, settings=LayoutSettings(route=route, padding_free=padding_free)
        )
        assert_close(scores.logps, expected_corrupt, atol=2e-5, rtol=1e-5, msg=label)
        scores.logps.sum().backward()
        _assert_grads_close(model, expected_corrupt_grads, label)


@pytest.mark.parametrize("use_peft", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("family", family_params(TRAINABLE))
def test_chip_train_runs_the_full_loss(tiny_model, tmp_path, family, use_peft, caplog):
    data = write_pairs(tmp_path / "data", n=4)
    with caplog.at_level(logging.WARNING, logger="chip.modeling.logps"):
        history = train(
            tiny_model(family),
            data,
            tmp_path / "out",
            max_steps=2,
            per_device_train_batch_size=2,
            use_peft=use_peft,
            lora_r=4,
            lora_alpha=8,
        )
    assert len(history) == 2 and all(math.isfinite(h["loss"]) for h in history)
    assert "visual/margins" in history[-1] and "kl/chosen" in history[-1]
    assert "failed on the first batch" not in caplog.text, caplog.text


def _reference_params() -> list:
    # A representative slice in the default run (llava's are in tests/training/test_trainer.py):
    # shared prefix + M-RoPE + DeepStack, images once + bidirectional image attention, per-token
    # cross-attention mask, a causal suffix after a bidirectional prefix. Every family under -m slow.
    default = {
        ("qwen3_vl", "precomputed"),
        ("gemma3", "none"),
        ("mllama", "precomputed"),
        ("paligemma", "none"),
    }
    return [
        pytest.param(
            p.values[0],
            reference,
            id=f"{p.values[0]}-{reference}",
            marks=[*p.marks, *(() if (p.values[0], reference) in default else [pytest.mark.slow])],
        )
        for p in family_params(TRAINABLE)
        for reference in ("precomputed", "none")
    ]


@pytest.mark.parametrize(("family", "reference"), _reference_params())
def test_chip_train_with_other_references(tiny_model, tmp_path, family, reference):
    from chip.training.cli import parse_config, run_precompute
    from tests.train_helpers import train_args

    data = write_pairs(tmp_path / "data", n=4)
    model_dir = tiny_model(family)
    extra: dict = {"reference": "none", "token_weight": 0.0}
    if reference == "precomputed":
        cache = tmp_path / "cache"
        run_precompute(parse_config(train_args(model_dir, data, tmp_path / "pre", reference_cache=cache)))
        extra = {"reference": "precomputed", "reference_cache": cache}
    for use_peft in (False, True):
        history = train(
            model_dir,
            data,
            tmp_path / f"out{use_peft}",
            max_steps=2,
            per_device_train_batch_size=2,
            use_peft=use_peft,
            lora_r=4,
            lora_alpha=8,
            **extra,
        )
        assert len(history) == 2 and all(math.isfinite(h["loss"]) for h in history)


@pytest.mark.parametrize("family", family_params(TRAINABLE))
def test_generation_answers(tiny_model, tmp_path, family):
    random_image(0, 40, 32).save(tmp_path / "0.png")
    questions = [Question("q0", "Is there a dog?", "0.png"), Question("q1", "Is it red? Answer.", "0.png")]
    out = generate_answers(
        tiny_model(family),
        questions,
        tmp_path / "a.jsonl",
        tmp_path,
        GenerationSettings(batch_size=2, max_new_tokens=3),
        progress=False,
    )
    lines = out.read_text().splitlines()
    assert len(lines) == 2


@pytest.mark.parametrize(
    ("family", "key"),
    [
        ("mllama", "cross_attention_mask"),
        ("paligemma", "token_type_ids"),
        ("gemma3", "token_type_ids"),
        ("qwen2_vl", "mm_token_type_ids"),
    ],
)
def test_per_token_inputs_continue_as_the_processor_marks_a_full_text(tiny_model, family, key):
    """Collation gives response tokens what the family's processor gives them in prompt + response.

    PaliGemma's processor takes the response as ``suffix`` (token type 1, the causal part); the
    others read it as more text after the prompt (Mllama: still attending to the image).
    """
    adapter = VLMAdapter.from_pretrained(tiny_model(family))
    image, response = random_image(3, 40, 32), "A red star."
    text = adapter.format_prompt("Describe.", 1)
    batch = adapter.collate(
        [(adapter.encode_prompt([image], "Describe."), adapter.encode_response(response))]
    )
    if family == "paligemma":
        full = adapter.processor(images=[image], text=[text], suffix=[response], return_tensors="pt")
    else:
        full = adapter.processor(
            images=[image], text=[text + response], add_special_tokens=False, return_tensors="pt"
        )
    length = min(full["input_ids"].shape[1], batch["input_ids"].shape[1])
    assert length > int(batch["response_mask"].int().argmax()) + 3  # the span covers response tokens
    assert torch.equal(full["input_ids"][0, :length], batch["input_ids"][0, :length])
    assert torch.equal(full[key][0, :length], batch[key][0, :length].to(full[key].dtype))
