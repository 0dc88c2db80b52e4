"""The training steps compared by `bench/bench_step.py`, one class per way of computing a step.

Every variant owns deep copies of the workload's model (policy, and a reference where it needs
one), an optimizer built by `transformers.Trainer` from the same arguments (AdamW, same learning
rate), and its batches collated in advance by its own collator, so a timed step is exactly:
forward passes, loss, backward, ``optimizer.step()``, ``zero_grad()``. No gradient clipping, no
scheduler, no data loading — identical for all. Variants:

- ``trl``: TRL's `DPOTrainer` (its vision collator, its ``training_step``/``compute_loss``, which
  scores log-probs with its fused chunked LM head) — plain DPO, live reference model.
  ``trl-completion``: the same with the LM head restricted to completion tokens, which is what
  TRL does on a GPU (on a CPU its head projects every position, prompt and image included).
- ``naive``: CHiP as the authors' code computes it: one forward per row type (W, L, C), each with
  full-sequence logits ``(B, T, V)`` and their log-softmax, for the policy and a live reference.
- ``chip-live`` / ``chip-precomputed`` / ``chip-dpo``: `chip.training.trainer.ChipTrainer` with the full
  CHiP loss and a live reference, the same with a precomputed reference cache (no reference
  model), and λ = α = μ = 0 (plain DPO) with a live reference. ``chip-anchored``: chip-live with
  image-anchored token weights (`--method chip-anchored`: the rejected response is scored under ṽ too).
- ``chip-live-full-logits`` / ``chip-live-unshared`` / ``chip-live-twice``: ablations of
  chip-live with logits at every position, without prefix sharing, and without prefix sharing
  nor encoding each image once; ``chip-live-vision-twice`` without the reference reusing the
  policy's frozen vision-tower output; ``chip-live-padded`` / ``chip-dpo-padded`` with padded rows
  instead of rows packed without padding; ``chip-*-chunked`` with the LM head in chunks.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any
from unittest import mock

import torch
from accelerate.utils import send_to_device
from torch import nn
from transformers import Trainer

from bench.naive import NaiveBatch, naive_batch, naive_loss
from bench.workload import Workload
from chip.losses import ChipLossConfig
from chip.modeling import ResponseScorer
from chip.training.collate import ChipCollator
from chip.training.config import ChipConfig
from chip.training.precompute import precompute_reference
from chip.training.reference import LiveReference, PrecomputedReference
from chip.training.reference_cache import ReferenceCache
from chip.training.trainer import ChipTrainer

TERMS = ("segment_weight", "token_weight", "visual_weight")  # λ, α, μ
FULL_CHIP = {name: getattr(ChipLossConfig(), name) for name in TERMS}  # chip's defaults
PLAIN_DPO = {name: 0.0 for name in TERMS}


class Variant:
    """A way of computing one optimizer step; subclasses fill ``batches`` and ``_loss``."""

    key = ""
    label = ""

    def __init__(self, workload: Workload, settings: dict[str, Any]):
        self.workload = workload
        self.settings = settings
        self.batches: list[Any] = []
        self.optimizer: torch.optim.Optimizer | None = None
        self.modules: list[nn.Module] = []  # everything resident for this variant (policy, reference)

    def step(self, index: int) -> float:
        """One full optimizer step on batch ``index`` (cycled); returns the loss."""
        loss = self._loss(self.batches[index % len(self.batches)])
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss

    def _loss(self, batch: Any) -> float:
        raise NotImplementedError

    def resident_bytes(self) -> int:
        """Bytes held between steps: weights of every model, optimizer state, the collated batches."""
        tensors = [t for m in self.modules for t in (*m.parameters(), *m.buffers())]
        if self.optimizer is not None:
            tensors += [
                v for state in self.optimizer.state.values() for v in state.values() if torch.is_tensor(v)
            ]
        return _unique_bytes(tensors) + _unique_bytes(list(_tensors_in(self.batches[0])))


class _TrainerVariant(Variant):
    """A variant driven by a `transformers.Trainer` subclass's own ``training_step``."""

    trainer: Trainer

    def _finish(self, trainer: Trainer, batches: list[Any]) -> None:
        self.trainer = trainer
        trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train's loop, which we bypass
        trainer.create_optimizer()
        self.optimizer = trainer.optimizer
        self.batches = [send_to_device(batch, self.workload.device) for batch in batches]

    def _loss(self, batch: Any) -> float:
        return float(self.trainer.training_step(self.trainer.model, batch))


class TrlDpo(_TrainerVariant):
    """TRL's DPO step. ``completion_only`` makes its fused LM head score only the completion tokens
    on any device, as it does on CUDA/XPU with Triton; on a CPU it otherwise scores every position.
    """

    key, label = "trl", "(a) TRL DPOTrainer, plain DPO"

    def __init__(self, workload: Workload, settings: dict[str, Any], completion_only: bool = False):
        from datasets import Dataset
        from trl import DPOConfig, DPOTrainer

        super().__init__(workload, settings)
        self.completion_only = completion_only
        if completion_only:
            self.key, self.label = "trl-completion", "(a') TRL, LM head on completions only (as on GPU)"
        policy, reference = workload.fresh_model(trainable=True), workload.fresh_model(trainable=False)
        self.modules = [policy, reference]
        args = DPOConfig(
            beta=ChipLossConfig().beta,
            max_length=None,
            precompute_ref_log_probs=False,
            **_training_args(workload, settings),
        )
        rows = workload.trl_rows
        trainer = DPOTrainer(
            model=policy,
            ref_model=reference,
            args=args,
            train_dataset=Dataset.from_list(rows[:2]),
            processing_class=workload.adapter.processor,
        )
        batches = [
            trainer.data_collator([dict(rows[i]) for i in ids])
            for ids in workload.batches(settings["num_batches"])
        ]
        self._finish(trainer, batches)

    def _loss(self, batch: Any) -> float:
        if not self.completion_only:
            return super()._loss(batch)
        import trl.trainer.utils

        with mock.patch.object(trl.trainer.utils, "_use_triton", lambda device: True):
            return super()._loss(batch)


class ChipVariant(_TrainerVariant):
    """`ChipTrainer` with a given loss, reference mode and layout switches.

    ``full_logits`` gives the trainer a scorer on the ``"full"`` route (a plain forward, logits at
    every position, then a gather) — an ablation of computing logits only at the response positions.
    """

    def __init__(
        self,
        workload: Workload,
        settings: dict[str, Any],
        key: str,
        label: str,
        weights: dict[str, float],
        reference: str = "model",
        share_prefix: bool = True,
        encode_images_once: bool = True,
        full_logits: bool = False,
        logits_chunk_size: int = 0,
        share_frozen_vision: bool = True,
        padding_free: bool = True,
        fuse_gated_mlp: bool = True,
    ):
        super().__init__(workload, settings)
        self.key, self.label = key, label
        policy = workload.fresh_model(trainable=True)
        self.modules = [policy]
        extra: dict[str, Any] = {}
        collator = _collator(workload, weights)
        if reference == "model":
            strategy = LiveReference(workload.fresh_model(trainable=False))
            self.modules.append(strategy.ref_model)
        else:
            cache_dir = write_reference_cache(workload, collator, settings["kl_top_k"], weights)
            strategy = PrecomputedReference(ReferenceCache.open(cache_dir))
            collator.reference_cache = strategy.cache
            extra = dict(reference_cache=str(cache_dir))
        args = ChipConfig(
            reference=reference,
            kl_top_k=settings["kl_top_k"],
            share_prefix=share_prefix,
            encode_images_once=encode_images_once,
            logits_chunk_size=logits_chunk_size,
            share_frozen_vision=share_frozen_vision,
            padding_free=padding_free,
            fuse_gated_mlp=fuse_gated_mlp,
            **weights,
            **extra,
            **_training_args(workload, settings),
        )
        scorer = ResponseScorer(replace(args.layout_settings, route="full")) if full_logits else None
        trainer = ChipTrainer(
            model=policy,
            args=args,
            train_dataset=workload.examples,
            data_collator=collator,
            reference=strategy,
            scorer=scorer,
        )
        examples = workload.examples
        batches = [collator([examples[i] for i in ids]) for ids in workload.batches(settings["num_batches"])]
        self._finish(trainer, batches)


class NaiveChip(Variant):
    key, label = "naive", "(b) naive CHiP, live reference"

    def __init__(self, workload: Workload, settings: dict[str, Any]):
        super().__init__(workload, settings)
        self.policy = workload.fresh_model(trainable=True)
        self.reference = workload.fresh_model(trainable=False)
        self.modules = [self.policy, self.reference]
        args = ChipConfig(**FULL_CHIP, **_training_args(workload, settings))
        self.loss_config = args.loss_config
        optimizer_cls, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(args, self.policy)
        trainable = [p for p in self.policy.parameters() if p.requires_grad]
        self.optimizer = optimizer_cls(trainable, **optimizer_kwargs)
        collator = _collator(workload, FULL_CHIP)
        examples = workload.examples
        self.batches = [
            naive_batch(workload.adapter, collator, [examples[i] for i in ids]).to(workload.device)
            for ids in workload.batches(settings["num_batches"])
        ]

    def _loss(self, batch: NaiveBatch) -> float:
        self.policy.train()
        loss = naive_loss(self.policy, self.reference, batch, self.loss_config)
        loss.backward()
        return float(loss.detach())


def _collator(workload: Workload, weights: dict[str, Any]) -> ChipCollator:
    anchored = weights.get("image_anchored_weights", "off") != "off"
    return ChipCollator(
        workload.adapter,
        seed=0,
        max_length=None,
        score_corrupt=weights["visual_weight"] > 0 or anchored,
        corrupt_both=anchored,
    )


def write_reference_cache(
    workload: Workload, collator: ChipCollator, top_k: int, weights: dict[str, float]
) -> Path:
    """The reference cache of the workload's examples (written once, outside any timed step)."""
    folder = Path(tempfile.mkdtemp(prefix="chip-bench-cache-"))
    reference = workload.fresh_model(trainable=False)
    precompute_reference(
        reference,
        collator,
        workload.examples,
        folder,
        settings={"bench": True, "kl_top_k": top_k},
        needs_kl=weights["token_weight"] > 0,
        batch_size=workload.preset.batch_size,
    )
    del reference
    return folder


def _training_args(workload: Workload, settings: dict[str, Any]) -> dict[str, Any]:
    """The `TrainingArguments` every Trainer-based variant shares."""
    on_cpu = workload.device.type == "cpu"
    return dict(
        output_dir=settings["output_dir"],
        per_device_train_batch_size=workload.preset.batch_size,
        learning_rate=settings["learning_rate"],
        weight_decay=0.0,
        seed=0,
        report_to="none",
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
        bf16=False,
        fp16=False,
        gradient_checkpointing=settings["gradient_checkpointing"],
        use_cpu=on_cpu,
        remove_unused_columns=False,
    )


def _unique_bytes(tensors: list[torch.Tensor]) -> int:
    seen: dict[int, int] = {}
    for tensor in tensors:
        storage = tensor.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def _tensors_in(value: Any):
    if torch.is_tensor(value):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors_in(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors_in(item)


def _chip(key: str, label: str, weights: dict[str, float], **options: Any) -> Callable[..., Variant]:
    return lambda workload, settings: ChipVariant(workload, settings, key, label, weights, **options)


VARIANTS: dict[str, Callable[[Workload, dict[str, Any]], Variant]] = {
    "trl": TrlDpo,
    "trl-completion": lambda workload, settings: TrlDpo(workload, settings, completion_only=True),
    "naive": NaiveChip,
    "chip-live": _chip("chip-live", "(c) chip CHiP, live reference", FULL_CHIP),
    "chip-precomputed": _chip(
        "chip-precomputed", "(d) chip CHiP, precomputed reference", FULL_CHIP, reference="precomputed"
    ),
    "chip-dpo": _chip("chip-dpo", "(e) chip plain DPO, live reference", PLAIN_DPO),
    "chip-anchored": _chip(
        "chip-anchored",
        "(c) with image-anchored token weights (rejected also under ṽ)",
        {**FULL_CHIP, "image_anchored_weights": "reference"},
    ),
    "chip-live-full-logits": _chip(
        "chip-live-full-logits", "(c) with logits at every position", FULL_CHIP, full_logits=True
    ),
    "chip-live-unshared": _chip(
        "chip-live-unshared", "(c) without prefix sharing", FULL_CHIP, share_prefix=False
    ),
    "chip-live-twice": _chip(
        "chip-live-twice",
        "(c) without prefix sharing or image reuse",
        FULL_CHIP,
        share_prefix=False,
        encode_images_once=False,
    ),
    "chip-live-vision-twice": _chip(
        "chip-live-vision-twice",
        "(c) with the reference encoding every image again",
        FULL_CHIP,
        share_frozen_vision=False,
    ),
    "chip-live-padded": _chip(
        "chip-live-padded", "(c) with padded rows (no packing)", FULL_CHIP, padding_free=False
    ),
    "chip-dpo-padded": _chip(
        "chip-dpo-padded", "(e) with padded rows (no packing)", PLAIN_DPO, padding_free=False
    ),
    "chip-live-unfused": _chip(
        "chip-live-unfused",
        "(c) with autograd's own gated MLPs (--fuse_gated_mlp false)",
        FULL_CHIP,
        fuse_gated_mlp=False,
    ),
    "chip-live-chunked": _chip(
        "chip-live-chunked", "(c) with the LM head in chunks of 256 tokens", FULL_CHIP, logits_chunk_size=256
    ),
    "chip-precomputed-chunked": _chip(
        "chip-precomputed-chunked",
        "(d) with the LM head in chunks of 256 tokens",
        FULL_CHIP,
        reference="precomputed",
        logits_chunk_size=256,
    ),
}
DEFAULT_VARIANTS = ["trl", "trl-completion", "naive", "chip-live", "chip-precomputed", "chip-dpo"]
