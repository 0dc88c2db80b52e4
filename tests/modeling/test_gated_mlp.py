"""The fused SiLU-gated MLP: bit-identical loss and gradients, one (tokens, intermediate) tensor
less kept per MLP, and only MLPs whose own forward it reproduces are switched."""

from __future__ import annotations

import copy

import torch
from torch import nn
from transformers import AutoModelForImageTextToText

from chip.modeling.gated_mlp import SiluAndMul, fuse_gated_mlps, is_silu_gated


def _saved_bytes_and_grads(model: nn.Module, ids: torch.Tensor) -> tuple[int, torch.Tensor, dict]:
    """Bytes autograd keeps for backward during the forward, the loss, and every gradient."""
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = model.get_decoder()(input_ids=ids).last_hidden_state.square().mean()
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return sum(saved.values()), loss.detach(), grads


def test_fused_mlps_give_the_same_numbers_and_keep_less(tiny_model):
    plain = AutoModelForImageTextToText.from_pretrained(tiny_model("llava")).train()
    fused = copy.deepcopy(plain)
    layers = plain.config.text_config.num_hidden_layers
    assert fuse_gated_mlps(fused) == layers
    assert fuse_gated_mlps(fused) == 0  # already switched: left as it is
    ids = torch.randint(0, plain.config.text_config.vocab_size, (2, 7))
    plain_bytes, plain_loss, plain_grads = _saved_bytes_and_grads(plain, ids)
    fused_bytes, fused_loss, fused_grads = _saved_bytes_and_grads(fused, ids)
    assert torch.equal(plain_loss, fused_loss)
    assert plain_grads.keys() == fused_grads.keys()
    for name, grad in plain_grads.items():
        assert torch.equal(grad, fused_grads[name]), name
    # per MLP one (2 rows, 7 tokens, intermediate) float32 tensor, silu(gate(x)), is no longer kept
    intermediate = plain.config.text_config.intermediate_size
    assert plain_bytes - fused_bytes == layers * 2 * 7 * intermediate * 4


def test_silu_and_mul_gradient_by_hand():
    """silu(g)·u at g = 0, u = 3: value 0; d/dg = u·silu'(0) = 3·½ = 1.5, d/du = silu(0) = 0.
    At g = ln 3 (σ = ¾), u = 2: silu = ¾·ln 3; d/du = ¾·ln 3; d/dg = 2·σ(1 + g(1 − σ))."""
    gate = torch.tensor([0.0, torch.log(torch.tensor(3.0)).item()], dtype=torch.float64, requires_grad=True)
    up = torch.tensor([3.0, 2.0], dtype=torch.float64, requires_grad=True)
    SiluAndMul.apply(gate, up).sum().backward()
    g = gate.detach()[1]
    assert torch.allclose(
        gate.grad, torch.stack([torch.tensor(1.5, dtype=torch.float64), 2 * 0.75 * (1 + g / 4)])
    )
    assert torch.allclose(up.grad, torch.stack([torch.tensor(0.0, dtype=torch.float64), 0.75 * g]))


class _ScaledMLP(nn.Module):
    """A gated MLP whose forward does something else (scales the product): must be left alone."""

    def __init__(self):
        super().__init__()
        self.gate_proj, self.up_proj, self.down_proj = nn.Linear(4, 8), nn.Linear(4, 8), nn.Linear(8, 4)
        self.act_fn = nn.SiLU()

    def forward(self, x):
        return self.down_proj(2 * self.act_fn(self.gate_proj(x)) * self.up_proj(x))


def test_an_mlp_with_another_forward_is_left_alone():
    module = _ScaledMLP()
    assert is_silu_gated(module)
    assert fuse_gated_mlps(nn.Sequential(module)) == 0
    assert "forward" not in vars(module)
