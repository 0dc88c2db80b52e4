"""Per-token log-probabilities of the response tokens, without full-sequence logits.

DPO-style losses only need ``log π(y_t | v, x, y_<t)`` at response tokens, but a plain forward
builds logits for every position: ``(B, T, V)`` floats, where T is dominated by the prompt and its
hundreds of image tokens (576 for LLaVA-1.5) and V is 32k-150k. :func:`response_logps` runs the
decoder trunk, keeps the hidden states at the positions that predict response tokens (position
``t - 1`` predicts token ``t``), and applies the LM head to those states only: one per real
response token, ``(n, H)``.

Three routes, chosen per model (``route="auto"`` in `chip.modeling.layout.LayoutSettings`):

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
says in one line which model could not run. What the first batches showed is kept by the
:class:`ResponseScorer` that scored them (the trainer holds one per run), not in the module.

:meth:`ResponseScorer.score_many` scores several batches (a CHiP step's real pairs and its
corrupted-image rows) in one forward of the decoder, their packed rows back to back, once each
batch's layout has run on its own; if that joint forward fails, the batches are scored one by one
from then on (one warning).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable

import torch
from torch import nn
from transformers import PreTrainedModel

from chip.errors import ChipError
from chip.modeling.chunked_head import chunked_head_scores
from chip.modeling.errors import ModelError, one_line
from chip.modeling.kernels import TargetLogProb
from chip.modeling.layout import LayoutSettings
from chip.modeling.pairs import is_pair_batch
from chip.modeling.plans import Plan, joint_inputs, pack, row_plan, shared_prefix_plan, unpacked_plan
from chip.modeling.quirks import ModelQuirks, quirks_for
from chip.modeling.routes import Layout, candidate_layouts
from chip.modeling.scores import ResponseScores
from chip.modeling.wrappers import core_model

NO_GRAD_HEAD_BYTES = 8 << 20  # float32 logits per head application when no gradient is needed

logger = logging.getLogger(__name__)


class ResponseScorer:
    """Log-probabilities of the response tokens of batches, laid out as ``settings`` ask.

    ``scorer(model, batch, return_logits)`` scores one batch. With ``chunk_size`` > 0 (and the
    trunk route) the LM head runs over that many response tokens at a time
    (`chip.modeling.chunked_head`): no ``(n, V)`` tensor is kept, and ``return_logits`` returns the
    states and the head instead of the logits (`ResponseScores.token_kl` takes either). The head,
    the log-softmax and the KL only ever run over the n real response tokens, never over padding
    (`chip.modeling.scores`).

    ``batch`` comes from :meth:`VLMAdapter.collate` (one scored row per row; every key but
    ``response_mask`` goes to the model) or :meth:`VLMAdapter.collate_pairs` (2B scored rows,
    ``[chosen_1..chosen_B, rejected_1..rejected_B]``). A pair batch runs as one sequence per pair
    with a block mask when ``share_prefix`` is set and `can_share_prefix` allows it; otherwise it
    is unpacked into two rows per pair, and with ``encode_images_once`` (where the family's quirks
    allow it) each example's image features are computed once and fed to both rows. With
    ``padding_free`` (where `can_pack` allows it) the rows of any layout run back to back in one
    sequence without padding (`chip.modeling.plans.pack`). Every layout gives the same numbers.
    Log-softmax runs in float32 whatever the model's dtype. Works under ``no_grad`` or with
    gradients, with gradient checkpointing, and on PEFT-wrapped models.

    With ``route="auto"`` a layout that fails inside a model on its first batch is replaced by the
    plain one for that model (see the module docstring); the scorer remembers, per model, the
    layouts that worked and the fallback chosen, so later batches go straight to it.
    """

    def __init__(self, settings: LayoutSettings | None = None) -> None:
        self.settings = settings if settings is not None else LayoutSettings()
        # Per core model, weakly (its entries go with the model): the layouts it has scored a batch
        # with, the plain layout the first-batch check moved it to, and the families warned about.
        self.verified: weakref.WeakKeyDictionary[PreTrainedModel, set[Layout]] = weakref.WeakKeyDictionary()
        self.fallback: weakref.WeakKeyDictionary[PreTrainedModel, Layout] = weakref.WeakKeyDictionary()
        self.warned: weakref.WeakSet[PreTrainedModel] = weakref.WeakSet()
        self.unjoined: weakref.WeakSet[PreTrainedModel] = weakref.WeakSet()  # whose joint forward failed

    def __call__(
        self, model: nn.Module, batch: dict[str, torch.Tensor], return_logits: bool = False
    ) -> ResponseScores:
        core = core_model(model)
        self._warn_if_untested(core)
        batch = _in_model_dtype(core, batch)
        layouts = candidate_layouts(model, batch, self.settings)
        if self.settings.route != "auto":
            return score_layout(model, batch, layouts[0], return_logits, self.settings.chunk_size)
        if core in self.fallback:
            layouts = [self.fallback[core]]
        return self._first_that_runs(model, batch, layouts, return_logits)

    def score_many(
        self, model: nn.Module, batches: list[dict[str, torch.Tensor]], return_logits: list[bool]
    ) -> list[ResponseScores]:
        """``[self(model, batch, logits) for ...]``, in one forward where the batches' layouts allow it.

        A CHiP step scores the real pairs and the corrupted rows: run back to back in one packed
        sequence (`score_jointly`), the decoder's layers, the vision tower and the embedding's
        backward run once instead of twice. If the joint forward fails inside the model, the batches
        are scored one by one (with the first-batch check and fallback of a single batch), and for
        this model from then on.
        """
        core = core_model(model)
        self._warn_if_untested(core)
        batches = [_in_model_dtype(core, batch) for batch in batches]
        layouts = [
            self.fallback.get(core) or candidate_layouts(model, batch, self.settings)[0] for batch in batches
        ]
        joint = None
        if len(batches) > 1 and core not in self.unjoined:
            try:
                joint = score_jointly(model, batches, layouts, return_logits, self.settings.chunk_size)
            except (torch.OutOfMemoryError, ChipError):
                raise
            except Exception as error:  # a boundary: any error inside the model's code
                logger.warning(
                    "%s: scoring batches in one forward failed (%s: %s); scoring them one by one from now on",
                    type(core).__name__,
                    type(error).__name__,
                    one_line(error),
                )
                self.unjoined.add(core)
        if joint is None:
            return [self(model, batch, logits) for batch, logits in zip(batches, return_logits)]
        self.verified.setdefault(core, set()).update(layouts)
        return joint

    def _first_that_runs(
        self, model: nn.Module, batch: dict[str, torch.Tensor], layouts: list[Layout], return_logits: bool
    ) -> ResponseScores:
        """The scores of the first of ``layouts`` that runs; a layout that worked before is not retried."""
        core = core_model(model)
        failed: tuple[Layout, Exception] | None = None
        for layout in layouts:
            try:
                scores = score_layout(model, batch, layout, return_logits, self.settings.chunk_size)
            except (torch.OutOfMemoryError, ChipError):
                raise
            except Exception as error:  # a boundary: any error inside the model's code (docs/architecture.md)
                # It worked before: a real error, not a family quirk.
                if layout in self.verified.get(core, ()):
                    raise
                failed = failed or (layout, error)
                last_error = error
                continue
            if failed is not None:
                self._fall_back(core, *failed, layout)
            self.verified.setdefault(core, set()).add(layout)
            return scores
        raise ModelError(
            f"{type(core).__name__} ({core.config.model_type}) cannot score a batch, not even through its "
            f"own forward: {type(last_error).__name__}: {one_line(last_error)}"
        ) from last_error

    def _fall_back(self, core: PreTrainedModel, failed: Layout, error: Exception, plain: Layout) -> None:
        logger.warning(
            "%s (%s): %s failed on the first batch (%s: %s); using %s for this model from now on",
            type(core).__name__,
            core.config.model_type,
            failed.describe(),
            type(error).__name__,
            one_line(error),
            plain.describe(),
        )
        self.fallback[core] = plain

    def _warn_if_untested(self, core: PreTrainedModel) -> None:
        if quirks_for(core.config).known or core in self.warned:
            return
        self.warned.add(core)
        logger.warning(
            "%s (model type %r) is not in chip's quirks table: prefix sharing, images encoded once and the "
            "trunk route are off; chip scores it through its own forward (see docs/models.md)",
            type(core).__name__,
            getattr(core.config, "model_type", "?"),
        )


def _in_model_dtype(core: PreTrainedModel, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # processors may return other float types than the model's (Llama-4: bfloat16 pixels)
    return {key: value.to(core.dtype) if value.is_floating_point() else value for key, value in batch.items()}


def response_logps(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    return_logits: bool = False,
    settings: LayoutSettings | None = None,
) -> ResponseScores:
    """Log-probabilities of the response tokens of ``batch`` under ``model``: one batch scored by a
    new `ResponseScorer` with ``settings`` (default: every speed-up on, ``route="auto"``).

    To score many batches, hold one `ResponseScorer`: it keeps what each model's first batch
    showed, so a failing fast layout is tried and warned about once, not on every batch.
    """
    return ResponseScorer(settings)(model, batch, return_logits)


def score_layout(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    layout: Layout,
    return_logits: bool,
    chunk_size: int = 0,
) -> ResponseScores:
    """``batch`` scored in exactly ``layout`` (no fallback); see `ResponseScorer` for the arguments."""
    core = core_model(model)
    plan = layout_plan(core, batch, layout)
    if layout.route == "trunk":
        with plan.context():
            hidden = _trunk(core, plan.inputs)  # (N, T, H)
        picked = hidden.reshape(-1, hidden.shape[-1])[plan.token_index()]  # (n, H)
        return _head_scores(core, plan, picked, return_logits, chunk_size)
    logits = _LOGITS_BY_ROUTE[layout.route](model, plan).float()  # (n, V)
    return _logits_scores(plan, logits, return_logits)


def score_jointly(
    model: nn.Module,
    batches: list[dict[str, torch.Tensor]],
    layouts: list[Layout],
    return_logits: list[bool],
    chunk_size: int = 0,
) -> list[ResponseScores] | None:
    """``batches`` scored as `score_layout` scores each, in one forward of the decoder: their packed
    rows back to back (`chip.modeling.plans.joint_inputs`), each batch's images encoded in one tower
    call. None where that does not apply (a layout that is not packed on the trunk route, one that
    encodes images while it plans, image inputs that cannot be joined); the caller then scores
    them one by one."""
    core = core_model(model)
    # images_once encodes while it builds its plan: a plan built for nothing would encode twice
    if not all(
        layout.route == "trunk" and layout.padding_free and not layout.images_once for layout in layouts
    ):
        return None
    plans = [layout_plan(core, batch, layout) for batch, layout in zip(batches, layouts)]
    joint = joint_inputs(core, plans)
    if joint is None:
        return None
    inputs, offsets, context = joint
    with context():
        hidden = _trunk(core, inputs)  # (1, L, H)
    flat = hidden.reshape(-1, hidden.shape[-1])  # (L, H)
    return [
        _head_scores(core, plan, flat[plan.token_index() + offset], logits, chunk_size)
        for plan, offset, logits in zip(plans, offsets, return_logits)
    ]


def layout_plan(core: PreTrainedModel, batch: dict[str, torch.Tensor], layout: Layout) -> Plan:
    """The forward that scores ``batch`` in ``layout``."""
    if not is_pair_batch(batch):
        plan = row_plan(batch)
    elif layout.shared_prefix:
        plan = shared_prefix_plan(core, batch, dense_mask=not layout.padding_free)
    else:
        plan = unpacked_plan(core, batch, share_images=layout.images_once)
    return pack(core, plan) if layout.padding_free else plan


def _trunk(core: PreTrainedModel, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The decoder's last hidden states ``(N, T, H)``, without the LM head."""
    return getattr(core, quirks_for(core.config).trunk)(**inputs, use_cache=False).last_hidden_state


def _head_scores(
    core: PreTrainedModel, plan: Plan, hidden: torch.Tensor, return_logits: bool, chunk_size: int
) -> ResponseScores:
    """Scores from the states ``(n, H)`` that predict each real response token of ``plan``."""
    head = _head(core)
    if chunk_size > 0:  # log-probs when first read, or with the token KL (`ResponseScores`)
        targets = plan.targets[plan.mask]  # (n,)
        return ResponseScores(plan.mask, hidden=hidden, head=head, targets=targets, chunk_size=chunk_size)
    if not return_logits and not (torch.is_grad_enabled() and hidden.requires_grad):
        # log-probs without a gradient (a live reference, evaluation): the head a few rows at a
        # time, so that no (n, V) logits exist at all
        rows = max(1, NO_GRAD_HEAD_BYTES // (4 * core.get_output_embeddings().weight.shape[0]))
        targets = plan.targets[plan.mask]  # (n,)
        return ResponseScores(plan.mask, token_logps=chunked_head_scores(hidden, head, targets, rows)[0])
    return _logits_scores(plan, head(hidden).float(), return_logits)  # (n, V)


def _logits_scores(plan: Plan, logits: torch.Tensor, return_logits: bool) -> ResponseScores:
    targets = plan.targets[plan.mask]  # (n,) the real response tokens, row by row
    if return_logits:  # log-probs when first read, or fused with the token KL (`ResponseScores`)
        return ResponseScores(plan.mask, token_logits=logits, targets=targets)
    # the logits are this function's own: the backward builds its gradient in them
    return ResponseScores(plan.mask, token_logps=TargetLogProb.apply(logits, targets, True))  # (n,)


def _head(core: PreTrainedModel) -> Callable[[torch.Tensor], torch.Tensor]:
    """The LM head plus the family's logits transform: states ``(..., H)`` -> logits ``(..., V)``."""
    quirks: ModelQuirks = quirks_for(core.config)
    output_embeddings = core.get_output_embeddings()

    def head(states: torch.Tensor) -> torch.Tensor:
        logits = output_embeddings(states)  # (..., V)
        if quirks.logits_transform is not None:
            logits = quirks.logits_transform(logits, core.config)
        return logits

    return head


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
