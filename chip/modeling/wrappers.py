"""Seeing through wrappers: the transformers model inside DDP / DeepSpeed / FSDP / PEFT, and the PEFT
policy run as its own reference (adapter disabled)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from peft import PeftModel
from torch import nn
from transformers import PreTrainedModel


def core_model(model: nn.Module) -> PreTrainedModel:
    """The transformers model inside DDP / DeepSpeed / PEFT wrappers (LoRA layers stay injected)."""
    model = outer_peft_or_model(model)
    return model.get_base_model() if isinstance(model, PeftModel) else model


def is_fsdp2(model: nn.Module) -> bool:
    """Whether ``model`` is sharded in place by FSDP2 (`fully_shard`); False where torch has no FSDP2."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:
        return False
    return isinstance(model, FSDPModule)


def outer_peft_or_model(model: nn.Module) -> nn.Module:
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
    inner = outer_peft_or_model(model)
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
    inner = outer_peft_or_model(model)
    return isinstance(inner, PeftModel) or bool(getattr(inner, "_hf_peft_config_loaded", False))
