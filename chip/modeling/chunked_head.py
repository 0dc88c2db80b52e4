"""The LM head, the log-probs and the token-level KL over chunks of response positions.

At large vocabularies the logits are the largest tensors of a preference step: Qwen2-VL's 152k
vocabulary over 8 rows of 512 response tokens is 2.5 GB per float32 ``(S, R, V)`` tensor, and the
plain path holds several (policy logits, their log-softmax, the reference's, the KL's terms).
:func:`chunked_head_scores` applies the head to ``chunk_size`` positions at a time and keeps only
``(S, R)`` results; in backward each chunk's logits are computed again from its hidden states
(activation checkpointing), so peak memory holds one chunk's ``(S, chunk, V)`` tensors, not the
whole response's. The numbers are those of the plain path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from chip.losses import token_kl, topk_token_kl

Head = Callable[[Tensor], Tensor]  # hidden (..., H) -> logits (..., V), the family's transform included


@dataclass
class HiddenReference:
    """The reference as hidden states and its head: its logits are computed chunk by chunk, without grad."""

    hidden: Tensor  # (S, R, H)
    head: Head

    def kl(self, policy_logits: Tensor, positions: slice) -> Tensor:
        with torch.no_grad():
            ref_logits = self.head(self.hidden[:, positions]).float()  # (S, c, V)
        return token_kl(policy_logits, ref_logits)  # (S, c)


@dataclass
class TopKReference:
    """The reference as its cached top-k log-probs per token (`chip.losses.topk_token_kl`)."""

    logps: Tensor  # (S, R, k)
    ids: Tensor  # (S, R, k)

    def kl(self, policy_logits: Tensor, positions: slice) -> Tensor:
        return topk_token_kl(policy_logits, self.logps[:, positions], self.ids[:, positions])  # (S, c)


@dataclass
class LogitsReference:
    """The reference's whole logits (a reference scored by another route), read chunk by chunk."""

    logits: Tensor  # (S, R, V)

    def kl(self, policy_logits: Tensor, positions: slice) -> Tensor:
        return token_kl(policy_logits, self.logits[:, positions])  # (S, c)


def chunked_head_scores(
    hidden: Tensor,
    head: Head,
    targets: Tensor,
    mask: Tensor,
    chunk_size: int,
    reference: HiddenReference | TopKReference | LogitsReference | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Log-probs ``(S, R)`` of ``targets`` and, with a ``reference``, the KL(π_ref ‖ π_θ) ``(S, R)``.

    ``hidden`` ``(S, R, H)`` are the policy's states at the positions that predict each response
    token; both results are float32 and 0 where ``mask`` is False, as on the plain path.
    """
    logps, kls = [], []
    for start in range(0, hidden.shape[1], chunk_size):
        positions = slice(start, start + chunk_size)
        part = (hidden[:, positions], targets[:, positions], mask[:, positions])
        if torch.is_grad_enabled() and hidden.requires_grad:
            logp, kl = checkpoint(_chunk, head, reference, positions, *part, use_reentrant=False)
        else:
            logp, kl = _chunk(head, reference, positions, *part)
        logps.append(logp)
        kls.append(kl)
    logps_all = torch.cat(logps, dim=1) if logps else hidden.new_zeros(targets.shape, dtype=torch.float32)
    if reference is None:
        return logps_all, None
    kl_all = torch.cat(kls, dim=1) if kls else torch.zeros_like(logps_all)
    return logps_all, kl_all


def _chunk(
    head: Head,
    reference: HiddenReference | TopKReference | LogitsReference | None,
    positions: slice,
    hidden: Tensor,
    targets: Tensor,
    mask: Tensor,
) -> tuple[Tensor, Tensor | None]:
    logits = head(hidden).float().masked_fill(~mask[..., None], 0.0)  # (S, c, V)
    logp = logits.gather(-1, targets[..., None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)  # (S, c)
    logp = logp.masked_fill(~mask, 0.0)
    if reference is None:
        return logp, None
    return logp, reference.kl(logits, positions).masked_fill(~mask, 0.0)  # (S, c) each


def kl_against(policy, reference) -> Tensor:
    """KL(π_ref ‖ π_θ) ``(S, R)`` of a policy `ResponseScores` against the reference's scores (logits,
    or states with a chunked head) or its cached top-k ``(logps, ids)``; chunked when the policy is."""
    if policy.hidden is None:
        if isinstance(reference, tuple):
            return topk_token_kl(policy.logits, *reference)
        if reference.hidden is not None:  # a chunked reference beside an unchunked policy (another route)
            with torch.no_grad():
                ref_logits = (
                    reference.head(reference.hidden).float().masked_fill(~reference.mask[..., None], 0.0)
                )
            return token_kl(policy.logits, ref_logits)
        return token_kl(policy.logits, reference.logits)
    if isinstance(reference, tuple):
        ref = TopKReference(*reference)
    elif reference.hidden is not None:
        ref = HiddenReference(reference.hidden, reference.head)
    else:
        ref = LogitsReference(reference.logits)
    _, kl = chunked_head_scores(
        policy.hidden, policy.head, policy.targets, policy.mask, policy.chunk_size, ref
    )
    return kl
