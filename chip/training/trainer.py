"""`ChipTrainer`: a `transformers.Trainer` that scores W, L and C and applies `chip.losses.chip_loss`.

The trainer only orchestrates forward passes, the reference and logging; the objective lives in
`chip.losses`, the reference in `chip.training.reference`, non-finite handling in
`chip.training.nonfinite`. Because it is a plain `Trainer`, Accelerate (DDP, FSDP, DeepSpeed),
checkpointing, `--resume_from_checkpoint` and every `report_to` integration work unchanged.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from contextlib import nullcontext
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from chip.errors import ConfigError
from chip.losses import TokenScores, chip_loss, list_loss, with_image_anchors
from chip.modeling import ResponseScorer, ResponseScores
from chip.modeling.batch import (
    CORRUPT,
    CORRUPT_SEGMENT,
    IDS,
    MORE_CHOSEN_SEGMENT,
    MORE_REJECTED,
    MORE_REJECTED_OF,
    MORE_REJECTED_SEGMENT,
    REAL,
    REAL_SEGMENT,
    split_pairs,
)
from chip.modeling.gated_mlp import fuse_gated_mlps
from chip.training.assembly import assemble_run
from chip.training.config import ChipConfig
from chip.training.distributed import enable_fsdp_on_cpu, place_reference_model, wrap_only_present_layers
from chip.training.hallucination import HallucinationProbe
from chip.training.model_card import RunData, model_card, write_model_card
from chip.training.nonfinite import NonFiniteGuard
from chip.training.reference import LiveReference, Reference

logger = logging.getLogger(__name__)


class ChipTrainer(NonFiniteGuard):
    """Preference training with the CHiP objective (DPO and every ablation are weight settings).

    Built the way TRL's ``DPOTrainer`` is, it assembles the run itself (`chip.training.assembly`):

        trainer = ChipTrainer(model="path/or/hub-id", args=ChipConfig(output_dir="runs/x"),
                              train_dataset=dataset, processing_class=processor, peft_config=lora)
        trainer.train()

    ``model`` is a path or a loaded model; ``train_dataset`` / ``eval_dataset`` a `datasets.Dataset`,
    a list of dicts or a path; ``peft_config`` a `peft.LoraConfig`; ``ref_model`` a frozen reference
    (default: the LoRA base, or a copy of the model). The checks, errors and numbers are those of
    `chip train` with the same settings.

    Given a ``data_collator`` it takes everything ready-made instead (as `chip train` does):
    ``reference`` is a `chip.training.reference.Reference` strategy (default: a live reference,
    i.e. the PEFT policy's base under its disabled adapter). ``scorer`` scores the policy's rows
    and a live reference's (default: a `ResponseScorer` with the run's ``layout_settings``); it
    keeps what each model's first batch showed for the whole run.
    """

    args: ChipConfig

    def __init__(
        self,
        model: nn.Module | str | None = None,
        args: ChipConfig | None = None,
        data_collator=None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        *more,
        reference: Reference | None = None,
        scorer: ResponseScorer | None = None,
        ref_model: nn.Module | None = None,
        peft_config=None,
        hallucination: HallucinationProbe | None = None,
        **kwargs,
    ):
        if data_collator is None:
            args = args if args is not None else ChipConfig()
            if reference is not None:
                raise ConfigError("reference= goes with a ready-made data_collator; pass ref_model= instead")
            parts = assemble_run(
                args, model, train_dataset, eval_dataset, processing_class, ref_model, peft_config
            )
            model, data_collator, reference = parts.model, parts.collator, parts.reference
            hallucination = parts.hallucination
            train_dataset, eval_dataset = parts.train, parts.held_out or None
            processing_class = parts.adapter.processor
        elif ref_model is not None or peft_config is not None:
            raise ConfigError(
                "ref_model= and peft_config= are for a trainer that builds its own run; "
                "with a data_collator pass reference= and a wrapped model"
            )
        if getattr(args, "fuse_gated_mlp", False) and isinstance(model, nn.Module):
            logger.info("SiLU-gated MLPs with the fused backward: %d", fuse_gated_mlps(model))
        super().__init__(
            model, args, data_collator, train_dataset, eval_dataset, processing_class, *more, **kwargs
        )
        self.loss_config = self.args.loss_config
        self.scorer = scorer if scorer is not None else ResponseScorer(self.args.layout_settings)
        self.reference = reference if reference is not None else LiveReference(None)
        self.reference.bind(self.scorer, self.accelerator.unwrap_model, self._place_reference_model)
        self._stored_metrics: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        self.hallucination = hallucination

    def create_accelerator_and_postprocess(self) -> None:
        enable_fsdp_on_cpu()
        super().create_accelerator_and_postprocess()
        if self.is_fsdp_enabled:
            wrap_only_present_layers(self.accelerator, self.model)

    def after_save_model(self, output_dir: str | None, checkpoint: bool) -> None:
        """After `Trainer.save_model`: the full weights of a final save when FSDP shards the state dict.

        With ``fsdp_state_dict_type: SHARDED_STATE_DICT`` transformers 5.24 writes no weights at all
        there (checkpoints get their shards from the optimizer-state save), so the final
        ``output_dir`` of a sharded run would hold no model. The shards are gathered (a collective:
        every process calls this) and written by the main process for `from_pretrained`.
        """
        sharded = self.is_fsdp_enabled and "FULL_STATE_DICT" not in str(
            self.accelerator.state.fsdp_plugin.state_dict_type
        )
        if sharded and not checkpoint:
            state_dict = self.accelerator.get_state_dict(self.model)
            if self.args.should_save:
                self.write_weights(output_dir, state_dict)
        if not checkpoint and self.args.should_save:
            self.write_model_card(output_dir or self.args.output_dir)

    def write_model_card(self, output_dir: str) -> None:
        """``output_dir/README.md``: the Hugging Face model card of this run (`chip.training.model_card`)."""
        train, held_out = self.train_dataset or [], self.eval_dataset or []
        data = RunData(
            train_source=train[0].source if train else "",
            train_rows=len(train),
            eval_source=held_out[0].source if held_out else None,
            eval_rows=len(held_out),
        )
        adapter = hasattr(self.accelerator.unwrap_model(self.model), "peft_config")
        write_model_card(output_dir, model_card(self.args, self.state.log_history, data, adapter))

    def _place_reference_model(self, ref_model: nn.Module) -> nn.Module:
        return place_reference_model(self.accelerator, ref_model)

    def score_batch(
        self, model: nn.Module, inputs: dict
    ) -> tuple[TokenScores, TokenScores, TokenScores | None]:
        """Policy and reference scores of W, L and C, as the `TokenScores` `chip_loss` takes.

        With ``share_frozen_vision`` the reference reuses the policy's vision-tower outputs of this
        step where the tower is frozen (`chip.modeling.frozen_vision`); none are kept past the step.
        """
        num, need_kl = len(inputs[IDS]), self.loss_config.needs_kl
        sharing = self.reference.sharing_vision(model) if self.args.share_frozen_vision else nullcontext()
        chosen_rows, rejected_rows = split_pairs(range(2 * num), num)
        with sharing:
            if not self.loss_config.needs_corrupt or CORRUPT not in inputs:
                policy = self.scorer(model, inputs[REAL], need_kl)  # (2B, R) rows [W..., L...]
                ref_logps, kl = self.reference.real(model, inputs, policy, need_kl)  # (2B, R) each
                real = partial(_rows, policy, ref_logps, inputs[REAL_SEGMENT], kl)
                return real(chosen_rows), real(rejected_rows), None
            # the real pairs and the C rows ((2B, R) [C..., L̃...] when anchored) in one forward of
            # each model where the layout allows it
            policy, policy_c = self.scorer.score_many(
                model, [inputs[REAL], inputs[CORRUPT]], [need_kl, False]
            )
            ref_logps, kl, ref_c = self.reference.real_and_corrupt(model, inputs, policy, policy_c, need_kl)
        real = partial(_rows, policy, ref_logps, inputs[REAL_SEGMENT], kl)
        chosen, rejected = real(chosen_rows), real(rejected_rows)
        corrupt = _rows(policy_c, ref_c, inputs[CORRUPT_SEGMENT], None, range(num))
        if self.loss_config.anchored:
            rejected_c = _rows(policy_c, ref_c, inputs[CORRUPT_SEGMENT], None, range(num, 2 * num))
            return with_image_anchors(
                chosen, rejected, corrupt, rejected_c, self.loss_config.image_anchored_weights
            )
        return chosen, rejected, corrupt

    def score_more_rejected(
        self, model: nn.Module, inputs: dict, rejected: TokenScores
    ) -> tuple[TokenScores, Tensor]:
        """Every rejected response of the batch: the first ones ``[B, R]`` then the others ``[E, R_e]``,
        padded to one width, and the example (batch index) of each row."""
        rows = inputs[MORE_REJECTED]
        policy = self.scorer(model, rows, self.loss_config.needs_kl)  # (E, R_e)
        ref_logps, kl = self.reference.other_rows(model, rows, policy, self.loss_config.needs_kl)  # (E, R_e)
        more = _rows(policy, ref_logps, inputs[MORE_REJECTED_SEGMENT], kl, range(len(policy.logps)))
        num = rejected.logps.shape[0]
        example_of = torch.cat([torch.arange(num), inputs[MORE_REJECTED_OF].cpu()]).to(rejected.logps.device)
        return _cat_scores(rejected, more), example_of

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        chosen, rejected, corrupt = self.score_batch(model, inputs)
        row_ids = inputs[IDS]  # the example id of each row, for the non-finite report
        if MORE_REJECTED in inputs:
            rejected, example_of = self.score_more_rejected(model, inputs, rejected)
            chosen_segment = _cat_flags(chosen.segment, inputs[MORE_CHOSEN_SEGMENT])  # (P, R)
            losses, metrics = list_loss(
                chosen, rejected, corrupt, example_of, self.loss_config, chosen_segment
            )
            row_ids = [inputs[IDS][i] for i in example_of.tolist()]  # rejected rows are the longest
        else:
            losses, metrics = chip_loss(chosen, rejected, corrupt, self.loss_config)
        scores = {"chosen": chosen, "rejected": rejected, "chosen_corrupt": corrupt}
        loss, finite = self.guard_loss(losses.mean(), metrics, row_ids, scores, training=model.training)
        if finite:
            self._store_metrics(metrics, "train" if model.training else "eval")
        return (loss, metrics) if return_outputs else loss

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
        if self.hallucination is not None and "eval_loss" in logs:
            # `evaluate` returns this same dict, so --metric_for_best_model sees these metrics too
            for name, value in self.hallucination.measure(self.model).items():
                logs[f"eval_{name}"] = value
        super().log(logs, start_time)

    def qualifies_for_best(self, metrics: dict[str, float]) -> bool:
        """An evaluation below ``--min_eval_recall`` never becomes the best checkpoint."""
        floor = self.args.min_eval_recall
        return floor is None or metrics.get("eval_recall", 0.0) >= floor

    def load_checkpoint_weights(self, folder: str, model: nn.Module | None) -> bool:
        """Load a full-model checkpoint the way `from_pretrained` does, key renaming included.

        transformers 5.24's `Trainer` loads ``model.safetensors`` with its raw key names and
        ``strict=False``, but `save_pretrained` writes some families (LLaVA, LLaVA-NeXT) under their
        legacy names, so no weight would load and training would silently restart from the base
        weights with the trained optimizer state. PEFT adapters, FSDP and DeepSpeed keep the stock path.
        """
        target = self.accelerator.unwrap_model(model if model is not None else self.model)
        folder = Path(folder)
        has_full_weights = (folder / "model.safetensors").exists() or (
            folder / "model.safetensors.index.json"
        ).exists()
        if (
            not has_full_weights
            or self.is_fsdp_enabled
            or self.is_deepspeed_enabled
            or not hasattr(target, "from_pretrained")
        ):
            return False
        dtype = next(target.parameters()).dtype
        loaded = type(target).from_pretrained(folder, dtype=dtype)
        target.load_state_dict(loaded.state_dict(), strict=True)
        del loaded
        return True

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self.prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None


def _rows(
    policy: ResponseScores, ref_logps: Tensor, segment: Tensor, kl: Tensor | None, rows: range
) -> TokenScores:
    picked = slice(rows.start, rows.stop)
    return TokenScores(
        logps=policy.logps[picked],
        ref_logps=ref_logps[picked],
        mask=policy.mask[picked],
        segment=segment[picked],
        kl=None if kl is None else kl[picked],
    )


def _cat_flags(first: Tensor, more: Tensor) -> Tensor:
    """Rows of two padded bool/float tensors ``[B, R]`` and ``[E, R']`` as one ``[B + E, max(R, R')]``."""
    width = max(first.shape[1], more.shape[1])
    more = more.to(first.device, first.dtype)
    return torch.cat([F.pad(rows, (0, width - rows.shape[1])) for rows in (first, more)])


def _cat_scores(first: TokenScores, more: TokenScores) -> TokenScores:
    """The rows of two `TokenScores` as one, padded to the wider (padding is masked out)."""
    fields = ("logps", "ref_logps", "mask", "segment", "kl")
    joined = {}
    for name in fields:
        a, b = getattr(first, name), getattr(more, name)
        joined[name] = None if a is None or b is None else _cat_flags(a, b)
    return TokenScores(**joined)
