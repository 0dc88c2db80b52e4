"""Non-finite values during training (``--on_nonfinite``): stop after saving, or skip.

A NaN/inf loss is caught before its backward pass and a NaN/inf gradient norm before the
optimizer step, and all processes agree on it. ``error`` saves the not-yet-updated state to
``output_dir/nonfinite-step-N`` and raises `NonFiniteLossError` naming the step, the example ids
and the term; ``skip`` drops the batch (and, when its gradient is non-finite, the whole update),
counts it and logs it.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import torch
from torch import Tensor
from transformers import Trainer

from chip.compat import TrainerHooks
from chip.errors import ChipError
from chip.files import write_text_atomic
from chip.losses import TokenScores
from chip.training.distributed import on_any_process

logger = logging.getLogger(__name__)

NONFINITE_DIR = "nonfinite-step-{step}"  # under output_dir: the state saved before stopping


class NonFiniteLossError(ChipError):
    """The loss, one of its terms or the gradient became NaN/inf; the message names the step, ids and term.

    Raised only after the state is saved (`NonFiniteGuard.save_nonfinite_state`), so hours of
    training are not lost to one bad batch.
    """


class NonFiniteGuard(TrainerHooks, Trainer):
    """`Trainer` mixin: checks the loss (`guard_loss`) and the gradient norm, per ``args.on_nonfinite``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.skipped_batches = 0  # batches whose loss was non-finite (skip mode)
        self.skipped_updates = 0  # optimizer steps dropped for a non-finite gradient (skip mode)
        self._step_ids: list[str] = []  # example ids since the last optimizer step

    def guard_loss(
        self,
        loss: Tensor,
        metrics: dict[str, Tensor],
        ids: list[str],
        scores: dict[str, TokenScores | None],
        training: bool,
    ) -> tuple[Tensor, bool]:
        """``(loss to back-propagate, whether it was finite on every process)``; may raise after saving."""
        if training:
            self._step_ids.extend(ids)
        if not on_any_process(not bool(torch.isfinite(loss)), self.args.device):
            return loss, True
        # every process takes this branch together: saving is collective
        return self._handle_nonfinite(loss, metrics, ids, scores), False

    def _handle_nonfinite(
        self, loss: Tensor, metrics: dict[str, Tensor], ids: list[str], scores: dict[str, TokenScores | None]
    ) -> Tensor:
        terms, effects, rows = nonfinite_terms(scores, metrics)
        bad_ids = [ids[i] for i in rows] or list(ids)
        step = self.state.global_step + 1
        named = ", ".join(terms) or "loss (on another process)"
        if effects and effects != terms:
            named += f" (then {', '.join(effects)})"
        where = f"step {step}: non-finite {named} for example ids {bad_ids}"
        if self.args.on_nonfinite != "skip":
            folder = self.save_nonfinite_state(
                step,
                {"step": step, "terms": terms, "loss_terms": effects, "ids": bad_ids, "batch_ids": list(ids)},
            )
            raise NonFiniteLossError(
                f"{where}; model and trainer state before this step saved to {folder} "
                "(use --on_nonfinite skip to skip such batches)"
            )
        self.skipped_batches += 1
        logger.warning("%s: batch skipped (%d so far)", where, self.skipped_batches)
        # Zero loss still connected to every parameter of the graph, so DDP sees the same graph. Its
        # gradient can still be NaN (0 × NaN in the backward); the gradient check then drops the update.
        return torch.nan_to_num(loss, nan=0.0, posinf=0.0, neginf=0.0) * 0.0

    def on_grad_norm(self, grad_norm):
        """Trainer's gradient norm, checked before the optimizer applies the gradient.

        This is the one point of `Trainer`'s loop where the norm of the whole accumulated (and
        all-reduced, so identical on every process) gradient is known before ``optimizer.step()``.
        A non-finite norm stops the run after saving the not-yet-updated state, or in skip mode
        drops the update: with every ``.grad`` set to None the optimizer leaves each parameter and
        its moments as they were, where clipping alone would have multiplied them by NaN.
        """
        ids, self._step_ids = self._step_ids, []
        if grad_norm is None or math.isfinite(float(grad_norm)):
            return grad_norm
        step = self.state.global_step + 1
        where = f"step {step}: non-finite gradient (norm {float(grad_norm)}) for example ids {ids}"
        if self.args.on_nonfinite != "skip":
            folder = self.save_nonfinite_state(step, {"step": step, "terms": ["gradient"], "ids": ids})
            raise NonFiniteLossError(
                f"{where}; model and trainer state before this step saved to {folder} "
                "(use --on_nonfinite skip to skip such updates)"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.skipped_updates += 1
        logger.warning("%s: update skipped (%d so far)", where, self.skipped_updates)
        return grad_norm

    def save_nonfinite_state(self, step: int, report: dict) -> Path:
        """Save the state a non-finite value stopped the run at, under ``output_dir/nonfinite-step-N``.

        The weights are those before the failing step (its update was never applied), saved with the
        processor, optimizer, scheduler and ``trainer_state.json``, so ``--resume_from_checkpoint``
        continues from there once the cause is fixed; ``nonfinite.json`` records step, terms and ids.
        """
        folder = Path(self.args.output_dir) / NONFINITE_DIR.format(step=step)
        self.save_model(str(folder))
        self.save_optimizer_and_scheduler(str(folder))
        if self.args.should_save:
            write_text_atomic(folder / "nonfinite.json", json.dumps(report, indent=1))
            self.state.save_to_json(str(folder / "trainer_state.json"))  # last: marks the folder complete
        return folder


def nonfinite_terms(
    scores: dict[str, TokenScores | None], metrics: dict[str, Tensor]
) -> tuple[list[str], list[str], list[int]]:
    """The non-finite inputs of the loss, the loss terms they reach, and the batch rows concerned.

    Inputs are checked first because they name the cause: ``policy_rejected_logps`` says the policy's
    forward pass on L broke, and ``rewards/rejected``, ``loss/text``... merely follow. Only response
    tokens count (padding is never read by the loss). With finite inputs the loss math itself
    overflowed, and the terms are the first non-finite metrics.
    """
    terms: list[str] = []
    rows: set[int] = set()
    for role, score in scores.items():
        if score is None:
            continue
        mask = score.mask.bool()  # (B, T)
        for name, values in (
            (f"policy_{role}_logps", score.logps),
            (f"ref_{role}_logps", score.ref_logps),
            (f"kl_{role}", score.kl),
        ):
            if values is None:
                continue
            bad = (~torch.isfinite(values) & mask).any(-1)  # (B,)
            if bool(bad.any()):
                terms.append(name)
                rows.update(bad.nonzero().flatten().tolist())
    effects = [name for name, value in metrics.items() if not bool(torch.isfinite(value).all())]
    if not terms:
        terms = effects
        for name in effects:
            rows.update((~torch.isfinite(metrics[name])).nonzero().flatten().tolist())
    return terms, effects, sorted(rows)
