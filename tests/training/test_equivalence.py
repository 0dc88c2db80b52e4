"""chip's fast paths compute the same CHiP loss and gradients as the naive path, for every family.

The naive path is the benchmark's baseline (`bench.naive`): W, L and C scored by separate
forwards with full-sequence logits, for the policy and the reference. chip's paths — one sequence
per pair with a block mask (shared prefix), two rows per pair with each image encoded once, and
plain two rows, each packed without padding (the default) or padded — must agree with it to float32 round-off, for the loss and for the gradient of
every parameter, vision tower included.
"""

from __future__ import annotations

import io

import pytest
import torch
from torch.testing import assert_close
from transformers import AutoModelForImageTextToText

from bench.naive import naive_batch, naive_loss
from chip.data import PreferenceExample
from chip.data.images import ImageRef
from chip.modeling import VLMAdapter, can_share_prefix
from chip.training.collate import ChipCollator
from chip.training.config import ChipConfig
from chip.training.models import is_vision_parameter
from chip.training.reference import LiveReference
from chip.training.trainer import ChipTrainer

LAYOUTS = {
    "shared prefix": dict(share_prefix=True, encode_images_once=True),
    "two rows, images once": dict(share_prefix=False, encode_images_once=True),
    "two rows": dict(share_prefix=False, encode_images_once=False),
    "shared prefix, padded": dict(share_prefix=True, padding_free=False),
    "two rows, padded": dict(share_prefix=False, encode_images_once=False, padding_free=False),
    "shared prefix, LM head in chunks of 3": dict(
        share_prefix=True, encode_images_once=True, logits_chunk_size=3
    ),
    "two rows, LM head in chunks of 5": dict(
        share_prefix=False, encode_images_once=True, logits_chunk_size=5
    ),
}


def preference_examples(make_image) -> list[PreferenceExample]:
    """Three pairs with different image sizes and response lengths (so rows are padded)."""
    rows = [
        ((32, 32), "Describe the image.", "A red star on the left.", "A blue star on the left side."),
        ((64, 24), "What is at the top?", "No", "Two blue moons at the top."),
        ((48, 48), "Describe.", "A green cat sits on a mat.", "A green dog sits."),
    ]
    examples = []
    for index, ((width, height), prompt, chosen, rejected) in enumerate(rows):
        buffer = io.BytesIO()
        make_image(index, width, height).save(buffer, format="PNG")
        examples.append(
            PreferenceExample(
                id=f"ex{index}",
                row=index,
                source="test",
                images=[ImageRef(data=buffer.getvalue())],
                prompt=prompt,
                chosen=chosen,
                rejected=rejected,
            )
        )
    return examples


def perturbed(model_dir) -> torch.nn.Module:
    """The tiny model with noise on every weight, so policy != reference and every term is non-zero."""
    model = AutoModelForImageTextToText.from_pretrained(model_dir)
    torch.manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.02 * torch.randn_like(param))
    return model


def chip_trainer(policy, reference, collator, tmp_path, **options) -> ChipTrainer:
    args = ChipConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True, **options)
    return ChipTrainer(
        model=policy, args=args, reference=LiveReference(reference), data_collator=collator, train_dataset=[]
    )


def loss_and_grads(policy: torch.nn.Module, compute) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    policy.zero_grad(set_to_none=True)
    loss = compute()
    loss.backward()
    return loss.detach(), {
        name: p.grad.clone() for name, p in policy.named_parameters() if p.grad is not None
    }


def assert_same_gradients(
    grads: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], what: str
) -> None:
    """Every parameter's gradient agrees to 2e-5 of its own size (or of 1e-3 of the largest, for
    gradients that are analytically zero, such as attention key biases, and only round-off)."""
    assert grads.keys() == expected.keys()
    floor = 1e-3 * max(float(g.abs().max()) for g in expected.values())
    for param, grad in grads.items():
        scale = max(float(expected[param].abs().max()), floor)
        assert_close(grad / scale, expected[param] / scale, rtol=0, atol=2e-5, msg=f"{what}: {param}")


def test_every_layout_matches_the_naive_loss_and_gradients(tiny_model_dir, tmp_path, make_image):
    examples = preference_examples(make_image)
    adapter = VLMAdapter.from_pretrained(tiny_model_dir)
    policy = perturbed(tiny_model_dir)
    reference = AutoModelForImageTextToText.from_pretrained(tiny_model_dir).eval()
    assert can_share_prefix(policy)
    collator = ChipCollator(adapter, seed=0)
    config = ChipConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True).loss_config
    assert config.needs_kl and config.needs_corrupt and config.segment_weight > 0

    batch = naive_batch(adapter, collator, examples)
    expected_loss, expected = loss_and_grads(policy, lambda: naive_loss(policy, reference, batch, config))
    assert expected_loss > 0 and any(is_vision_parameter(name) for name in expected)
    for name, layout in LAYOUTS.items():
        trainer = chip_trainer(policy, reference, collator, tmp_path, **layout)
        loss, grads = loss_and_grads(policy, lambda t=trainer: t.compute_loss(policy, collator(examples)))
        assert_close(loss, expected_loss, rtol=1e-5, atol=1e-6, msg=name)
        assert_same_gradients(grads, expected, name)


@pytest.mark.parametrize("tiny_model_dir", ["llava", "qwen2_vl"], indirect=True)
def test_plain_dpo_and_precomputed_style_losses_match_too(tiny_model_dir, tmp_path, make_image):
    """λ = α = μ = 0 (no KL, no corrupted rows) through the shared prefix equals the naive DPO loss."""
    examples = preference_examples(make_image)
    adapter = VLMAdapter.from_pretrained(tiny_model_dir)
    policy = perturbed(tiny_model_dir)
    reference = AutoModelForImageTextToText.from_pretrained(tiny_model_dir).eval()
    weights = dict(segment_weight=0.0, token_weight=0.0, visual_weight=0.0)
    collator = ChipCollator(adapter, seed=0)  # C rows built but unused by the loss
    config = ChipConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True, **weights).loss_config
    batch = naive_batch(adapter, collator, examples)
    expected_loss, expected = loss_and_grads(policy, lambda: naive_loss(policy, reference, batch, config))
    trainer = chip_trainer(
        policy, reference, ChipCollator(adapter, seed=0, score_corrupt=False), tmp_path, **weights
    )
    loss, grads = loss_and_grads(
        policy, lambda: trainer.compute_loss(policy, trainer.data_collator(examples))
    )
    assert_close(loss, expected_loss, rtol=1e-5, atol=1e-6)
    assert_same_gradients(grads, expected, "plain DPO")
