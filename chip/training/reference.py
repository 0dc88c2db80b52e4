"""The reference policy π_ref as a strategy: a live frozen model, a precomputed cache, or none.

Each strategy answers the same two questions for one collated batch (`chip.modeling.batch`):
the reference log-probs of the real rows ``[W..., L...]`` together with the token-level KL
against the policy's logits, and the reference log-probs of the corrupted rows C. The trainer's
step reads them without knowing which strategy it holds.

    reference = REFERENCES[config.reference].prepare(config, model, processor, examples)
    ref_logps, kl = reference.real(model, batch, policy_scores, need_kl=True)

Adding a mode: name it in `chip.training.config.ReferenceMode` (with any setting it needs checked in
`ChipConfig.__post_init__`), subclass `Reference` with that ``mode``, implement `prepare`, `real` and
`corrupt`, and list the class in `REFERENCES`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import ClassVar

import torch
from torch import Tensor, nn
from transformers.integrations import is_deepspeed_zero3_enabled

from chip.errors import ConfigError
from chip.modeling import ResponseScorer, ResponseScores, adapter_disabled
from chip.modeling.batch import CORRUPT, REAL, REFERENCE
from chip.modeling.frozen_vision import shared_frozen_vision
from chip.training.config import ChipConfig, ReferenceMode
from chip.training.models import load_model
from chip.training.reference_cache import ReferenceCache, cache_settings

# (model, collated rows, need_logits) -> scores: a `ResponseScorer`; the trainer binds its own
Scorer = Callable[[nn.Module, dict, bool], ResponseScores]


class Reference:
    """How π_ref's log-probs of a batch are obtained (see the module docstring)."""

    mode: ClassVar[ReferenceMode]  # the value of ``--reference`` that selects this strategy
    cache: ReferenceCache | None = None  # read by the collator when set

    @classmethod
    def prepare(cls, config: ChipConfig, model: nn.Module, processor, examples: Sequence) -> Reference:
        """Build the strategy for a run; ``model`` is the freshly loaded policy, before LoRA or freezing."""
        raise NotImplementedError

    def bind(
        self,
        scorer: Scorer,
        unwrap: Callable[[nn.Module], nn.Module],
        place: Callable[[nn.Module], nn.Module],
    ) -> None:
        """Called by the trainer: how to score rows, unwrap the policy, and place a reference model."""

    def real(
        self, model: nn.Module, batch: dict, policy: ResponseScores, need_kl: bool
    ) -> tuple[Tensor, Tensor | None]:
        """Reference log-probs ``(2B, R)`` of the real rows and the KL ``(2B, R)`` (None unless ``need_kl``)."""
        raise NotImplementedError

    def corrupt(self, model: nn.Module, batch: dict, policy: ResponseScores) -> Tensor:
        """Reference log-probs ``(B, R)`` of the corrupted rows C."""
        raise NotImplementedError

    def other_rows(
        self, model: nn.Module, rows: dict, policy: ResponseScores, need_kl: bool
    ) -> tuple[Tensor, Tensor | None]:
        """Reference log-probs and KL of other collated rows (more rejected responses); none are cached."""
        raise ConfigError(
            f"--reference {self.mode} cannot score rows beyond W, L and C; use --reference model"
        )

    def sharing_vision(self, model: nn.Module) -> AbstractContextManager:
        """A block (one step) in which the reference may reuse the policy's frozen vision-tower outputs."""
        return nullcontext()


class LiveReference(Reference):
    """A frozen model scored alongside the policy: a separate copy, or the policy's own base under
    its disabled LoRA adapter (``ref_model`` None), which holds no second copy of the weights."""

    mode = "model"

    def __init__(self, ref_model: nn.Module | None = None):
        self.ref_model = ref_model
        self._score: Scorer = ResponseScorer()
        self._unwrap: Callable[[nn.Module], nn.Module] = lambda model: model

    @classmethod
    def prepare(cls, config: ChipConfig, model: nn.Module, processor, examples: Sequence) -> LiveReference:
        if config.use_peft:
            return cls(None)
        if is_deepspeed_zero3_enabled():
            # ZeRO-3 loaded the policy partitioned (`zero.Init`): a deep copy would hold empty
            # parameters. A second load is partitioned the same way (as TRL loads its reference).
            return cls(load_model(config).eval().requires_grad_(False))
        return cls(copy.deepcopy(model).eval().requires_grad_(False))

    def bind(
        self,
        scorer: Scorer,
        unwrap: Callable[[nn.Module], nn.Module],
        place: Callable[[nn.Module], nn.Module],
    ) -> None:
        self._score, self._unwrap = scorer, unwrap
        if self.ref_model is not None:
            self.ref_model = place(self.ref_model)
            self.ref_model.requires_grad_(False)

    @torch.no_grad()
    def scores(self, model: nn.Module, rows: dict, need_logits: bool) -> ResponseScores:
        """The reference's scores of one set of collated rows (``model`` is the policy)."""
        if self.ref_model is not None:
            return self._score(self.ref_model, rows, need_logits)
        with adapter_disabled(self._unwrap(model)):
            return self._score(model, rows, need_logits)

    def sharing_vision(self, model: nn.Module) -> AbstractContextManager:
        return shared_frozen_vision(model, self.ref_model)

    def real(
        self, model: nn.Module, batch: dict, policy: ResponseScores, need_kl: bool
    ) -> tuple[Tensor, Tensor | None]:
        ref = self.scores(model, batch[REAL], need_kl)
        return ref.logps, policy.token_kl(ref) if need_kl else None

    def corrupt(self, model: nn.Module, batch: dict, policy: ResponseScores) -> Tensor:
        return self.scores(model, batch[CORRUPT], need_logits=False).logps

    def other_rows(
        self, model: nn.Module, rows: dict, policy: ResponseScores, need_kl: bool
    ) -> tuple[Tensor, Tensor | None]:
        ref = self.scores(model, rows, need_kl)
        return ref.logps, policy.token_kl(ref) if need_kl else None


class PrecomputedReference(Reference):
    """Reference log-probs (and a top-k distribution for the KL) read from a `ReferenceCache`."""

    mode = "precomputed"

    def __init__(self, cache: ReferenceCache):
        self.cache = cache

    @classmethod
    def prepare(
        cls, config: ChipConfig, model: nn.Module, processor, examples: Sequence
    ) -> PrecomputedReference:
        return cls(
            ReferenceCache.open(
                config.reference_cache, expected=cache_settings(config, model, processor, examples)
            )
        )

    def real(
        self, model: nn.Module, batch: dict, policy: ResponseScores, need_kl: bool
    ) -> tuple[Tensor, Tensor | None]:
        cached = batch[REFERENCE]
        kl = policy.token_kl((cached["real_topk_logps"], cached["real_topk_ids"])) if need_kl else None
        return cached["real_logps"], kl

    def corrupt(self, model: nn.Module, batch: dict, policy: ResponseScores) -> Tensor:
        return batch[REFERENCE]["corrupt_logps"]


class NoReference(Reference):
    """Reference-free: every reference log-prob is 0, so R is the policy's own log-likelihood."""

    mode = "none"

    @classmethod
    def prepare(cls, config: ChipConfig, model: nn.Module, processor, examples: Sequence) -> NoReference:
        return cls()

    def real(
        self, model: nn.Module, batch: dict, policy: ResponseScores, need_kl: bool
    ) -> tuple[Tensor, Tensor | None]:
        return torch.zeros_like(policy.logps), None

    def corrupt(self, model: nn.Module, batch: dict, policy: ResponseScores) -> Tensor:
        return torch.zeros_like(policy.logps)

    def other_rows(
        self, model: nn.Module, rows: dict, policy: ResponseScores, need_kl: bool
    ) -> tuple[Tensor, Tensor | None]:
        return torch.zeros_like(policy.logps), None


# Keyed by each strategy's ``mode``: the names are written once, in `ReferenceMode`.
REFERENCES: dict[ReferenceMode, type[Reference]] = {
    strategy.mode: strategy for strategy in (LiveReference, PrecomputedReference, NoReference)
}
