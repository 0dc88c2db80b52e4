"""SiLU-gated MLPs that keep three activations for backward instead of four, with the same numbers.

The MLP of Llama-, Mistral- and Qwen-style decoders computes ``down(silu(gate(x)) * up(x))``.
Autograd keeps four ``(tokens, intermediate)`` tensors of it for backward: ``gate(x)`` (for the
SiLU), ``silu(gate(x))`` and ``up(x)`` (for the product) and the product (for ``down``).
`SiluAndMul` keeps ``gate(x)`` and ``up(x)`` only and computes the SiLU again in backward, so the
MLP keeps three: a quarter less of the MLP's activations, which are most of a decoder's. Its
forward and its gradients are computed by the same kernels in the same order as autograd's
(``silu``, ``mul``; ``silu_backward`` of ``grad · up``, ``grad · silu(gate)``), so the numbers
are bit-identical; the cost is one SiLU per MLP in backward.

`fuse_gated_mlps` switches a model's MLPs over where that holds: every module with ``gate_proj``,
``up_proj``, ``down_proj`` and a SiLU ``act_fn`` whose own forward gives exactly what the fused one
gives on a test input (a module whose forward does anything else, or that cannot run a forward
outside its training engine, such as a ZeRO-3 partition, is left as it is).
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch import nn


class SiluAndMul(torch.autograd.Function):
    """``silu(gate) * up``, keeping ``gate`` and ``up`` for backward (not ``silu(gate)`` too)."""

    @staticmethod
    def forward(ctx, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(gate, up)
        return F.silu(gate) * up

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        gate, up = ctx.saved_tensors
        grad_gate = torch.ops.aten.silu_backward(grad * up, gate) if ctx.needs_input_grad[0] else None
        grad_up = grad * F.silu(gate) if ctx.needs_input_grad[1] else None
        return grad_gate, grad_up


def _fused_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return self.down_proj(SiluAndMul.apply(self.gate_proj(x), self.up_proj(x)))


def is_silu_gated(module: nn.Module) -> bool:
    """Whether ``module`` has the attributes of a SiLU-gated MLP (its forward is checked separately)."""
    parts = (getattr(module, name, None) for name in ("gate_proj", "up_proj", "down_proj"))
    activation = getattr(module, "act_fn", None)
    return all(isinstance(part, nn.Module) for part in parts) and type(activation).__name__ in {
        "SiLU",
        "SiLUActivation",
    }


def fuse_gated_mlps(model: nn.Module) -> int:
    """Give every SiLU-gated MLP of ``model`` the fused forward where it computes the same; returns
    how many MLPs were switched."""
    fused = 0
    for module in model.modules():
        if is_silu_gated(module) and "forward" not in vars(module) and _same_output(module):
            module.forward = types.MethodType(_fused_forward, module)
            fused += 1
    return fused


def _same_output(module: nn.Module) -> bool:
    """Whether the module's own forward equals the fused one, bit for bit, on a random input."""
    try:
        weight = next(p for p in module.gate_proj.parameters() if p.dim() == 2)
        generator = torch.Generator(device="cpu").manual_seed(0)
        x = torch.randn(2, weight.shape[1], generator=generator).to(weight.device, weight.dtype)
        with torch.no_grad():
            return torch.equal(module(x), _fused_forward(module, x))
    except (RuntimeError, StopIteration, ValueError, TypeError, IndexError):
        return False
