"""What scoring a batch returns: per-token log-probs, and the logits (or states) the token KL reads.

The log-probs come back padded per scored row, ``(S, R)`` with a mask, because the losses sum per
row. Everything with a vocabulary axis is kept *flat*, one entry per real response token
``(n, V)`` in the mask's row-major order: with long-tailed response lengths most of a padded
``(S, R, V)`` tensor would be padding (rows of 20 tokens padded to the batch's 240), and the LM
head, the log-softmax and the KL would run over all of it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch


@dataclass
class ResponseScores:
    """Per-token scores of the response tokens of a batch.

    Where the logits are kept for the token KL (``token_logits``, or a chunked head's states) the
    log-probs are computed when first read, or together with the KL when that comes first: one pass
    over the ``(n, V)`` logits for both (`TargetLogProbAndKL`, or one head pass per chunk).
    """

    mask: torch.Tensor  # (S, R) bool, True on real response tokens
    token_logps: torch.Tensor | None = None  # (n,) float32 log-prob of each real response token
    token_logits: torch.Tensor | None = None  # (n, V) float32 logits predicting each real response token
    # With a chunked head (`chunk_size`), the states the head reads instead of ``token_logits``:
    hidden: torch.Tensor | None = None  # (n, H) states predicting each real response token
    head: Callable[[torch.Tensor], torch.Tensor] | None = None  # states -> logits, family transform included
    targets: torch.Tensor | None = None  # (n,) the response token ids
    chunk_size: int = 0  # tokens per head application (0: logits were computed whole)
    _by_row: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, init=False, repr=False)

    @property
    def logps(self) -> torch.Tensor:
        """Log-prob of each response token ``(S, R)`` float32, left-aligned per row, 0 at padding."""
        if self.token_logps is None and self.token_logits is not None:
            self.token_logps = TargetLogProb.apply(self.token_logits, self.targets)  # (n,)
        if self.token_logps is None:
            from chip.modeling.chunked_head import chunked_head_scores

            self.token_logps, _ = chunked_head_scores(self.hidden, self.head, self.targets, self.chunk_size)
        if self._by_row is None or self._by_row[0] is not self.token_logps:  # laid out once per value
            self._by_row = (self.token_logps, spread(self.token_logps, self.mask))
        return self._by_row[1]

    @property
    def logits(self) -> torch.Tensor | None:
        """``token_logits`` laid out per row, ``(S, R, V)`` with zeros at padding (for inspection)."""
        return None if self.token_logits is None else spread(self.token_logits, self.mask)

    def token_kl(self, reference: ResponseScores | tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """KL(π_ref ‖ π_θ) per response token ``(S, R)``, 0 at padding: against another
        `ResponseScores` of the same rows (its logits or states), or a cached top-k ``(logps, ids)``
        of the reference ``(S, R, k)`` each (`chip.losses.topk_token_kl`)."""
        from chip.modeling.chunked_head import kl_against

        kl, logps = kl_against(self, reference)  # (n,) each; logps where computed on the way
        if self.token_logps is None:
            self.token_logps = logps
        return spread(kl, self.mask)


def spread(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-token ``values`` ``(n, ...)`` laid out at the True entries of ``mask`` ``(S, R)`` -> ``(S, R, ...)``."""
    out = values.new_zeros(*mask.shape, *values.shape[1:])
    out[mask] = values
    return out


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
