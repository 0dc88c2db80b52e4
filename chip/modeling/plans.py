"""How a collated batch becomes one forward pass: the model inputs, and where each response token is read.

Three layouts of the same scored rows (`chip.modeling.logps` picks one per model):

- rows of :meth:`VLMAdapter.collate`, one scored row each (:func:`row_plan`);
- pair rows of :meth:`VLMAdapter.collate_pairs` sharing their image and prompt
  (:func:`shared_prefix_plan`: block attention, explicit positions, see `chip.modeling.pairs`);
- pair rows unpacked into ``[prompt, chosen]`` and ``[prompt, rejected]`` (:func:`unpacked_plan`),
  each example's image features computed once where the family allows it.

Any of them can then be packed without padding (:func:`pack`): the batch's rows back to back in one
sequence, each attending only within itself (`chip.modeling.pair_attention`). Long-tailed response
lengths and image-token counts that vary per example (LLaVA-NeXT any-resolution, Qwen-VL dynamic
resolution) make most of a padded batch padding; packed, the decoder runs real tokens only.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from transformers import PreTrainedModel

from chip.modeling.batch import for_both_rows, stack_pair_rows
from chip.modeling.images_once import shared_image_inputs
from chip.modeling.pair_attention import NAME as PAIR_SDPA
from chip.modeling.pair_attention import Segment, decoder_config, pair_attention, pair_segments
from chip.modeling.pairs import (
    PAIR_LENGTHS,
    image_inputs,
    pair_attention_mask,
    pair_row_masks,
    pair_text_positions,
    pair_token_index,
    unpack_pairs,
)
from chip.modeling.quirks import ALL_TOKEN_KEYS, quirks_for

TOKEN_KEYS = ("input_ids", *ALL_TOKEN_KEYS)  # inputs with one entry per token, (N, T, ...)


@dataclass
class Plan:
    """One forward pass: model inputs, the positions to read, and how model rows map to scored rows.

    ``predicting`` holds, for each logical row (a pair row holds ``per_row`` = 2 scored rows side by
    side along K: ``[chosen R | rejected R]``), the index of the position whose state predicts each
    response token in the model's output flattened over ``(rows, T)``. :meth:`token_index` turns it
    into one index per real response token in scored-row order ``[first of every row, then second
    of every row]``.
    """

    inputs: dict[str, Any]  # keyword arguments of the model (and of its trunk)
    predicting: torch.Tensor  # (N, K) flat index into the output positions
    targets: torch.Tensor  # (S, R) token ids of the scored rows
    mask: torch.Tensor  # (S, R) bool, True on real response tokens
    segments: list[list[Segment]]  # per model row, the sequences it holds (for packing and attention)
    per_row: int = 1
    context: Callable[[], AbstractContextManager] = nullcontext  # entered around the forward call

    def unfold(self, values: torch.Tensor) -> torch.Tensor:
        """``(N, K, ...)`` per logical row -> ``(S, R, ...)`` per scored row."""
        if self.per_row == 1:
            return values
        rows, width = values.shape[:2]
        return stack_pair_rows(values.view(rows, self.per_row, width // self.per_row, *values.shape[2:]))

    def token_index(self) -> torch.Tensor:
        """Flat output position predicting each real response token, ``(n,)`` in the mask's order."""
        return self.unfold(self.predicting)[self.mask]

    def keep_index(self) -> torch.Tensor:
        """``predicting`` as per-row positions ``(model rows, ·)``, the ``logits_to_keep`` of a forward."""
        rows, seq_len = self.inputs["input_ids"].shape
        index = self.predicting.reshape(rows, -1)  # (rows, K')
        return index - torch.arange(rows, device=index.device)[:, None] * seq_len


def response_positions(response_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Index in the sequence of each response token, left-aligned: ``(positions, mask)``, both ``(B, R)``.

    Requires each row's response to be one contiguous run after at least one prompt token (what
    :meth:`VLMAdapter.collate` builds); padding entries point at position 0.
    """
    lengths = response_mask.sum(dim=1)  # (B,)
    starts = response_mask.int().argmax(dim=1)  # (B,) first response token
    longest = int(lengths.max()) if response_mask.numel() else 0
    offsets = torch.arange(longest, device=response_mask.device)  # (R,)
    mask = offsets[None, :] < lengths[:, None]  # (B, R)
    positions = (starts[:, None] + offsets[None, :]) * mask  # (B, R)
    if not bool(response_mask.gather(1, positions)[mask].all()):
        raise ValueError("each row's response tokens must be one contiguous run (right padding)")
    if bool((starts[lengths > 0] == 0).any()):
        raise ValueError("a response cannot start at position 0: no token predicts it")
    return positions, mask


def row_plan(batch: dict[str, torch.Tensor]) -> Plan:
    """Rows of :meth:`VLMAdapter.collate`: ``[prompt, response, padding]``, one scored row each."""
    response_mask = batch["response_mask"]  # (B, T)
    inputs = {key: value for key, value in batch.items() if key != "response_mask"}
    positions, mask = response_positions(response_mask)  # (B, R), (B, R)
    predicting = (positions - 1).clamp(min=0)  # (B, R) position t-1 predicts token t
    rows, seq_len = response_mask.shape
    attention = batch["attention_mask"].bool()  # (B, T)
    starts, lengths = attention.int().argmax(-1).tolist(), attention.sum(-1).tolist()
    return Plan(
        inputs,
        predicting + torch.arange(rows, device=predicting.device)[:, None] * seq_len,
        batch["input_ids"].gather(1, positions),
        mask,
        [[(start, length, 0, 0)] for start, length in zip(starts, lengths)],
    )


def shared_prefix_plan(
    core: PreTrainedModel, batch: dict[str, torch.Tensor], dense_mask: bool = True
) -> Plan:
    """Pair rows ``[prompt, chosen, rejected, padding]`` as one sequence each (block attention).

    Without ``dense_mask`` the ``(B, 1, T, T)`` block mask is left out, for a plan about to be packed.
    """
    lengths = batch[PAIR_LENGTHS]  # (B, 3)
    input_ids = batch["input_ids"]  # (B, T)
    num, seq_len = input_ids.shape
    positions, predicting, mask = pair_token_index(lengths)  # (B, 2, R) each
    width = positions.shape[-1]
    targets = input_ids.gather(1, positions.view(num, 2 * width)).view(num, 2, width)  # (B, 2, R)
    sdpa = decoder_config(core)._attn_implementation in ("sdpa", PAIR_SDPA)
    mask_dtype = torch.bool if sdpa else core.dtype
    inputs = {key: value for key, value in batch.items() if key != PAIR_LENGTHS}
    if dense_mask:
        inputs["attention_mask"] = pair_attention_mask(lengths, seq_len, mask_dtype)  # (B, 1, T, T)
    inputs["position_ids"] = _pair_positions(core, batch)  # (B, T) or (3, B, T)
    segments = pair_segments(lengths)
    rows = torch.arange(num, device=input_ids.device)[:, None] * seq_len  # (B, 1)
    return Plan(
        inputs,
        predicting.view(num, 2 * width) + rows,  # (B, 2R)
        stack_pair_rows(targets),  # (2B, R)
        stack_pair_rows(mask),  # (2B, R)
        segments,
        per_row=2,
        context=partial(pair_attention, core, segments),
    )


def unpacked_plan(core: PreTrainedModel, batch: dict[str, torch.Tensor], share_images: bool) -> Plan:
    """Pair rows as the 2B rows ``[prompt_b, chosen_b]`` then ``[prompt_b, rejected_b]``."""
    rows = unpack_pairs(batch)  # 2B rows, no image inputs yet
    images = image_inputs(batch)
    shared = shared_image_inputs(core, images) if share_images and images else None
    if shared is None:
        shared = {key: for_both_rows(value) for key, value in images.items()}
    return row_plan({**rows, **shared})


def pack(core: PreTrainedModel, plan: Plan) -> Plan:
    """``plan`` with its rows back to back in one row and no padding.

    Per-token inputs keep their real tokens only; positions are each token's position in its own
    row (computed on the padded rows first, so M-RoPE's 3D positions are the family's own); image
    inputs stay as they are (the image tokens keep their order). The attention mask is replaced by
    a marker that only :func:`~chip.modeling.pair_attention.pair_sdpa` reads: each segment attends
    within itself, and the forward raises if any decoder layer did not attend that way.
    """
    inputs = plan.inputs
    rows, seq_len = inputs["input_ids"].shape
    if any(len(segments) != 1 for segments in plan.segments):
        raise ValueError("pack takes rows of one sequence each")
    real = torch.zeros(rows, seq_len, dtype=torch.bool)  # (N, T)
    for row, [(start, *lengths)] in enumerate(plan.segments):
        real[row, start : start + sum(lengths)] = True
    real = real.to(inputs["input_ids"].device)
    positions = inputs.get("position_ids")
    if positions is None:
        positions = _row_positions(core, inputs)  # (N, T) or (3, N, T)
    packed: dict[str, Any] = {key: value for key, value in inputs.items() if key not in TOKEN_KEYS}
    packed.update({key: inputs[key][real][None] for key in TOKEN_KEYS if key in inputs})  # (1, L, ...)
    packed["position_ids"] = positions[..., real][..., None, :]  # (1, L) or (3, 1, L)
    packed["attention_mask"] = _packed_marker(int(real.sum()), real.device)
    new_index = real.flatten().cumsum(0) - 1  # (N·T,) packed position of each real token
    segments, offset = [], 0
    for [(_, *lengths)] in plan.segments:
        segments.append((offset, *lengths))
        offset += sum(lengths)
    return Plan(
        packed,
        new_index[plan.predicting],
        plan.targets,
        plan.mask,
        [segments],
        per_row=plan.per_row,
        context=partial(pair_attention, core, [segments], packed=True),
    )


def joint_inputs(
    core: PreTrainedModel, plans: list[Plan]
) -> tuple[dict[str, Any], list[int], Callable[[], AbstractContextManager]] | None:
    """Packed ``plans`` back to back in one row, for one forward: ``(inputs, offsets, context)``,
    ``offsets`` the position where each plan's row starts. Image inputs are joined along their first
    axis (each plan's images in the order of its image tokens); None where they cannot be (different
    keys, shapes that do not line up, or a non-tensor input that differs)."""
    if any(len(plan.segments) != 1 or plan.inputs.keys() != plans[0].inputs.keys() for plan in plans):
        return None
    inputs: dict[str, Any] = {}
    for key in plans[0].inputs.keys() - {"attention_mask"}:
        values = [plan.inputs[key] for plan in plans]
        if key in TOKEN_KEYS or key == "position_ids":  # (1, L, ...) or positions (..., 1, L)
            inputs[key] = torch.cat(values, dim=1 if key != "position_ids" else -1)
        elif all(torch.is_tensor(v) and v.dim() >= 1 and v.shape[1:] == values[0].shape[1:] for v in values):
            inputs[key] = torch.cat(values)  # (images, ...)
        elif all(not torch.is_tensor(v) and v == values[0] for v in values):
            inputs[key] = values[0]
        else:
            return None
    lengths = [plan.inputs["input_ids"].shape[1] for plan in plans]
    offsets = [sum(lengths[:index]) for index in range(len(plans))]
    inputs["attention_mask"] = _packed_marker(sum(lengths), inputs["input_ids"].device)
    segments = [
        (offset + start, *sizes) for plan, offset in zip(plans, offsets) for start, *sizes in plan.segments[0]
    ]
    return inputs, offsets, partial(pair_attention, core, [segments], packed=True)


def _packed_marker(total: int, device: torch.device) -> torch.Tensor:
    """The attention mask of packed rows: a marker, never read as a mask (`pair_sdpa` finds the segments by it)."""
    return torch.ones(1, 1, 1, 1, dtype=torch.bool, device=device).expand(1, 1, total, total)


def _pair_positions(core: PreTrainedModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Each packed token's position in its own ``[prompt, response]`` row.

    M-RoPE families (Qwen-VL) place image tokens on a 3D grid; their ``get_rope_index`` is run
    once per response with an attention mask selecting ``[prompt, that response]``, so each
    response gets exactly the positions it has in its own row. Others use plain 1D positions.
    """
    lengths, input_ids = batch[PAIR_LENGTHS], batch["input_ids"]
    if not quirks_for(core.config).mrope:
        return pair_text_positions(lengths, input_ids.shape[1])  # (B, T)
    chosen_row, rejected_row = pair_row_masks(lengths, input_ids.shape[1])  # (B, T) each
    by_row = [_mrope_positions(core, batch, row) for row in (chosen_row, rejected_row)]  # (3, B, T) each
    return torch.where((rejected_row & ~chosen_row)[None], by_row[1], by_row[0])  # (3, B, T)


def _row_positions(core: PreTrainedModel, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Positions of ordinary rows as the model would compute them from their attention mask."""
    attention = inputs["attention_mask"]  # (N, T)
    if quirks_for(core.config).mrope:
        return _mrope_positions(core, inputs, attention)  # (3, N, T)
    return (attention.long().cumsum(-1) - 1).clamp(min=0)  # (N, T)


def _mrope_positions(
    core: PreTrainedModel, batch: dict[str, torch.Tensor], rows: torch.Tensor
) -> torch.Tensor:
    """The family's own 3D positions ``(3, N, T)`` of the tokens selected by ``rows`` ``(N, T)``."""
    rope_index = getattr(core, str(quirks_for(core.config).trunk)).get_rope_index
    grids = {key: batch[key] for key in ("image_grid_thw", "video_grid_thw") if key in batch}
    return rope_index(
        input_ids=batch["input_ids"],
        mm_token_type_ids=batch["mm_token_type_ids"],
        attention_mask=rows.long(),
        **grids,
    )[0]
