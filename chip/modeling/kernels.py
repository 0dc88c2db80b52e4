"""Autograd kernels for the log-prob of a target token and the token KL, each in one ``(n, V)`` buffer.

A leaf module: the scores (`chip.modeling.scores`) and the chunked head (`chip.modeling.chunked_head`)
both call these, and neither is imported here.
"""

from __future__ import annotations

import torch


class TargetLogProb(torch.autograd.Function):
    """``log_softmax(z)[..., y]`` as ``z_y - logsumexp(z)``, with a backward that allocates one tensor.

    Autograd through ``log_softmax`` + ``gather`` keeps a second ``(n, V)`` tensor (the log-probs)
    for backward and builds two more in it (the scattered gradient and the softmax term). Here only
    the logits (alive anyway) and their logsumexp are kept, and the gradient
    ``g · (onehot(y) − softmax(z))`` is built in place in a single ``(n, V)`` buffer.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        log_total = torch.logsumexp(logits, dim=-1)  # (...)
        ctx.save_for_backward(logits, targets, log_total)
        return logits.gather(-1, targets[..., None]).squeeze(-1) - log_total  # (...)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        logits, targets, log_total = ctx.saved_tensors
        grad_logits = torch.sub(logits, log_total[..., None]).exp_()  # (..., V) softmax(z)
        grad_logits.mul_(-grad[..., None])  # (..., V) -g · softmax(z)
        grad_logits.scatter_add_(-1, targets[..., None], grad[..., None])  # (..., V) + g · onehot(y)
        return grad_logits, None


class TargetLogProbAndKL(torch.autograd.Function):
    """``log_softmax(z)[y]`` and KL(π_ref ‖ π_θ) ``= Σ_v p_v (log p_v − log q_v)`` per token, in one pass.

    ``z`` are the policy's logits (q = softmax(z)), ``r`` the reference's (p = softmax(r)), both
    ``(n, V)``. Separately, the log-prob, the two log-softmaxes and the KL's terms each build and
    keep ``(n, V)`` tensors; here only the logits (alive anyway) and two logsumexps are kept, and
    the gradient ``g_lp·(onehot(y) − q) + g_kl·(q − p)`` is built in one buffer.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, ref_logits: torch.Tensor):
        log_total = torch.logsumexp(logits, dim=-1)  # (n,)
        ref_log_total = torch.logsumexp(ref_logits, dim=-1)  # (n,)
        ref_logp = ref_logits - ref_log_total[:, None]  # (n, V) log p
        gap = (ref_logp - logits).add_(log_total[:, None])  # (n, V) log p − log q
        kl = torch.linalg.vecdot(ref_logp.exp_(), gap)  # (n,)
        ctx.save_for_backward(logits, targets, ref_logits, log_total, ref_log_total)
        logp = logits.gather(-1, targets[:, None]).squeeze(-1) - log_total  # (n,)
        return logp, kl

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_logp: torch.Tensor, grad_kl: torch.Tensor):
        logits, targets, ref_logits, log_total, ref_log_total = ctx.saved_tensors
        grad = torch.sub(logits, log_total[:, None]).exp_()  # (n, V) q
        grad.mul_((grad_kl - grad_logp)[:, None])  # (n, V) (g_kl − g_lp)·q
        ref_probs = torch.sub(ref_logits, ref_log_total[:, None]).exp_()  # (n, V) p
        grad.sub_(ref_probs.mul_(grad_kl[:, None]))  # (n, V) − g_kl·p
        grad.scatter_add_(-1, targets[:, None], grad_logp[:, None])  # (n, V) + g_lp·onehot(y)
        return grad, None, None
