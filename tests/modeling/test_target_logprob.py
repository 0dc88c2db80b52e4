"""The memory-light log-prob of the target token equals ``log_softmax`` + ``gather``, value and gradient."""

from __future__ import annotations

import torch
from torch.testing import assert_close

from chip.modeling.scores import TargetLogProb


def test_value_and_gradient_equal_log_softmax_gather():
    torch.manual_seed(0)
    logits = (3 * torch.randn(3, 5, 11, dtype=torch.float64)).requires_grad_()
    targets = torch.randint(0, 11, (3, 5))
    assert torch.autograd.gradcheck(lambda z: TargetLogProb.apply(z, targets), (logits,))
    expected = torch.log_softmax(logits, dim=-1).gather(-1, targets[..., None]).squeeze(-1)
    assert_close(TargetLogProb.apply(logits, targets), expected, rtol=0, atol=1e-12)
