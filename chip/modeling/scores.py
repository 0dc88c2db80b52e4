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
from torch import Tensor

from chip.losses import topk_kl
from chip.modeling.chunked_head import (
    HiddenReference,
    LogitsReference,
    TopKReference,
    chunked_head_scores,
)
from chip.modeling.kernels import LogSumExpGather, TargetLogProbAndKL


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
    log_total: torch.Tensor | None = None  # (n,) logsumexp of ``token_logits`` once computed (no grad)
    _by_row: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, init=False, repr=False)

    @property
    def logps(self) -> torch.Tensor:
        """Log-prob of each response token ``(S, R)`` float32, left-aligned per row, 0 at padding."""
        if self.token_logps is None and self.token_logits is not None:
            log_total, picked = LogSumExpGather.apply(
                self.token_logits, self.targets[:, None]
            )  # (n,), (n, 1)
            self.token_logps, self.log_total = picked[:, 0] - log_total, log_total.detach()  # (n,) each
        if self.token_logps is None:
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
        kl, logps = kl_against(self, reference)  # (n,) each; logps where computed on the way
        if self.token_logps is None:
            self.token_logps = logps
        return spread(kl, self.mask)


def spread(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-token ``values`` ``(n, ...)`` laid out at the True entries of ``mask`` ``(S, R)`` -> ``(S, R, ...)``."""
    out = values.new_zeros(*mask.shape, *values.shape[1:])
    out[mask] = values
    return out


def kl_against(
    policy: ResponseScores, reference: ResponseScores | tuple[Tensor, Tensor]
) -> tuple[Tensor, Tensor | None]:
    """KL(π_ref ‖ π_θ) per real response token ``(n,)`` of a policy `ResponseScores` against the
    reference's scores of the same rows (logits, or states with a chunked head) or its cached top-k
    ``(logps, ids)`` ``(S, R, k)``. With a chunked policy the head runs once per chunk for both the
    KL and the policy's log-probs, and against whole reference logits one fused pass computes both;
    the log-probs are returned second then (``None`` otherwise)."""
    if isinstance(reference, tuple):
        ref = TopKReference(*(values[policy.mask] for values in reference))  # (n, k) each
        if policy.hidden is None and policy.token_logps is None:
            return _topk_kl_and_logps(policy, ref)
    elif reference.hidden is not None:
        ref = HiddenReference(reference.hidden, reference.head)
    else:
        ref = LogitsReference(reference.token_logits)
    if policy.hidden is None and isinstance(ref, LogitsReference) and policy.token_logps is None:
        ref_total = None if isinstance(reference, tuple) else reference.log_total
        logps, kl = TargetLogProbAndKL.apply(policy.token_logits, policy.targets, ref.logits, ref_total, True)
        policy.token_logits = None  # both results taken: the backward builds its gradient in them
        return kl, logps
    if policy.hidden is None:  # the policy's whole logits: one chunk
        return ref.kl(policy.token_logits, slice(None)), None
    logps, kl = chunked_head_scores(policy.hidden, policy.head, policy.targets, policy.chunk_size, ref)
    return kl, logps


def _topk_kl_and_logps(policy: ResponseScores, ref: TopKReference) -> tuple[Tensor, Tensor]:
    """KL against a cached top-k reference and the policy's log-probs ``(n,)`` each, from one
    logsumexp of the policy's logits and the few logits they read (`LogSumExpGather`)."""
    index = torch.cat([policy.targets[:, None], ref.ids.long()], dim=1)  # (n, 1 + k)
    vocab_size = policy.token_logits.shape[-1]
    log_total, picked = LogSumExpGather.apply(policy.token_logits, index, True)  # (n,), (n, 1 + k)
    policy.token_logits = None  # both results taken: the backward builds its gradient in them
    logps = picked - log_total[:, None]  # (n, 1 + k)
    return topk_kl(ref.logps, logps[:, 1:], vocab_size), logps[:, 0]
