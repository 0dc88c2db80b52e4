"""`ChipTrainer`: a `transformers.Trainer` that scores W, L and C and applies `chip.losses.chip_loss`.

The trainer only orchestrates forward passes, the reference, and logging; the objective lives in
`chip.losses`. Because it is a plain `Trainer`, Accelerate (DDP, FSDP, DeepSpeed), checkpointing,
`--resume_from_checkpoint` and every `report_to` integration work unchanged.

Non-finite values (`--on_nonfinite`): a NaN/inf loss is caught before its backward pass and a
NaN/inf gradient norm before the optimizer step, and all processes agree on it. ``error`` saves
the not-yet-updated state to ``output_dir/nonfinite-step-N`` and raises `NonFiniteLossError`
naming the step, the example ids and the term; ``skip`` drops the batch (and, when its gradient is
non-finite, the whole update), counts it and logs it.
"""

from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from pathlib import Path

import torch
from torch import Tensor, nn
from transformers import Trainer

from chip.config import ChipConfig
from chip.errors import ChipError
from chip.losses import TokenScores, chip_loss, token_kl, topk_token_kl
from chip.modeling import ResponseScores, adapter_disabled, response_logps

logger = logging.getLogger(__name__)

NONFINITE_DIR = "nonfinite-step-{step}"  # under output_dir: the state saved before stopping


class NonFiniteLossError(ChipError):
    """The loss, one of its terms or the gradient became NaN/inf; the message names the step, ids and term.

    Raised only after the state is saved (`ChipTrainer.save_nonfinite_state`), so hours of training
    are not lost to one bad batch.
    """


class ChipTrainer(Trainer):
    """Preference training with the CHiP objective (DPO and every ablation are weight settings).

    Reference modes (``args.reference``): ``model`` uses ``ref_model`` or, for a PEFT policy without
    one, the same network with its adapter disabled (no second copy in memory); ``precomputed``
    reads the ``reference`` entries the collator takes from a `chip.reference_cache.ReferenceCache`;
    ``none`` is reference-free (log-ratios against 0).
    """

    args: ChipConfig

    def __init__(self, *args, ref_model: nn.Module | None = None, skip_nonfinite: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_config = self.args.loss_config
        self.ref_model = ref_model
        self.skip_nonfinite = skip_nonfinite
        self.skipped_batches = 0  # batches whose loss was non-finite (skip mode)
        self.skipped_updates = 0  # optimizer steps dropped for a non-finite gradient (skip mode)
        self._step_ids: list[str] = []  # example ids since the last optimizer step
        self._stored_metrics: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        if self.ref_model is not None:
            if self.is_deepspeed_enabled:
                self.ref_model = self.accelerator.prepare_model(self.ref_model, evaluation_mode=True)
            else:
                self.ref_model = self.ref_model.to(self.args.device).eval()
            self.ref_model.requires_grad_(False)

    # ------------------------------------------------------------------ forward passes
    def _logps(self, model: nn.Module, batch: dict, need_logits: bool = False) -> ResponseScores:
        """`response_logps` with this run's layout switches (``share_prefix``, ``encode_images_once``)."""
        return response_logps(
            model, batch, return_logits=need_logits,
            share_prefix=self.args.share_prefix, encode_images_once=self.args.encode_images_once,
        )  # fmt: skip

    def _reference_scores(self, model: nn.Module, batch: dict, need_logits: bool) -> ResponseScores:
        """Reference log-probs (and logits, for the KL) of one collated row set, without gradients."""
        if self.ref_model is not None:
            with torch.no_grad():
                return self._logps(self.ref_model, batch, need_logits)
        with torch.no_grad(), adapter_disabled(self.accelerator.unwrap_model(model)):
            return self._logps(model, batch, need_logits)

    def score_batch(self, model: nn.Module, inputs: dict) -> tuple[TokenScores, TokenScores, TokenScores | None]:
        """Policy and reference scores of W, L and C, as the `TokenScores` `chip_loss` takes."""
        config, mode = self.loss_config, self.args.reference
        num = len(inputs["ids"])
        need_kl = config.needs_kl
        policy = self._logps(model, inputs["real"], need_kl)  # (2B, R) rows [W..., L...]

        kl = None
        if mode == "model":
            ref = self._reference_scores(model, inputs["real"], need_logits=need_kl)
            ref_logps = ref.logps
            if need_kl:
                kl = token_kl(policy.logits, ref.logits)  # (2B, R)
        elif mode == "precomputed":
            cached = inputs["reference"]
            ref_logps = cached["real_logps"]
            if need_kl:
                kl = topk_token_kl(policy.logits, cached["real_topk_logps"], cached["real_topk_ids"])
        else:
            ref_logps = torch.zeros_like(policy.logps)

        segment = inputs["real_segment"]
        chosen = _scores(policy, ref_logps, segment, kl, slice(0, num))
        rejected = _scores(policy, ref_logps, segment, kl, slice(num, 2 * num))
        if not config.needs_corrupt or "corrupt" not in inputs:
            return chosen, rejected, None

        policy_c = self._logps(model, inputs["corrupt"])  # (B, R) rows C
        if mode == "model":
            ref_c = self._reference_scores(model, inputs["corrupt"], need_logits=False).logps
        elif mode == "precomputed":
            ref_c = inputs["reference"]["corrupt_logps"]
        else:
            ref_c = torch.zeros_like(policy_c.logps)
        corrupt = _scores(policy_c, ref_c, inputs["corrupt_segment"], None, slice(0, num))
        return chosen, rejected, corrupt

    # ------------------------------------------------------------------ loss and logging
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        train_eval = "train" if model.training else "eval"
        chosen, rejected, corrupt = self.score_batch(model, inputs)
        losses, metrics = chip_loss(chosen, rejected, corrupt, self.loss_config)
        loss = losses.mean()
        if model.training:
            self._step_ids.extend(inputs["ids"])
        scores = {"chosen": chosen, "rejected": rejected, "chosen_corrupt": corrupt}
        if self._on_any_process(~torch.isfinite(loss)):
            # every process takes this branch together: _store_metrics and saving are collective
            loss = self._handle_nonfinite(loss, metrics, inputs["ids"], scores)
        else:
            self._store_metrics(metrics, train_eval)
        return (loss, metrics) if return_outputs else loss

    # ------------------------------------------------------------------ non-finite values
    def _on_any_process(self, flag: Tensor) -> bool:
        """Whether ``flag`` is true on any process (a no-op reduction on a single one)."""
        return bool(self.accelerator.reduce(flag.float().reshape(1), reduction="sum").item() > 0)

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
        if not self.skip_nonfinite:
            folder = self.save_nonfinite_state(
                step, {"step": step, "terms": terms, "loss_terms": effects, "ids": bad_ids, "batch_ids": list(ids)}
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

    def _get_grad_norm(self, model, grad_norm=None):
        """Trainer's gradient norm, checked before the optimizer applies the gradient.

        This is the one point of `Trainer`'s loop where the norm of the whole accumulated (and
        all-reduced, so identical on every process) gradient is known before ``optimizer.step()``.
        A non-finite norm stops the run after saving the not-yet-updated state, or in skip mode
        drops the update: with every ``.grad`` set to None the optimizer leaves each parameter and
        its moments as they were, where clipping alone would have multiplied them by NaN.
        """
        grad_norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        ids, self._step_ids = self._step_ids, []
        if grad_norm is None or math.isfinite(float(grad_norm)):
            return grad_norm
        step = self.state.global_step + 1
        where = f"step {step}: non-finite gradient (norm {float(grad_norm)}) for example ids {ids}"
        if not self.skip_nonfinite:
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
        self._save_optimizer_and_scheduler(str(folder))
        if self.args.should_save:
            (folder / "nonfinite.json").write_text(json.dumps(report, indent=1))
            self.state.save_to_json(str(folder / "trainer_state.json"))  # last: marks the folder complete
        return folder

    def _store_metrics(self, metrics: dict[str, Tensor], train_eval: str) -> None:
        for name, value in metrics.items():
            gathered = self.accelerator.gather_for_metrics(value.detach())
            self._stored_metrics[train_eval][name].append(gathered.float().nanmean().item())

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        train_eval = "train" if "loss" in logs else "eval"
        prefix = "" if train_eval == "train" else "eval_"
        if train_eval == "train" and (self.skipped_batches or self.skipped_updates):
            logs["skipped_nonfinite_batches"] = float(self.skipped_batches)
            logs["skipped_nonfinite_updates"] = float(self.skipped_updates)
        for name, values in self._stored_metrics[train_eval].items():
            logs[f"{prefix}{name}"] = sum(values) / len(values)
        self._stored_metrics[train_eval].clear()
        super().log(logs, start_time)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        """Load a full-model checkpoint the way `from_pretrained` does, key renaming included.

        transformers 5.24's `Trainer` loads ``model.safetensors`` with its raw key names and
        ``strict=False``, but `save_pretrained` writes some families (LLaVA, LLaVA-NeXT) under their
        legacy names, so no weight would load and training would silently restart from the base
        weights with the trained optimizer state. PEFT adapters, FSDP and DeepSpeed keep the stock path.
        """
        target = self.accelerator.unwrap_model(model if model is not None else self.model)
        folder = Path(resume_from_checkpoint)
        has_full_weights = (folder / "model.safetensors").exists() or (folder / "model.safetensors.index.json").exists()
        if not has_full_weights or self.is_fsdp_enabled or self.is_deepspeed_enabled or not hasattr(target, "from_pretrained"):
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        dtype = next(target.parameters()).dtype
        loaded = type(target).from_pretrained(folder, dtype=dtype)
        target.load_state_dict(loaded.state_dict(), strict=True)
        del loaded

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None


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
        for name, values in ((f"policy_{role}_logps", score.logps), (f"ref_{role}_logps", score.ref_logps),
                             (f"kl_{role}", score.kl)):  # fmt: skip
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


def _scores(
    policy: ResponseScores, ref_logps: Tensor, segment: Tensor, kl: Tensor | None, rows: slice
) -> TokenScores:
    return TokenScores(
        logps=policy.logps[rows],
        ref_logps=ref_logps[rows],
        mask=policy.mask[rows],
        segment=segment[rows],
        kl=None if kl is None else kl[rows],
    )
