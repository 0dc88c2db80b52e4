"""Per-token log-probabilities of the response tokens, without full-sequence logits.

DPO-style losses only need ``log π(y_t | v, x, y_<t)`` at response tokens, but a plain forward
builds logits for every position: ``(B, T, V)`` floats, where T is dominated by the prompt and its
hundreds of image tokens (576 for LLaVA-1.5) and V is 32k-150k. :func:`response_logps` runs the
decoder trunk, keeps the hidden states at the positions that predict response tokens (position
``t - 1`` predicts token ``t``), and applies the LM head to those ``(B, R, H)`` states only.

Three routes, chosen per model (``route="auto"``):

- ``"trunk"``: ``model.model(...)`` then ``model.get_output_embeddings()`` on the gathered
  states, plus the family's post-head transform from the quirk table (e.g. soft-capping).
- ``"keep"``: the model's own ``forward`` with ``logits_to_keep`` set to those positions (a
  ``(B, R)`` index, transformers >= 5.x). Used when the model is wrapped (DDP, FSDP, DeepSpeed,
  PEFT prompt learning), since calling a wrapped model's submodules directly skips the wrapper's
  gradient synchronisation, parameter gathering or virtual tokens.
- ``"full"``: a plain forward and a gather, for a model exposing neither.

Which layouts a family may use (shared prefix, images encoded once, the trunk route) comes from
its row in :mod:`chip.modeling.quirks`; a family not in the table goes through its own
``forward`` with neither, after one warning. The first batch a model scores is also a check: if
a faster layout fails inside the model, that model falls back to the plain layout for the rest
of the run (one warning naming what failed); if the plain layout fails too, :class:`ModelError`
says in one line which model could not run.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from chip.errors import ChipError
from chip.modeling.batch import stack_pair_rows
from chip.modeling.errors import ModelError, one_line
from chip.modeling.images_once import _images_once_allowed, _shared_image_inputs
from chip.modeling.pair_attention import NAME as PAIR_SDPA
from chip.modeling.pair_attention import decoder_config, pair_attention
from chip.modeling.pairs import (
    PAIR_LENGTHS,
    image_inputs,
    is_pair_batch,
    pair_attention_mask,
    pair_row_masks,
    pair_text_positions,
    pair_token_index,
    unpack_pairs,
)
from chip.modeling.quirks import ModelQuirks, quirks_for
from chip.modeling.routes import Route, _choose_route, _own_forward_route, can_share_prefix
from chip.modeling.wrappers import core_model

logger = logging.getLogger(__name__)


@dataclass
class ResponseScores:
    """Per-token scores of the response tokens of a batch, left-aligned per row."""

    logps: torch.Tensor  # (B, R) float32 log-prob of each response token, 0 at padding
    mask: torch.Tensor  # (B, R) bool, True on real response tokens
    logits: torch.Tensor | None = (
        None  # (B, R, V) float32 logits predicting each response token, 0 at padding
    )
    # With a chunked head (`chunk_size`), the states the head reads instead of ``logits``:
    hidden: torch.Tensor | None = None  # (B, R, H) states predicting each response token
    head: Callable[[torch.Tensor], torch.Tensor] | None = None  # states -> logits, family transform included
    targets: torch.Tensor | None = None  # (B, R) the response token ids
    chunk_size: int = 0  # positions per head application (0: logits were computed whole)

    def token_kl(self, reference: ResponseScores | tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """KL(π_ref ‖ π_θ) per response token ``(B, R)``: against another `ResponseScores` (its logits
        or states), or a cached top-k ``(logps, ids)`` of the reference (`chip.losses.topk_token_kl`)."""
        from chip.modeling.chunked_head import kl_against

        return kl_against(self, reference)


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


def response_logps(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    return_logits: bool = False,
    route: Route = "auto",
    share_prefix: bool = True,
    encode_images_once: bool = True,
    chunk_size: int = 0,
) -> ResponseScores:
    """Log-probabilities of the response tokens of ``batch`` under ``model``.

    With ``chunk_size`` > 0 (and the trunk route) the LM head runs over that many positions at a
    time (`chip.modeling.chunked_head`): no ``(S, R, V)`` tensor is kept, and ``return_logits``
    returns the states and the head instead of the logits (`ResponseScores.token_kl` takes either).

    ``batch`` comes from :meth:`VLMAdapter.collate` (one scored row per row; every key but
    ``response_mask`` goes to the model) or :meth:`VLMAdapter.collate_pairs` (2B scored rows,
    ``[chosen_1..chosen_B, rejected_1..rejected_B]``). A pair batch runs as one sequence per pair
    with a block mask when ``share_prefix`` is set and :func:`can_share_prefix` allows it;
    otherwise it is unpacked into two rows per pair, and with ``encode_images_once`` (where the
    family's quirks allow it) each example's image features are computed once and fed to both
    rows. Every layout gives the same numbers. Log-softmax runs in float32 whatever the model's
    dtype. Works under ``no_grad`` or with gradients, with gradient checkpointing, and on
    PEFT-wrapped models. With ``route="auto"`` a layout that fails inside the model on the first
    batch is replaced by the plain one (see the module docstring).
    """
    core = core_model(model)
    _warn_if_untested(core)
    batch = {
        key: value.to(core.dtype) if value.is_floating_point() else value for key, value in batch.items()
    }  # processors may return other float types than the model's (Llama-4: bfloat16 pixels)
    layouts = _layouts(model, batch, route, share_prefix, encode_images_once)
    if route != "auto":
        return _score(model, batch, layouts[0], return_logits, chunk_size)
    if core in _PLAIN:
        layouts = [_PLAIN[core]]
    failed: tuple[_Layout, Exception] | None = None
    for layout in layouts:
        try:
            scores = _score(model, batch, layout, return_logits, chunk_size)
        except (torch.OutOfMemoryError, ChipError):
            raise
        except Exception as error:
            if layout in _VERIFIED.get(core, ()):  # it worked before: a real error, not a family quirk
                raise
            failed = failed or (layout, error)
            last_error = error
            continue
        if failed is not None:
            logger.warning(
                "%s (%s): %s failed on the first batch (%s: %s); using %s for this model from now on",
                type(core).__name__, core.config.model_type, failed[0].describe(),
                type(failed[1]).__name__, one_line(failed[1]), layout.describe(),
            )  # fmt: skip
            _PLAIN[core] = layout
        _VERIFIED.setdefault(core, set()).add(layout)
        return scores
    raise ModelError(
        f"{type(core).__name__} ({core.config.model_type}) cannot score a batch, not even through its "
        f"own forward: {type(last_error).__name__}: {one_line(last_error)}"
    ) from last_error


# The layouts each core model has scored a batch with, and the plain layout of the models the
# first-batch check moved there; weak, so a model's entries go with the model.
_VERIFIED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_PLAIN: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_WARNED: weakref.WeakSet = weakref.WeakSet()


def _warn_if_untested(core: PreTrainedModel) -> None:
    if quirks_for(core.config).known or core in _WARNED:
        return
    _WARNED.add(core)
    logger.warning(
        "%s (model type %r) is not in chip's quirks table: prefix sharing, images encoded once and the "
        "trunk route are off; chip scores it through its own forward (see docs/models.md)",
        type(core).__name__, getattr(core.config, "model_type", "?"),
    )  # fmt: skip


@dataclass(frozen=True)
class _Layout:
    """How one batch is scored: the logits route, a shared prefix, image features computed once."""

    route: Route
    packed: bool
    images_once: bool

    def describe(self) -> str:
        parts = [f"the {self.route} route"]
        parts += ["a shared prefix"] if self.packed else []
        parts += ["images encoded once"] if self.images_once else []
        return " with ".join([parts[0], " and ".join(parts[1:])]) if len(parts) > 1 else parts[0]


def _layouts(
    model: nn.Module, batch: dict[str, torch.Tensor], route: Route, share_prefix: bool, images_once: bool
) -> list[_Layout]:
    """The layout asked for, then (for ``route="auto"``) the plain fallbacks, without repeats."""
    chosen = _choose_route(model) if route == "auto" else route
    pairs = is_pair_batch(batch)
    packed = pairs and share_prefix and can_share_prefix(model)
    once = pairs and not packed and images_once and chosen == "trunk" and _images_once_allowed(model)
    layouts = [_Layout(chosen, packed, once)]
    if route == "auto":
        own_forward = _own_forward_route(model)
        layouts += [_Layout(own_forward, False, False), _Layout("full", False, False)]
    return list(dict.fromkeys(layouts))


def _score(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    layout: _Layout,
    return_logits: bool,
    chunk_size: int = 0,
) -> ResponseScores:
    if not is_pair_batch(batch):
        plan = _row_plan(batch)
    elif layout.packed:
        plan = _packed_plan(model, batch)
    else:
        plan = _unpacked_plan(model, batch, share_images=layout.images_once)

    if chunk_size > 0 and layout.route == "trunk":
        from chip.modeling.chunked_head import chunked_head_scores

        hidden, head = _hidden_trunk(model, plan)  # (S, R, H)
        logps, _ = chunked_head_scores(hidden, head, plan.targets, plan.mask, chunk_size)  # (S, R)
        kept = dict(hidden=hidden, head=head, targets=plan.targets) if return_logits else {}
        return ResponseScores(logps=logps, mask=plan.mask, chunk_size=chunk_size, **kept)
    logits = _LOGITS_BY_ROUTE[layout.route](model, plan).float()  # (S, R, V)
    # Zero rows at padding: a KL between two padded rows is then exactly 0, never garbage.
    logits = logits.masked_fill(~plan.mask[..., None], 0.0)  # (S, R, V)
    logps = _TargetLogProb.apply(logits, plan.targets).masked_fill(~plan.mask, 0.0)  # (S, R)
    return ResponseScores(logps=logps, mask=plan.mask, logits=logits if return_logits else None)


class _TargetLogProb(torch.autograd.Function):
    """``log_softmax(z)[..., y]`` as ``z_y - logsumexp(z)``, with a backward that allocates one tensor.

    Autograd through ``log_softmax`` + ``gather`` keeps a second ``(S, R, V)`` tensor (the
    log-probs) for backward and builds two more in it (the scattered gradient and the softmax
    term). Here only the logits (alive anyway) and their logsumexp are kept, and the gradient
    ``g · (onehot(y) − softmax(z))`` is built in place in a single ``(S, R, V)`` buffer.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        log_total = torch.logsumexp(logits, dim=-1)  # (S, R)
        ctx.save_for_backward(logits, targets, log_total)
        return logits.gather(-1, targets[..., None]).squeeze(-1) - log_total  # (S, R)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        logits, targets, log_total = ctx.saved_tensors
        grad_logits = torch.sub(logits, log_total[..., None]).exp_()  # (S, R, V) softmax(z)
        grad_logits.mul_(-grad[..., None])  # (S, R, V) -g · softmax(z)
        grad_logits.scatter_add_(-1, targets[..., None], grad[..., None])  # (S, R, V) + g · onehot(y)
        return grad_logits, None


@dataclass
class _Plan:
    """One forward pass: model inputs, the positions to read, and how model rows map to scored rows.

    A model row holds ``per_row`` scored rows side by side along K (a packed pair holds two:
    ``[chosen R | rejected R]``); :meth:`unfold` turns ``(N, K, D)`` into ``(N·per_row, R, D)`` in
    the order ``[first of every row, then second of every row]``.
    """

    inputs: dict[str, Any]  # keyword arguments of the model (and of its trunk)
    predicting: torch.Tensor  # (N, K) position whose hidden state predicts each target
    targets: torch.Tensor  # (S, R) token ids of the scored rows
    mask: torch.Tensor  # (S, R) bool, True on real response tokens
    per_row: int = 1
    context: Callable[[], AbstractContextManager] = nullcontext  # entered around the forward call

    def unfold(self, values: torch.Tensor) -> torch.Tensor:
        if self.per_row == 1:
            return values  # (S, R, D)
        rows, width, dim = values.shape  # (N, K, D)
        return stack_pair_rows(values.view(rows, self.per_row, width // self.per_row, dim))  # (S, R, D)


def _row_plan(batch: dict[str, torch.Tensor]) -> _Plan:
    response_mask = batch["response_mask"]  # (B, T)
    inputs = {key: value for key, value in batch.items() if key != "response_mask"}
    positions, mask = response_positions(response_mask)  # (B, R), (B, R)
    predicting = (positions - 1).clamp(min=0)  # (B, R) position t-1 predicts token t
    return _Plan(inputs, predicting, batch["input_ids"].gather(1, positions), mask)


def _packed_plan(model: nn.Module, batch: dict[str, torch.Tensor]) -> _Plan:
    core = core_model(model)
    lengths = batch[PAIR_LENGTHS]  # (B, 3)
    input_ids = batch["input_ids"]  # (B, T)
    num, seq_len = input_ids.shape
    positions, predicting, mask = pair_token_index(lengths)  # (B, 2, R) each
    width = positions.shape[-1]
    targets = input_ids.gather(1, positions.view(num, 2 * width)).view(num, 2, width)  # (B, 2, R)
    sdpa = decoder_config(core)._attn_implementation in ("sdpa", PAIR_SDPA)
    mask_dtype = torch.bool if sdpa else core.dtype
    inputs = {key: value for key, value in batch.items() if key != PAIR_LENGTHS}
    inputs["attention_mask"] = pair_attention_mask(lengths, seq_len, mask_dtype)  # (B, 1, T, T)
    inputs["position_ids"] = _pair_positions(core, batch)  # (B, T) or (3, B, T)
    return _Plan(
        inputs,
        predicting.view(num, 2 * width),  # (B, 2R)
        stack_pair_rows(targets),  # (2B, R)
        stack_pair_rows(mask),  # (2B, R)
        per_row=2,
        context=lambda: pair_attention(core, lengths),
    )


def _pair_positions(core: PreTrainedModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Each packed token's position in its own ``[prompt, response]`` row.

    M-RoPE families (Qwen-VL) place image tokens on a 3D grid; their ``get_rope_index`` is run
    once per response with an attention mask selecting ``[prompt, that response]``, so each
    response gets exactly the positions it has in its own row. Others use plain 1D positions.
    """
    lengths, input_ids = batch[PAIR_LENGTHS], batch["input_ids"]
    if not quirks_for(core.config).mrope:
        return pair_text_positions(lengths, input_ids.shape[1])  # (B, T)
    rope_index = getattr(core, str(quirks_for(core.config).trunk)).get_rope_index
    grids = {key: batch[key] for key in ("image_grid_thw", "video_grid_thw") if key in batch}
    chosen_row, rejected_row = pair_row_masks(lengths, input_ids.shape[1])  # (B, T) each
    by_row = [
        rope_index(
            input_ids=input_ids,
            mm_token_type_ids=batch["mm_token_type_ids"],
            attention_mask=row.long(),
            **grids,
        )[0]
        for row in (chosen_row, rejected_row)
    ]  # (3, B, T) each
    return torch.where((rejected_row & ~chosen_row)[None], by_row[1], by_row[0])  # (3, B, T)


def _unpacked_plan(model: nn.Module, batch: dict[str, torch.Tensor], share_images: bool) -> _Plan:
    rows = unpack_pairs(batch)  # 2B rows, no image inputs yet
    images = image_inputs(batch)
    shared = _shared_image_inputs(core_model(model), images) if share_images and images else None
    if shared is None:
        shared = {key: torch.cat([value, value]) for key, value in images.items()}
    return _row_plan({**rows, **shared})


def _logits_trunk(model: nn.Module, plan: _Plan) -> torch.Tensor:
    hidden, head = _hidden_trunk(model, plan)  # (S, R, H)
    return head(hidden)  # (S, R, V)


def _hidden_trunk(
    model: nn.Module, plan: _Plan
) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """The decoder's states at the positions predicting each response token ``(S, R, H)``, and the head
    (LM head plus the family's logits transform) that turns states into logits."""
    core = core_model(model)
    quirks: ModelQuirks = quirks_for(core.config)
    with plan.context():
        hidden = getattr(core, quirks.trunk)(**plan.inputs, use_cache=False).last_hidden_state  # (N, T, H)
    picked = hidden.gather(1, plan.predicting[..., None].expand(-1, -1, hidden.shape[-1]))  # (N, K, H)
    output_embeddings = core.get_output_embeddings()

    def head(states: torch.Tensor) -> torch.Tensor:
        logits = output_embeddings(states)  # (..., V)
        if quirks.logits_transform is not None:
            logits = quirks.logits_transform(logits, core.config)
        return logits

    return plan.unfold(picked), head


def _logits_keep(model: nn.Module, plan: _Plan) -> torch.Tensor:
    with plan.context():
        logits = model(**plan.inputs, logits_to_keep=plan.predicting, use_cache=False).logits  # (N, K, V)
    if logits.shape[:2] != plan.predicting.shape:
        raise RuntimeError(
            f"{type(core_model(model)).__name__}.forward ignored per-row logits_to_keep "
            f"(got logits {tuple(logits.shape)}); use route='full'"
        )
    return plan.unfold(logits)  # (S, R, V)


def _logits_full(model: nn.Module, plan: _Plan) -> torch.Tensor:
    with plan.context():
        logits = model(**plan.inputs, use_cache=False).logits  # (N, T, V)
    picked = logits.gather(1, plan.predicting[..., None].expand(-1, -1, logits.shape[-1]))  # (N, K, V)
    return plan.unfold(picked)  # (S, R, V)


_LOGITS_BY_ROUTE = {"trunk": _logits_trunk, "keep": _logits_keep, "full": _logits_full}
