"""Per-token log-probabilities of the response tokens, without full-sequence logits.

DPO-style losses only need ``log π(y_t | v, x, y_<t)`` at response tokens, but a plain forward
builds logits for every position: ``(B, T, V)`` floats, where T is dominated by the prompt and its
hundreds of image tokens (576 for LLaVA-1.5) and V is 32k-150k. :func:`response_logps` runs the
decoder trunk, keeps the hidden states at the positions that predict response tokens (position
``t - 1`` predicts token ``t``), and applies the LM head to those states only: one per real
response token, ``(n, H)``.

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
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel

from chip.errors import ChipError
from chip.modeling.errors import ModelError, one_line
from chip.modeling.images_once import _images_once_allowed
from chip.modeling.pair_attention import NAME as PAIR_SDPA
from chip.modeling.pair_attention import decoder_config
from chip.modeling.pairs import is_pair_batch
from chip.modeling.plans import Plan, pack, row_plan, shared_prefix_plan, unpacked_plan
from chip.modeling.quirks import ModelQuirks, quirks_for
from chip.modeling.routes import Route, _choose_route, _own_forward_route, can_share_prefix
from chip.modeling.scores import ResponseScores, TargetLogProb
from chip.modeling.wrappers import core_model

logger = logging.getLogger(__name__)


def response_logps(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    return_logits: bool = False,
    route: Route = "auto",
    share_prefix: bool = True,
    encode_images_once: bool = True,
    chunk_size: int = 0,
    padding_free: bool = True,
) -> ResponseScores:
    """Log-probabilities of the response tokens of ``batch`` under ``model``.

    With ``chunk_size`` > 0 (and the trunk route) the LM head runs over that many response tokens at
    a time (`chip.modeling.chunked_head`): no ``(n, V)`` tensor is kept, and ``return_logits``
    returns the states and the head instead of the logits (`ResponseScores.token_kl` takes either).
    The head, the log-softmax and the KL only ever run over the n real response tokens, never over
    padding (`chip.modeling.scores`).

    ``batch`` comes from :meth:`VLMAdapter.collate` (one scored row per row; every key but
    ``response_mask`` goes to the model) or :meth:`VLMAdapter.collate_pairs` (2B scored rows,
    ``[chosen_1..chosen_B, rejected_1..rejected_B]``). A pair batch runs as one sequence per pair
    with a block mask when ``share_prefix`` is set and :func:`can_share_prefix` allows it;
    otherwise it is unpacked into two rows per pair, and with ``encode_images_once`` (where the
    family's quirks allow it) each example's image features are computed once and fed to both
    rows. With ``padding_free`` (where :func:`can_pack` allows it) the rows of any layout run back
    to back in one sequence without padding (`chip.modeling.plans.pack`). Every layout gives the
    same numbers. Log-softmax runs in float32 whatever the model's
    dtype. Works under ``no_grad`` or with gradients, with gradient checkpointing, and on
    PEFT-wrapped models. With ``route="auto"`` a layout that fails inside the model on the first
    batch is replaced by the plain one (see the module docstring).
    """
    core = core_model(model)
    _warn_if_untested(core)
    batch = {
        key: value.to(core.dtype) if value.is_floating_point() else value for key, value in batch.items()
    }  # processors may return other float types than the model's (Llama-4: bfloat16 pixels)
    layouts = _layouts(model, batch, route, share_prefix, encode_images_once, padding_free)
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
    """How one batch is scored: the logits route, a shared prefix, image features computed once,
    rows packed without padding."""

    route: Route
    shared_prefix: bool
    images_once: bool
    padding_free: bool = False

    def describe(self) -> str:
        parts = [f"the {self.route} route"]
        parts += ["a shared prefix"] if self.shared_prefix else []
        parts += ["images encoded once"] if self.images_once else []
        parts += ["rows packed without padding"] if self.padding_free else []
        return " with ".join([parts[0], " and ".join(parts[1:])]) if len(parts) > 1 else parts[0]


def _layouts(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    route: Route,
    share_prefix: bool,
    images_once: bool,
    padding_free: bool,
) -> list[_Layout]:
    """The layout asked for, then (for ``route="auto"``) the plain fallbacks, without repeats."""
    chosen = _choose_route(model) if route == "auto" else route
    pairs = is_pair_batch(batch)
    shared = pairs and share_prefix and can_share_prefix(model)
    once = pairs and not shared and images_once and chosen == "trunk" and _images_once_allowed(model)
    layouts = [_Layout(chosen, shared, once, padding_free and can_pack(model))]
    if route == "auto":
        own_forward = _own_forward_route(model)
        layouts += [
            _Layout(chosen, shared, once),
            _Layout(own_forward, False, False),
            _Layout("full", False, False),
        ]
    return list(dict.fromkeys(layouts))


def can_pack(model: nn.Module) -> bool:
    """Whether ``model`` can run a batch's rows back to back without padding: what
    :func:`can_share_prefix` needs (ready masks and positions), on SDPA attention, which
    `chip.modeling.pair_attention` splits per sequence."""
    attention = decoder_config(core_model(model))._attn_implementation
    return can_share_prefix(model) and attention in ("sdpa", PAIR_SDPA)


def _score(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    layout: _Layout,
    return_logits: bool,
    chunk_size: int = 0,
) -> ResponseScores:
    core = core_model(model)
    if not is_pair_batch(batch):
        plan = row_plan(batch)
    elif layout.shared_prefix:
        plan = shared_prefix_plan(core, batch, dense_mask=not layout.padding_free)
    else:
        plan = unpacked_plan(core, batch, share_images=layout.images_once)
    if layout.padding_free:
        plan = pack(core, plan)
    targets = plan.targets[plan.mask]  # (n,) the real response tokens, row by row

    if layout.route == "trunk":
        hidden, head = _hidden_trunk(model, plan)  # (n, H)
        if chunk_size > 0:  # log-probs when first read, or with the token KL (`ResponseScores`)
            return ResponseScores(plan.mask, hidden=hidden, head=head, targets=targets, chunk_size=chunk_size)
        logits = head(hidden).float()  # (n, V)
    else:
        logits = _LOGITS_BY_ROUTE[layout.route](model, plan).float()  # (n, V)
    if return_logits:  # log-probs when first read, or fused with the token KL (`ResponseScores`)
        return ResponseScores(plan.mask, token_logits=logits, targets=targets)
    return ResponseScores(plan.mask, token_logps=TargetLogProb.apply(logits, targets))  # (n,)


def _hidden_trunk(
    model: nn.Module, plan: Plan
) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """The decoder's states at the positions predicting each real response token ``(n, H)``, and the
    head (LM head plus the family's logits transform) that turns states into logits."""
    core = core_model(model)
    quirks: ModelQuirks = quirks_for(core.config)
    with plan.context():
        hidden = getattr(core, quirks.trunk)(**plan.inputs, use_cache=False).last_hidden_state  # (N, T, H)
    picked = hidden.reshape(-1, hidden.shape[-1])[plan.token_index()]  # (n, H)
    output_embeddings = core.get_output_embeddings()

    def head(states: torch.Tensor) -> torch.Tensor:
        logits = output_embeddings(states)  # (..., V)
        if quirks.logits_transform is not None:
            logits = quirks.logits_transform(logits, core.config)
        return logits

    return picked, head


def _logits_keep(model: nn.Module, plan: Plan) -> torch.Tensor:
    packed = plan.inputs["input_ids"].shape[0] == 1
    # One row (packed): the head runs at the real tokens' positions only; several rows: per-row
    # positions of equal count, padded, as logits_to_keep must be rectangular.
    keep = plan.token_index()[None] if packed else plan.keep_index()  # (1, n) or (rows, K')
    with plan.context():
        logits = model(**plan.inputs, logits_to_keep=keep, use_cache=False).logits  # (rows, ·, V)
    if logits.shape[:2] != keep.shape:
        raise RuntimeError(
            f"{type(core_model(model)).__name__}.forward ignored per-row logits_to_keep "
            f"(got logits {tuple(logits.shape)}); use route='full'"
        )
    if packed:
        return logits[0]  # (n, V)
    return plan.unfold(logits.reshape(*plan.predicting.shape, -1))[plan.mask]  # (n, V)


def _logits_full(model: nn.Module, plan: Plan) -> torch.Tensor:
    with plan.context():
        logits = model(**plan.inputs, use_cache=False).logits  # (rows, T, V)
    return logits.reshape(-1, logits.shape[-1])[plan.token_index()]  # (n, V)


_LOGITS_BY_ROUTE = {"keep": _logits_keep, "full": _logits_full}  # the trunk route is above
