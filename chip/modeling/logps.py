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
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from typing import Literal

import torch
from peft import PeftModel
from torch import nn
from transformers import PreTrainedModel, modeling_utils

from chip.modeling.quirks import quirks_for

Route = Literal["auto", "trunk", "keep", "full"]


@dataclass
class ResponseScores:
    """Per-token scores of the response tokens of a batch, left-aligned per row."""

    logps: torch.Tensor  # (B, R) float32 log-prob of each response token, 0 at padding
    mask: torch.Tensor  # (B, R) bool, True on real response tokens
    logits: torch.Tensor | None = (
        None  # (B, R, V) float32 logits predicting each response token, 0 at padding
    )


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
    model: nn.Module, batch: dict[str, torch.Tensor], return_logits: bool = False, route: Route = "auto"
) -> ResponseScores:
    """Log-probabilities of the tokens marked by ``batch["response_mask"]`` under ``model``.

    ``batch`` is the output of :meth:`VLMAdapter.collate`; every key but ``response_mask`` goes to
    the model. Log-softmax runs in float32 whatever the model's dtype. Works under ``no_grad`` or
    with gradients, with gradient checkpointing, and on PEFT-wrapped models.
    """
    response_mask = batch["response_mask"]  # (B, T)
    inputs = {key: value for key, value in batch.items() if key != "response_mask"}
    positions, mask = response_positions(response_mask)  # (B, R), (B, R)
    predicting = (positions - 1).clamp(min=0)  # (B, R) position t-1 predicts token t
    targets = batch["input_ids"].gather(1, positions)  # (B, R)

    route = _choose_route(model) if route == "auto" else route
    logits = _LOGITS_BY_ROUTE[route](model, inputs, predicting).float()  # (B, R, V)
    # Zero rows at padding: a KL between two padded rows is then exactly 0, never garbage.
    logits = logits.masked_fill(~mask[..., None], 0.0)  # (B, R, V)
    logps = torch.log_softmax(logits, dim=-1).gather(-1, targets[..., None]).squeeze(-1)  # (B, R)
    logps = logps.masked_fill(~mask, 0.0)  # (B, R)
    return ResponseScores(logps=logps, mask=mask, logits=logits if return_logits else None)


def _logits_trunk(
    model: nn.Module, inputs: dict[str, torch.Tensor], predicting: torch.Tensor
) -> torch.Tensor:
    core = core_model(model)
    quirks = quirks_for(core.config)
    hidden = getattr(core, quirks.trunk)(**inputs, use_cache=False).last_hidden_state  # (B, T, H)
    picked = hidden.gather(1, predicting[..., None].expand(-1, -1, hidden.shape[-1]))  # (B, R, H)
    logits = core.get_output_embeddings()(picked)  # (B, R, V)
    if quirks.logits_transform is not None:
        logits = quirks.logits_transform(logits, core.config)  # (B, R, V)
    return logits


def _logits_keep(model: nn.Module, inputs: dict[str, torch.Tensor], predicting: torch.Tensor) -> torch.Tensor:
    logits = model(**inputs, logits_to_keep=predicting, use_cache=False).logits  # (B, R, V)
    if logits.shape[:2] != predicting.shape:
        raise RuntimeError(
            f"{type(core_model(model)).__name__}.forward ignored per-row logits_to_keep "
            f"(got logits {tuple(logits.shape)}); use route='full'"
        )
    return logits


def _logits_full(model: nn.Module, inputs: dict[str, torch.Tensor], predicting: torch.Tensor) -> torch.Tensor:
    logits = model(**inputs, use_cache=False).logits  # (B, T, V)
    return logits.gather(1, predicting[..., None].expand(-1, -1, logits.shape[-1]))  # (B, R, V)


_LOGITS_BY_ROUTE = {"trunk": _logits_trunk, "keep": _logits_keep, "full": _logits_full}


def core_model(model: nn.Module) -> PreTrainedModel:
    """The transformers model inside DDP / DeepSpeed / PEFT wrappers (LoRA layers stay injected)."""
    model = _outer_peft_or_model(model)
    return model.get_base_model() if isinstance(model, PeftModel) else model


def _is_fsdp2(model: nn.Module) -> bool:
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:
        return False
    return isinstance(model, FSDPModule)


def _choose_route(model: nn.Module) -> Route:
    core = core_model(model)
    lora_style_peft = isinstance(model, PeftModel) and not model.active_peft_config.is_prompt_learning
    wrapped = (model is not core and not lora_style_peft) or _is_fsdp2(core)
    keeps = "logits_to_keep" in inspect.signature(core.forward).parameters and _slices_per_row()
    if wrapped:
        return "keep" if keeps else "full"
    trunk = getattr(core, quirks_for(core.config).trunk, None)
    if isinstance(trunk, nn.Module) and core.get_output_embeddings() is not None:
        return "trunk"
    return "keep" if keeps else "full"


@cache
def _slices_per_row() -> bool:
    """Whether this transformers' ``slice_logits_to_keep`` takes a ``(B, R)`` position index.

    Older 5.x releases index dim 1 with any tensor, which would silently mix rows; a probe is
    more reliable than a version number.
    """
    slicer = getattr(modeling_utils, "slice_logits_to_keep", None)
    if slicer is None:
        return False
    hidden = torch.arange(6.0).view(2, 3, 1)  # (B=2, T=3, H=1)
    try:
        kept = slicer(hidden, torch.tensor([[0], [2]]))
    except Exception:
        return False
    return kept.shape == (2, 1, 1) and kept.flatten().tolist() == [0.0, 5.0]


def _outer_peft_or_model(model: nn.Module) -> nn.Module:
    """Strip DDP / DeepSpeed-style ``.module`` wrappers down to a PEFT or transformers model."""
    while not isinstance(model, (PeftModel, PreTrainedModel)) and isinstance(
        getattr(model, "module", None), nn.Module
    ):
        model = model.module
    return model


@contextmanager
def adapter_disabled(model: nn.Module) -> Iterator[nn.Module]:
    """Run ``model`` as its base model (the reference policy) inside the block.

    With LoRA the reference model is the policy with its adapters switched off, so no second copy
    of the weights is needed. Raises ``ValueError`` for a model without a PEFT adapter rather than
    silently scoring the reference with the policy.
    """
    inner = _outer_peft_or_model(model)
    if isinstance(inner, PeftModel):
        with inner.disable_adapter():
            yield model
    elif getattr(inner, "_hf_peft_config_loaded", False):
        inner.disable_adapters()
        try:
            yield model
        finally:
            inner.enable_adapters()
    else:
        raise ValueError(f"{type(inner).__name__} has no PEFT adapter to disable; pass a reference model")


def has_adapter(model: nn.Module) -> bool:
    """Whether :func:`adapter_disabled` can turn ``model`` into its reference model."""
    inner = _outer_peft_or_model(model)
    return isinstance(inner, PeftModel) or bool(getattr(inner, "_hf_peft_config_loaded", False))
