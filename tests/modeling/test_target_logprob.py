"""The memory-light log-prob of the target token equals ``log_softmax`` + ``gather``, value and gradient."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.testing import assert_close

from chip.modeling.kernels import TargetLogProb, TargetLogProbAndKL


def test_value_and_gradient_equal_log_softmax_gather():
    torch.manual_seed(0)
    logits = (3 * torch.randn(3, 5, 11, dtype=torch.float64)).requires_grad_()
    targets = torch.randint(0, 11, (3, 5))
    assert torch.autograd.gradcheck(lambda z: TargetLogProb.apply(z, targets), (logits,))
    expected = torch.log_softmax(logits, dim=-1).gather(-1, targets[..., None]).squeeze(-1)
    assert_close(TargetLogProb.apply(logits, targets), expected, rtol=0, atol=1e-12)


def test_fused_log_prob_and_kl_by_hand():
    """V = 2: q = softmax([0, ln 3]) = (1/4, 3/4), p = softmax([0, 0]) = (1/2, 1/2).

    log q_1 = ln(3/4); KL(p ‖ q) = ½ ln(½ / ¼) + ½ ln(½ / ¾) = ½ ln(4/3).
    """
    logits = torch.tensor([[0.0, math.log(3.0)]], dtype=torch.float64)
    ref_logits = torch.zeros(1, 2, dtype=torch.float64)
    logp, kl = TargetLogProbAndKL.apply(logits, torch.tensor([1]), ref_logits)
    assert_close(logp, torch.tensor([math.log(0.75)], dtype=torch.float64), rtol=0, atol=1e-15)
    assert_close(kl, torch.tensor([0.5 * math.log(4 / 3)], dtype=torch.float64), rtol=0, atol=1e-15)


def test_fused_log_prob_and_kl_equal_the_separate_computations():
    """Values against torch's ``log_softmax`` + ``kl_div``; gradients by finite differences, for any mix
    of the two outputs' upstream gradients; extreme logits stay finite."""
    torch.manual_seed(0)
    logits = (3 * torch.randn(7, 13, dtype=torch.float64)).requires_grad_()
    ref_logits = 3 * torch.randn(7, 13, dtype=torch.float64)
    targets = torch.randint(0, 13, (7,))
    logp, kl = TargetLogProbAndKL.apply(logits, targets, ref_logits)
    log_q = torch.log_softmax(logits, -1)
    log_p = torch.log_softmax(ref_logits, -1)
    assert_close(logp, log_q.gather(-1, targets[:, None]).squeeze(-1), rtol=0, atol=1e-12)
    assert_close(kl, F.kl_div(log_q, log_p, log_target=True, reduction="none").sum(-1), rtol=0, atol=1e-12)
    weights = torch.randn(2, 7, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda z: (weights * torch.stack(TargetLogProbAndKL.apply(z, targets, ref_logits))).sum(), (logits,)
    )
    extreme = torch.tensor([[1e4, -1e4, 0.0]])
    logp, kl = TargetLogProbAndKL.apply(extreme, torch.tensor([1]), extreme.flip(-1))
    assert torch.isfinite(logp).all() and torch.isfinite(kl).all()
