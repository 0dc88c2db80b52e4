"""The shared-prefix layout: one row per preference pair, ``[prompt, chosen, rejected, padding]``.

DPO-style objectives score the chosen and the rejected response after the same image and prompt.
In a vision-language model that prompt is most of the sequence (576 image tokens for LLaVA-1.5,
up to 2,880 for LLaVA-NeXT, against ~100 response tokens), so scoring the two responses as two
rows runs the vision tower and the whole prefix twice. :meth:`VLMAdapter.collate_pairs` lays each
pair out once, and these helpers turn that row into one forward pass:

- a block attention mask: every token attends causally to the prompt and to its own response,
  and the rejected tokens never see the chosen ones, so each response is scored exactly as in its
  own ``[prompt, response]`` row;
- explicit positions: the rejected tokens restart right after the prompt (for M-RoPE families
  the model's own ``get_rope_index`` computes them, see `chip.modeling.logps`);
- the hidden state of the prompt's last token predicts the first token of *both* responses.

Where a model cannot take a custom 4D mask (flash attention, sliding windows, families not marked
in the quirk table), :func:`unpack_pairs` rebuilds the two-rows-per-pair batch of
:meth:`VLMAdapter.collate`, so a pair batch is always usable.
"""

from __future__ import annotations

import torch

from chip.modeling.batch import cat_pair_rows, for_both_rows, pair_rows
from chip.modeling.quirks import ALL_TOKEN_KEYS

PAIR_LENGTHS = "pair_lengths"  # (B, 3) long: prompt, kept chosen and kept rejected lengths per row

# Branch of each packed position, as `pair_branches` returns it.
PADDING, PROMPT, CHOSEN, REJECTED = -1, 0, 1, 2


def is_pair_batch(batch: dict) -> bool:
    """Whether ``batch`` is in the shared-prefix layout of :meth:`VLMAdapter.collate_pairs`."""
    return PAIR_LENGTHS in batch


def scored_lengths(batch: dict) -> list[int]:
    """Kept response tokens per scored row, in the row order `response_logps` returns.

    For a pair batch of B examples that is ``[chosen_1..chosen_B, rejected_1..rejected_B]``;
    for a batch of :meth:`VLMAdapter.collate` it is one entry per row.
    """
    if is_pair_batch(batch):
        lengths = batch[PAIR_LENGTHS]
        return pair_rows(lengths[:, CHOSEN].tolist(), lengths[:, REJECTED].tolist())
    return batch["response_mask"].sum(-1).tolist()


def pair_branches(lengths: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Branch of every packed position: PROMPT, CHOSEN, REJECTED or PADDING, ``(B, T)`` long."""
    positions = torch.arange(seq_len, device=lengths.device)[None, :]  # (1, T)
    ends = lengths.cumsum(-1)  # (B, 3) end of prompt, chosen, rejected
    branch = torch.full((lengths.shape[0], seq_len), PADDING, dtype=torch.long, device=lengths.device)
    for name, end in zip((REJECTED, CHOSEN, PROMPT), (ends[:, 2], ends[:, 1], ends[:, 0])):
        branch = torch.where(positions < end[:, None], name, branch)  # (B, T)
    return branch


def pair_token_index(lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where each response token sits and which position predicts it: ``(positions, predicting, mask)``.

    All three are ``(B, 2, R)``, ``[:, 0]`` the chosen and ``[:, 1]`` the rejected tokens,
    left-aligned; R is the longest kept response. Position ``t - 1`` predicts token ``t``, except
    that the first token of either response is predicted by the prompt's last position. Padding
    entries point at position 0.
    """
    prompt = lengths[:, PROMPT]  # (B,)
    kept = lengths[:, CHOSEN:]  # (B, 2)
    longest = int(kept.max()) if kept.numel() else 0
    offsets = torch.arange(longest, device=lengths.device)  # (R,)
    starts = torch.stack([prompt, prompt + kept[:, 0]], dim=1)  # (B, 2)
    mask = offsets[None, None, :] < kept[:, :, None]  # (B, 2, R)
    positions = (starts[:, :, None] + offsets) * mask  # (B, 2, R)
    after_prompt = (prompt - 1)[:, None, None].expand_as(positions)  # (B, 2, R)
    predicting = torch.where(offsets == 0, after_prompt, positions - 1) * mask  # (B, 2, R)
    if bool((prompt < 1).any()):
        raise ValueError("a response cannot start at position 0: no token predicts it")
    return positions, predicting, mask


def pair_attention_mask(lengths: torch.Tensor, seq_len: int, dtype: torch.dtype) -> torch.Tensor:
    """The block-causal mask ``(B, 1, T, T)``: bool (True = attend) or additive in ``dtype``.

    Query i sees key j when j ≤ i, j is not padding, and not (i rejected and j chosen). SDPA takes
    the bool form; eager attention adds the float form (0 or the dtype's minimum) to its scores.
    Padding queries see every earlier real token, so no row of the softmax is empty.
    """
    branch = pair_branches(lengths, seq_len)  # (B, T)
    index = torch.arange(seq_len, device=lengths.device)  # (T,)
    causal = index[None, :] <= index[:, None]  # (T, T) key j <= query i
    real_key = (branch != PADDING)[:, None, :]  # (B, 1, T)
    crossing = (branch == REJECTED)[:, :, None] & (branch == CHOSEN)[:, None, :]  # (B, T, T)
    allowed = (causal[None] & real_key & ~crossing)[:, None]  # (B, 1, T, T)
    if dtype == torch.bool:
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype, device=lengths.device).masked_fill(
        ~allowed, torch.finfo(dtype).min
    )  # (B, 1, T, T)


def pair_row_masks(lengths: torch.Tensor, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens of the two unpacked rows ``[prompt, chosen]`` and ``[prompt, rejected]``, each ``(B, T)`` bool."""
    branch = pair_branches(lengths, seq_len)  # (B, T)
    prompt = branch == PROMPT
    return prompt | (branch == CHOSEN), prompt | (branch == REJECTED)


def pair_text_positions(lengths: torch.Tensor, seq_len: int) -> torch.Tensor:
    """1D position of every packed token in its own unpacked row, ``(B, T)`` long (0 at padding)."""
    chosen_row, rejected_row = pair_row_masks(lengths, seq_len)  # (B, T) each
    in_chosen = chosen_row.long().cumsum(-1) - 1  # (B, T)
    in_rejected = rejected_row.long().cumsum(-1) - 1  # (B, T)
    positions = torch.where(rejected_row & ~chosen_row, in_rejected, in_chosen)  # (B, T)
    return positions.masked_fill(~(chosen_row | rejected_row), 0)


def image_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The processor's image outputs in a collated batch (everything that is not per token)."""
    per_token = {"input_ids", "attention_mask", "response_mask", PAIR_LENGTHS, *ALL_TOKEN_KEYS}
    return {key: value for key, value in batch.items() if key not in per_token}


def unpack_pairs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The fallback layout: rows ``[prompt_b, chosen_b]`` then ``[prompt_b, rejected_b]`` (2B rows).

    Returns what :meth:`VLMAdapter.collate` would have built for those rows, minus the image
    inputs, which the caller either repeats (`chip.modeling.batch.for_both_rows`) or feeds once as shared
    features. Per-token processor outputs ``(B, T, ...)`` are unpacked like ``input_ids``, 0 at
    padding. Padding ids repeat each row's last real token (never an image
    placeholder); the attention mask hides them.
    """
    lengths = batch[PAIR_LENGTHS]  # (B, 3)
    prompt = for_both_rows(lengths[:, PROMPT])  # (2B,)
    kept = cat_pair_rows(lengths[:, CHOSEN], lengths[:, REJECTED])  # (2B,)
    skip = cat_pair_rows(
        torch.zeros_like(lengths[:, CHOSEN]), lengths[:, CHOSEN]
    )  # (2B,) chosen tokens to jump
    row_len = prompt + kept  # (2B,)
    seq_len = int(row_len.max())
    index = torch.arange(seq_len, device=lengths.device)[None, :]  # (1, T')
    valid = index < row_len[:, None]  # (2B, T')
    source = torch.where(index < prompt[:, None], index, index + skip[:, None])  # (2B, T')
    source = torch.where(valid, source, (row_len - 1 + skip)[:, None])  # (2B, T')

    out: dict[str, torch.Tensor] = {}
    for key in ("input_ids", *ALL_TOKEN_KEYS):
        if key not in batch:
            continue
        value = for_both_rows(batch[key])  # (2B, T, ...)
        rows = torch.arange(len(value), device=value.device)[:, None]  # (2B, 1)
        gathered = value[rows, source]  # (2B, T', ...)
        if key != "input_ids":
            gathered = gathered * valid.view(*valid.shape, *[1] * (value.dim() - 2)).to(gathered.dtype)
        out[key] = gathered
    out["attention_mask"] = valid.long()  # (2B, T')
    out["response_mask"] = valid & (index >= prompt[:, None])  # (2B, T')
    return out
