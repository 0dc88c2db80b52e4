"""A live reference reuses the policy's frozen vision-tower output (`chip.modeling.frozen_vision`).

With ``share_frozen_vision`` on, a CHiP step (visual term on) gives the same loss and the same
gradient of every parameter as with it off, and runs the vision encoder once per image set
(real once, corrupted once) instead of twice. Where sharing would change the numbers — a tower
that trains, a LoRA layer inside it, Qwen-VL's merger (inside ``visual``) training in a full
fine-tune — nothing is shared: same numbers, same encoder runs as off. The policy trains (its
tower in training mode), against a frozen copy (full fine-tune, as `LiveReference.prepare` makes
it) or its own base under the disabled adapter (LoRA).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.testing import assert_close
from transformers import AutoModelForImageTextToText

from chip.modeling import VLMAdapter, core_model
from chip.modeling.frozen_vision import shareable_towers
from chip.training.collate import ChipCollator
from chip.training.config import ChipConfig
from chip.training.models import language_linear_modules, prepare_policy
from chip.training.reference import LiveReference
from chip.training.trainer import ChipTrainer
from tests.modeling.test_frozen_vision import EncoderRuns
from tests.training.test_equivalence import preference_examples

# (family, setup) -> whether the reference's tower calls are served from the policy's
CASES = {
    ("llava", "full"): True,
    ("llava", "lora"): True,
    ("llava", "lora, activation checkpointing"): True,
    ("llava", "full, two rows"): True,  # no shared prefix: each image encoded once for both rows
    ("llava", "full, two rows, images twice"): True,  # the tower sees every image twice, per model
    ("llava_next", "full"): True,
    ("idefics3", "full"): True,
    ("qwen2_vl", "lora"): True,
    ("qwen2_5_vl", "lora"): True,
    ("qwen2_vl", "full"): False,  # `visual` holds the merger, a projector, which trains
    ("qwen2_5_vl", "full"): False,
    ("llava", "tower trained"): False,
    ("llava", "lora inside the tower"): False,
}
TOWER_LORA_TARGETS = ["model.vision_tower.encoder.layers.0.self_attn.q_proj"]


def _config(tmp_path, setup: str, **options) -> ChipConfig:
    lora = dict(use_peft=True, lora_r=4, lora_alpha=8, lora_dropout=0.0)  # dropout: on and off would differ
    return ChipConfig(
        output_dir=str(tmp_path),
        report_to="none",
        use_cpu=True,
        freeze_vision_tower=setup != "tower trained",
        activation_checkpointing="checkpointing" in setup,
        share_prefix="two rows" not in setup,
        encode_images_once="images twice" not in setup,
        **(lora if "lora" in setup else {}),
        **options,
    )


def _policy_and_reference(model_dir, config: ChipConfig, setup: str) -> tuple[nn.Module, LiveReference]:
    """The run's policy and live reference (as `chip train` builds them), then every trainable weight
    moved off the reference's, so policy and reference differ wherever the policy trains."""
    model = AutoModelForImageTextToText.from_pretrained(model_dir)
    reference = LiveReference.prepare(config, model, None, [])
    if setup == "lora inside the tower":
        config.lora_target_modules = language_linear_modules(model) + TOWER_LORA_TARGETS
    policy = prepare_policy(model, config).train()
    if config.activation_checkpointing:  # as `Trainer.train` turns it on
        core_model(policy).activation_checkpointing_enable()
    if setup == "lora inside the tower":
        assert "lora_A" in dict(policy.named_modules())[f"base_model.model.{TOWER_LORA_TARGETS[0]}"]._modules
    torch.manual_seed(1)
    with torch.no_grad():
        for param in policy.parameters():
            if param.requires_grad:
                param.add_(0.02 * torch.randn_like(param))
    return policy, reference


def _step(policy, reference, collator, examples, config) -> tuple[torch.Tensor, dict, EncoderRuns]:
    """Loss, every parameter's gradient and the encoder runs of one CHiP step."""
    trainer = ChipTrainer(
        model=policy, args=config, reference=reference, data_collator=collator, train_dataset=[]
    )
    runs = EncoderRuns(policy, reference.ref_model)
    policy.zero_grad(set_to_none=True)
    loss = trainer.compute_loss(policy, collator(examples))
    loss.backward()
    runs.close()
    grads = {name: p.grad.clone() for name, p in policy.named_parameters() if p.grad is not None}
    return loss.detach(), grads, runs


@pytest.mark.parametrize(("family", "setup"), list(CASES), ids=[" ".join(case) for case in CASES])
def test_the_reference_reuses_the_frozen_tower_with_the_same_numbers(
    tiny_model, tmp_path, make_image, family, setup
):
    model_dir = tiny_model(family)
    examples = preference_examples(make_image)
    collator = ChipCollator(VLMAdapter.from_pretrained(model_dir), seed=0)
    config = _config(tmp_path, setup)
    policy, reference = _policy_and_reference(model_dir, config, setup)
    assert config.loss_config.needs_corrupt and config.loss_config.needs_kl
    assert bool(shareable_towers(policy, reference.ref_model)) == CASES[family, setup]

    off = _step(policy, reference, collator, examples, _config(tmp_path, setup, share_frozen_vision=False))
    on = _step(policy, reference, collator, examples, config)
    # Real and corrupted images by the policy and again by the reference: in one tower call per model
    # where the two sets of rows run in one forward, else one each.
    assert off[2].count in (2, 4) and off[2].rows > 0
    assert on[2].count == (off[2].count // 2 if CASES[family, setup] else off[2].count)
    assert on[2].rows == (off[2].rows // 2 if CASES[family, setup] else off[2].rows)
    assert_close(on[0], off[0], rtol=1e-6, atol=0)
    assert on[1].keys() == off[1].keys() and on[1]
    for name, grad in on[1].items():
        assert_close(grad, off[1][name], rtol=1e-6, atol=1e-9, msg=name)
