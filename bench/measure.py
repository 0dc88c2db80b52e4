"""Peak memory of one step, and the error of the top-k reference KL, for `bench/bench_step.py`.

Peak memory is reported as what one variant alone would need: the bytes it holds between steps
(weights of its models, optimizer state, its collated batch; `Variant.resident_bytes`) plus the
highest amount of memory the step itself allocates on top of that. On CUDA the latter is
``torch.cuda.max_memory_allocated`` over the step minus the allocation at its start. On a CPU,
where PyTorch keeps no such counter, it is the running sum of the profiler's allocation and
free events (``profile_memory=True``) over the step — the same quantity, counted per tensor,
independent of the process's other variants and of how the C allocator returns memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from bench.peak import step_peak_bytes  # noqa: F401  (re-exported: bench_step imports it from here)
from chip.losses import token_kl, topk_token_kl
from chip.modeling import response_logps
from chip.modeling.batch import REAL


@torch.no_grad()
def topk_kl_error(
    policy: torch.nn.Module,
    reference: torch.nn.Module,
    batches: Sequence[dict],
    top_k: int,
    sharpened_entropy: float = 2.0,
) -> dict[str, Any]:
    """How far the bucketed top-k KL of a precomputed reference is from the exact KL.

    ``batches`` are chip's collated batches (their ``real`` entries: W and L rows). The exact KL
    uses the reference's full distribution; the approximation keeps its top-k log-probs (what
    `chip data precompute` stores) plus one tail bucket (`chip.losses.topk_token_kl`). Relative
    errors ``|approx − exact| / exact`` are reported per response token (tokens whose exact KL is
    below 1e-9 are skipped: the ratio is noise there) and per response (the sequence KL K(y)
    that enters the loss), with the reference's mean entropy and top-k mass for context.

    A randomly initialised model predicts almost uniformly (entropy ≈ log V), the worst case for
    a top-k summary. ``sharpened`` repeats the measurement with the reference's logits divided by
    the temperature that brings its mean entropy to ``sharpened_entropy`` nats, as a trained model
    on its own kind of text, and the policy's logits moved by the same temperature but keeping
    their learned offset from the reference (``policy - ref``) — an indication of the error on a
    peaked model, not a measurement of one.
    """
    policy_logits, ref_logits, masks = [], [], []
    for batch in batches:
        scores = response_logps(policy, batch[REAL], return_logits=True)
        ref = response_logps(reference, batch[REAL], return_logits=True)
        policy_logits.append(scores.logits[scores.mask])  # (n, V)
        ref_logits.append(ref.logits[scores.mask])  # (n, V)
        masks.append(scores.mask)
    policy_all, ref_all = torch.cat(policy_logits), torch.cat(ref_logits)  # (N, V) each
    sequence_lengths = torch.cat([mask.sum(-1) for mask in masks])  # (S,) tokens per scored response
    temperature = _temperature_for_entropy(ref_all, sharpened_entropy)
    return {
        "top_k": top_k,
        "benchmark_model": _errors(policy_all, ref_all, sequence_lengths, top_k),
        "sharpened": {
            "temperature": temperature,
            **_errors(
                ref_all / temperature + (policy_all - ref_all), ref_all / temperature, sequence_lengths, top_k
            ),
        },
    }


def _errors(policy: torch.Tensor, ref: torch.Tensor, lengths: torch.Tensor, top_k: int) -> dict[str, float]:
    """Error statistics of the top-k KL for per-token logits ``(N, V)`` grouped into responses of ``lengths``."""
    ref_logp = torch.log_softmax(ref.float(), dim=-1)  # (N, V)
    top_logps, top_ids = ref_logp.topk(min(top_k, ref_logp.shape[-1]), dim=-1)  # (N, k)
    exact = token_kl(policy, ref)  # (N,)
    approx = topk_token_kl(policy, top_logps, top_ids)  # (N,)
    real = exact > 1e-9
    tokens = (approx - exact).abs()[real] / exact[real]
    starts = torch.cumsum(lengths, 0) - lengths
    exact_seq = torch.stack([exact[s : s + n].sum() for s, n in zip(starts.tolist(), lengths.tolist())])
    approx_seq = torch.stack([approx[s : s + n].sum() for s, n in zip(starts.tolist(), lengths.tolist())])
    sequences = (approx_seq - exact_seq).abs() / exact_seq.clamp_min(1e-12)
    return {
        "token_rel_error_mean": float(tokens.mean()),
        "token_rel_error_max": float(tokens.max()),
        "sequence_rel_error_mean": float(sequences.mean()),
        "sequence_rel_error_max": float(sequences.max()),
        "tokens": int(exact.numel()),
        "exact_kl_per_token_mean": float(exact.mean()),
        "reference_entropy_mean_nats": float(-(ref_logp.exp() * ref_logp).sum(-1).mean()),
        "reference_topk_mass_mean": float(top_logps.exp().sum(-1).mean()),
    }


def _temperature_for_entropy(logits: torch.Tensor, entropy: float) -> float:
    """The temperature τ at which ``softmax(logits / τ)`` has mean entropy ``entropy`` (bisection on log τ)."""

    def mean_entropy(tau: float) -> float:
        logp = torch.log_softmax(logits.float() / tau, dim=-1)
        return float(-(logp.exp() * logp).sum(-1).mean())

    low, high = 1e-4, 1e2  # entropy grows with τ
    for _ in range(24):  # brackets τ to within a factor 1.000001
        mid = (low * high) ** 0.5
        low, high = (mid, high) if mean_entropy(mid) < entropy else (low, mid)
    return (low * high) ** 0.5
