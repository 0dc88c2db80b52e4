"""`chip.modeling.frozen_vision`: which towers are shared, and how long and how safely outputs are kept.

A tower is shared only where its outputs cannot differ from the reference's: all parameters
frozen, the reference's copy holding the same weights, no dropout while training. A kept output
is served once, never after its tensors were changed in place, and never after the block (the
step) ends, even when the step raised. The trainer-level numbers: tests/training/test_frozen_vision.py.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.testing import assert_close
from transformers import AutoModelForImageTextToText

from chip.modeling import core_model
from chip.modeling.frozen_vision import shareable_towers, shared_frozen_vision, vision_towers
from chip.training.models import freeze_vision_tower


class EncoderRuns:
    """Counts the vision encoders' real runs and the rows they encoded: a call served from the kept
    outputs does not reach the tower's first layer (its first module with parameters of its own)."""

    def __init__(self, *models: nn.Module | None):
        towers = {
            tower for model in models if model is not None for _, tower in vision_towers(core_model(model))
        }
        firsts = [next(module for module in tower.modules() if module._parameters) for tower in towers]
        self.count = 0
        self.rows = 0  # what the first layers received along their first axis (images, or patches)
        self.handles = [first.register_forward_pre_hook(self._run) for first in firsts]

    def _run(self, module, args) -> None:
        self.count += 1
        self.rows += args[0].shape[0]

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def _training_policy(model_dir) -> nn.Module:
    model = AutoModelForImageTextToText.from_pretrained(model_dir)
    freeze_vision_tower(model)
    return model.train()


@pytest.mark.parametrize(
    ("family", "tower_name"),
    [("llava", "model.vision_tower"), ("qwen2_vl", "model.visual"), ("idefics3", "model.vision_model")],
)
def test_the_tower_is_found_through_the_quirks_table(tiny_model, family, tower_name):
    model = AutoModelForImageTextToText.from_pretrained(tiny_model(family))
    assert [name for name, _ in vision_towers(model)] == [tower_name]


def test_a_reference_copy_is_shared_only_while_its_tower_equals_the_policys(tiny_model):
    policy = _training_policy(tiny_model("llava"))
    reference = copy.deepcopy(policy).eval().requires_grad_(False)
    bias = policy.model.vision_tower.post_layernorm.bias
    assert shareable_towers(policy, reference)
    bias.requires_grad_(True)  # one tower weight trains
    assert not shareable_towers(policy, reference)
    bias.requires_grad_(False)
    with torch.no_grad():  # other weights loaded into the copy after the first comparison
        reference.model.vision_tower.post_layernorm.bias.add_(1e-3)
    assert not shareable_towers(policy, reference)
    assert not shareable_towers(policy, copy.deepcopy(reference))
    eager = copy.deepcopy(policy).eval().requires_grad_(False)
    eager.model.vision_tower.config._attn_implementation = "eager"  # policy: SDPA
    assert not shareable_towers(policy, eager)


def test_a_tower_with_dropout_is_shared_only_in_evaluation_mode(tiny_model):
    policy = _training_policy(tiny_model("llava"))
    (_, tower), *_ = vision_towers(policy)
    tower.config.attention_dropout = 0.1
    assert not shareable_towers(policy, None)
    policy.eval()
    assert shareable_towers(policy, None)


def test_outputs_are_served_once_within_the_block_and_never_after_an_in_place_change(tiny_model):
    policy = _training_policy(tiny_model("llava"))
    (_, tower), *_ = vision_towers(policy)
    pixels = torch.randn(2, 3, 32, 32)
    expected = tower(pixels).last_hidden_state
    runs = EncoderRuns(policy)

    with shared_frozen_vision(policy, None):
        first = tower(pixels).last_hidden_state
        assert_close(tower(pixels.clone()).last_hidden_state, first, rtol=0, atol=0)  # served
        assert runs.count == 1
        tower(pixels).last_hidden_state.mul_(2)  # kept, then changed by its caller
        assert_close(tower(pixels).last_hidden_state, expected, rtol=0, atol=0)  # run again
        assert runs.count == 3
        tower(pixels, interpolate_pos_encoding=True)  # other arguments: another call
        assert runs.count == 4
        other = torch.randn(2, 3, 32, 32)
        tower(other)
        tower(other.clone())  # the last of three kept calls, served
        nan = torch.full_like(pixels, float("nan"))
        tower(nan)
        tower(nan)  # NaN never equals NaN: run again
        assert runs.count == 7
    with pytest.raises(RuntimeError, match="inside the step"), shared_frozen_vision(policy, None):
        tower(pixels)
        raise RuntimeError("inside the step")
    tower(pixels)
    assert runs.count == 9 and "forward" not in vars(tower)
    runs.close()
