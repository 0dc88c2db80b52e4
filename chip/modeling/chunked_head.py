"""The LM head, the log-probs and the token-level KL over chunks of response positions.

At large vocabularies the logits are the largest tensors of a preference step: Qwen2-VL's 152k
vocabulary over 8 rows of 512 response tokens is 2.5 GB per float32 ``(S, R, V)`` tensor, and the
plain path holds several (policy logits, their log-softmax, the reference's, the KL's terms).
:func:`chunked_head_scores` applies the head to ``chunk_size`` response tokens at a time and keeps only
per-token results; in backward each chunk's logits are computed again from its hidden states
(activation checkpointing), so peak memory holds one chunk's ``(chunk, V)`` tensors, not the
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

    hidden: Tensor  # (n, H)
    head: Head

    def kl(self, policy_logits: Tensor, tokens: slice) -> Tensor:
        with torch.no_grad():
            ref_logits = self.head(self.hidden[tokens]).float()  # (c, V)
        return token_kl(policy_logits, ref_logits)  # (c,)


@dataclass
class TopKReference:
    """The reference as its cached top-k log-probs per token (`chip.losses.topk_token_kl`)."""

    logps: Tensor  # (n, k)
    ids: Tensor  # (n, k)

    def kl(self, policy_logits: Tensor, tokens: slice) -> Tensor:
        return topk_token_kl(policy_logits, self.logps[tokens], self.ids[tokens])  # (c,)


@dataclass
class LogitsReference:
    """The reference's whole logits (a reference scored by another route), read chunk by chunk."""

    logits: Tensor  # (n, V)

    def kl(self, policy_logits: Tensor, tokens: slice) -> Tensor:
        return token_kl(policy_logits, self.logits[tokens])  # (c,)


def chunked_head_scores(
    hidden: Tensor,
    head: Head,
    targets: Tensor,
    chunk_size: int,
    reference: HiddenReference | TopKReference | LogitsReference | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Log-probs ``(n,)`` of ``targets`` ``(n,)`` and, with a ``reference``, the KL(π_ref ‖ π_θ) ``(n,)``.

    ``hidden`` ``(n, H)`` are the policy's states at the positions that predict each response
    token; both results are float32, as on the plain path.
    """
    logps, kls = [], []
    for start in range(0, hidden.shape[0], chunk_size):
        tokens = slice(start, start + chunk_size)
        if torch.is_grad_enabled() and hidden.requires_grad:
            logp, kl = checkpoint(
                _chunk, head, reference, tokens, hidden[tokens], targets[tokens], use_reentrant=False
            )
        else:
            logp, kl = _chunk(head, reference, tokens, hidden[tokens], targets[tokens])
        logps.append(logp)
        kls.append(kl)
    logps_all = torch.cat(logps) if logps else hidden.new_zeros(targets.shape, dtype=torch.float32)
    if reference is None:
        return logps_all, None
    kl_all = torch.cat(kls) if kls else torch.zeros_like(logps_all)
    return logps_all, kl_all


def _chunk(
    head: Head,
    reference: HiddenReference | TopKReference | LogitsReference | None,
    tokens: slice,
    hidden: Tensor,
    targets: Tensor,
) -> tuple[Tensor, Tensor | None]:
    logits = head(hidden).float()  # (c, V)
    logp = logits.gather(-1, targets[:, None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)  # (c,)
    if reference is None:
        return logp, None
    return logp, reference.kl(logits, tokens)  # (c,) each
