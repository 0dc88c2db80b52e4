"""The memory-light log-prob of the target token, the fused KL and the logsumexp-and-gather kernel equal
torch's ``log_softmax`` + ``gather`` (+ ``kl_div``), value and gradient, whole or in chunks of rows."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.testing import assert_close

from chip.modeling import ResponseScores, kernels
from chip.modeling.kernels import LogSumExpGather, TargetLogProb, TargetLogProbAndKL


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


def test_logsumexp_rows_in_small_chunks_equals_torch(monkeypatch):
    """Chunks of two rows (a 64-byte scratch at V = 7, float32) give torch's values, -inf rows included."""
    monkeypatch.setattr(kernels, "ROW_BYTES", 64)
    torch.manual_seed(0)
    values = 5 * torch.randn(5, 7)
    values[3] = -math.inf
    assert [rows.start for rows in kernels._chunks(values)] == [0, 2, 4]
    assert_close(kernels.logsumexp_rows(values), torch.logsumexp(values, -1), rtol=0, atol=1e-6)


def test_logsumexp_gather_value_and_gradient(monkeypatch):
    """``(logsumexp(z), z[index])`` against torch, gradients by finite differences, in chunks of 3 rows."""
    monkeypatch.setattr(kernels, "ROW_BYTES", 3 * 11 * 8)
    torch.manual_seed(0)
    logits = (3 * torch.randn(7, 11, dtype=torch.float64)).requires_grad_()
    index = torch.randint(0, 11, (7, 4))
    log_total, picked = LogSumExpGather.apply(logits, index)
    assert_close(log_total, torch.logsumexp(logits, -1), rtol=0, atol=1e-12)
    assert_close(picked, logits.gather(-1, index), rtol=0, atol=0)
    weights = torch.randn(7, 5, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda z: (weights * torch.cat([x.view(7, -1) for x in LogSumExpGather.apply(z, index)], 1)).sum(),
        (logits,),
    )


def test_fused_kl_in_chunks_with_a_given_reference_logsumexp(monkeypatch):
    """Chunks of 2 rows and the reference's logsumexp passed in: the separate computations' values, and
    gradients by finite differences."""
    monkeypatch.setattr(kernels, "ROW_BYTES", 2 * 13 * 8)
    torch.manual_seed(1)
    logits = (3 * torch.randn(5, 13, dtype=torch.float64)).requires_grad_()
    ref_logits = 3 * torch.randn(5, 13, dtype=torch.float64)
    targets = torch.randint(0, 13, (5,))
    ref_total = torch.logsumexp(ref_logits, -1)
    logp, kl = TargetLogProbAndKL.apply(logits, targets, ref_logits, ref_total)
    log_q, log_p = torch.log_softmax(logits, -1), torch.log_softmax(ref_logits, -1)
    assert_close(logp, log_q.gather(-1, targets[:, None]).squeeze(-1), rtol=0, atol=1e-12)
    assert_close(kl, F.kl_div(log_q, log_p, log_target=True, reduction="none").sum(-1), rtol=0, atol=1e-12)
    weights = torch.randn(2, 5, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda z: (weights * torch.stack(TargetLogProbAndKL.apply(z, targets, ref_logits, ref_total))).sum(),
        (logits,),
    )


def test_topk_kl_from_scores_equals_the_log_softmax_formula():
    """`ResponseScores.token_kl` against a cached top-k reference (one logsumexp and a gather) equals
    the bucketed KL written out with torch's ``log_softmax``: Σ_topk p (log p − log q) plus the tail
    term p_tail (log p_tail − log q_tail); log-probs and gradients too."""
    torch.manual_seed(2)
    mask = torch.tensor([[True, True, False], [True, True, True]])  # (S=2, R=3), n = 5
    logits = (2 * torch.randn(5, 17)).requires_grad_()  # float32, as the top-k KL computes
    targets = torch.randint(0, 17, (5,))
    ref = torch.log_softmax(2 * torch.randn(2, 3, 17), -1)
    ref_logps, ref_ids = ref.topk(4, dim=-1)  # (2, 3, 4) each
    scores = ResponseScores(mask, token_logits=logits, targets=targets)
    kl = scores.token_kl((ref_logps, ref_ids))[mask]  # (5,)
    lp = scores.logps[mask]  # (5,)

    plain = logits.detach().clone().requires_grad_()
    log_q = torch.log_softmax(plain, -1)  # (5, 17)
    p_top, ids = ref_logps[mask], ref_ids[mask]  # (5, 4)
    q_top = log_q.gather(-1, ids)
    p_tail = torch.log1p(-p_top.exp().sum(-1))
    q_tail = torch.log1p(-q_top.exp().sum(-1))
    expected_kl = (p_top.exp() * (p_top - q_top)).sum(-1) + p_tail.exp() * (p_tail - q_tail)
    expected_lp = log_q.gather(-1, targets[:, None]).squeeze(-1)
    assert_close(kl, expected_kl, rtol=0, atol=1e-5)
    assert_close(lp, expected_lp, rtol=0, atol=1e-5)
    (kl.sum() + 0.5 * lp.sum()).backward()
    (expected_kl.sum() + 0.5 * expected_lp.sum()).backward()
    assert_close(logits.grad, plain.grad, rtol=0, atol=1e-5)


def test_reused_logits_hold_the_gradient_torch_computes():
    """With ``reuse_logits`` each kernel's backward writes its gradient into the logits' storage
    (no second (n, V) tensor) and the gradient reaching the layer before equals torch's
    log_softmax + gather (+ KL) autograd on a copy of the same layer."""
    torch.manual_seed(1)
    hidden = torch.randn(6, 4, dtype=torch.float64)
    weight = torch.randn(9, 4, dtype=torch.float64)
    targets, index = torch.randint(0, 9, (6,)), torch.randint(0, 9, (6, 3))
    ref_logits = 2 * torch.randn(6, 9, dtype=torch.float64)
    weights = torch.randn(2, 6, dtype=torch.float64)

    def torch_terms(logits):
        logq = torch.log_softmax(logits, -1)
        p = torch.softmax(ref_logits, -1)
        kl = (p * (torch.log_softmax(ref_logits, -1) - logq)).sum(-1)
        lse = torch.logsumexp(logits, -1)
        return logq.gather(-1, targets[:, None]).squeeze(-1), kl, lse, logits.gather(-1, index)

    kernels_and_losses = {
        "TargetLogProb": (
            lambda z, reuse: TargetLogProb.apply(z, targets, reuse),
            lambda out, t: (weights[0] * out).sum(),
            lambda t: (weights[0] * t[0]).sum(),
        ),
        "TargetLogProbAndKL": (
            lambda z, reuse: TargetLogProbAndKL.apply(z, targets, ref_logits, None, reuse),
            lambda out, t: (weights[0] * out[0] + weights[1] * out[1]).sum(),
            lambda t: (weights[0] * t[0] + weights[1] * t[1]).sum(),
        ),
        "LogSumExpGather": (
            lambda z, reuse: LogSumExpGather.apply(z, index, reuse),
            lambda out, t: (weights[0] * out[0]).sum() + (weights[1][:, None] * out[1]).sum(),
            lambda t: (weights[0] * t[2]).sum() + (weights[1][:, None] * t[3]).sum(),
        ),
    }
    for name, (kernel, loss_of, torch_loss_of) in kernels_and_losses.items():
        layer = hidden.clone().requires_grad_()
        logits = layer @ weight.T  # (6, 9), a non-leaf the kernel owns
        seen = []
        logits.register_hook(seen.append)
        loss_of(kernel(logits, True), None).backward()
        assert seen[0].data_ptr() == logits.data_ptr(), name  # the gradient lives in the logits' storage
        expected_layer = hidden.clone().requires_grad_()
        torch_loss_of(torch_terms(expected_layer @ weight.T)).backward()
        assert_close(layer.grad, expected_layer.grad, rtol=1e-10, atol=1e-12, msg=name)
