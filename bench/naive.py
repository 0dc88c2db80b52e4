"""CHiP computed the way the authors' released code computes it: the baseline chip improves on.

One forward per row type — W = (y_w | v), L = (y_l | v), C = (y_w | ṽ) — for the policy and
again for a live reference, each producing full-sequence logits ``(B, T, V)`` and their full
log-softmax, from which the response tokens' log-probs are read, and the token-level KL taken
over every position before masking. The loss is chip's (`chip.losses.chip_loss`, with the
released code's bugs fixed), so the numbers equal chip's and only the cost differs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from accelerate.utils import send_to_device
from torch import Tensor, nn

from chip.data import PreferenceExample
from chip.losses import ChipLossConfig, TokenScores, chip_loss
from chip.modeling import VLMAdapter
from chip.modeling.batch import CORRUPT, CORRUPT_SEGMENT, REAL_SEGMENT, split_pairs
from chip.modeling.plans import response_positions
from chip.training.collate import ChipCollator


@dataclass
class NaiveBatch:
    """The three row types as separate batches of `VLMAdapter.collate`, and their segment flags."""

    chosen: dict[str, Tensor]  # W rows
    rejected: dict[str, Tensor]  # L rows
    corrupt: dict[str, Tensor]  # C rows
    chosen_segment: Tensor  # (B, R) bool
    rejected_segment: Tensor  # (B, R) bool
    corrupt_segment: Tensor  # (B, R) bool

    def to(self, device: torch.device) -> NaiveBatch:
        return NaiveBatch(**{name: send_to_device(value, device) for name, value in vars(self).items()})


def naive_batch(
    adapter: VLMAdapter, collator: ChipCollator, examples: Sequence[PreferenceExample]
) -> NaiveBatch:
    """Rows W, L, C of ``examples``; C and the segment flags come from chip's collator (same ṽ)."""
    chip_batch = collator(list(examples))
    prompts = [adapter.encode_prompt(example.load_images(), example.prompt) for example in examples]
    chosen = [adapter.encode_response(example.chosen) for example in examples]
    rejected = [adapter.encode_response(example.rejected) for example in examples]
    chosen_flags, rejected_flags = split_pairs(chip_batch[REAL_SEGMENT], len(examples))  # (B, R) each
    chosen_rows, rejected_rows = (
        adapter.collate(list(zip(prompts, chosen))),
        adapter.collate(list(zip(prompts, rejected))),
    )
    return NaiveBatch(
        chosen=chosen_rows,
        rejected=rejected_rows,
        corrupt=chip_batch[CORRUPT],
        # R of the chip batch is the longest of both responses; each row type keeps its own
        chosen_segment=chosen_flags[:, : int(chosen_rows["response_mask"].sum(-1).max())],
        rejected_segment=rejected_flags[:, : int(rejected_rows["response_mask"].sum(-1).max())],
        corrupt_segment=chip_batch[CORRUPT_SEGMENT],
    )


def _full_log_softmax(model: nn.Module, rows: dict[str, Tensor]) -> Tensor:
    """Log-softmax of the logits at every position of every row, ``(B, T, V)`` float32."""
    inputs = {key: value for key, value in rows.items() if key != "response_mask"}
    logits = model(**inputs, use_cache=False).logits.float()  # (B, T, V): the whole sequence
    return torch.log_softmax(logits, dim=-1)  # (B, T, V)


def _at_responses(values: Tensor, rows: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """``values`` (B, T, ...) read at the positions predicting each response token: (B, R, ...), mask."""
    positions, mask = response_positions(rows["response_mask"])  # (B, R) each
    predicting = (positions - 1).clamp(min=0)  # (B, R)
    index = predicting.view(*predicting.shape, *([1] * (values.dim() - 2)))
    return values.gather(1, index.expand(-1, -1, *values.shape[2:])), mask


def naive_loss(policy: nn.Module, reference: nn.Module, batch: NaiveBatch, config: ChipLossConfig) -> Tensor:
    """Mean CHiP loss of the batch, from six separate full-logit forwards."""
    scores = {}
    for name, rows, segment in (
        ("chosen", batch.chosen, batch.chosen_segment),
        ("rejected", batch.rejected, batch.rejected_segment),
        ("corrupt", batch.corrupt, batch.corrupt_segment),
    ):
        policy_logp = _full_log_softmax(policy, rows)  # (B, T, V)
        with torch.no_grad():
            ref_logp = _full_log_softmax(reference, rows)  # (B, T, V)
        targets = rows["input_ids"].roll(-1, dims=1)[..., None]  # (B, T, 1) token t+1 at position t
        logps, mask = _at_responses(policy_logp.gather(-1, targets).squeeze(-1), rows)  # (B, R)
        ref_logps, _ = _at_responses(ref_logp.gather(-1, targets).squeeze(-1), rows)  # (B, R)
        kl = None
        if name != "corrupt" and config.needs_kl:
            every_kl = (ref_logp.exp() * (ref_logp - policy_logp)).sum(-1)  # (B, T): TDPO's per-position KL
            kl = _at_responses(every_kl, rows)[0].masked_fill(~mask, 0.0)  # (B, R)
        logps, ref_logps = logps.masked_fill(~mask, 0.0), ref_logps.masked_fill(~mask, 0.0)
        scores[name] = TokenScores(logps=logps, ref_logps=ref_logps, mask=mask, segment=segment, kl=kl)
    losses, _ = chip_loss(scores["chosen"], scores["rejected"], scores["corrupt"], config)
    return losses.mean()
