"""Build the policy from a `ChipConfig`: load, freeze the vision tower, wrap LoRA.

Any checkpoint `AutoModelForImageTextToText` + `AutoProcessor` load works. LoRA goes through
`peft`; with LoRA the live reference is the same network with its adapter disabled
(`chip.training.reference.LiveReference`), so no second copy of the weights is held.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoModelForImageTextToText, set_seed

from chip.errors import ConfigError
from chip.modeling.quirks import is_projector_parameter, is_vision_parameter, names_pattern, quirks_for
from chip.training.config import ChipConfig

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(config: ChipConfig) -> torch.dtype:
    if config.model_dtype == "auto":
        return torch.bfloat16 if config.bf16 else torch.float16 if config.fp16 else torch.float32
    return DTYPES[config.model_dtype]


def freeze_vision_tower(model: nn.Module) -> int:
    """Stop gradients into the vision encoder; returns how many parameters were frozen."""
    quirks = quirks_for(model.config)
    frozen = 0
    for name, param in model.named_parameters():
        if is_vision_parameter(name, quirks):
            param.requires_grad_(False)
            frozen += param.numel()
    return frozen


def language_linear_modules(model: nn.Module) -> list[str]:
    """Full names of every `nn.Linear` of the language model (LoRA's default targets).

    Vision encoder, projector and LM head are left out; their names come from the quirks table.
    """
    quirks = quirks_for(model.config)
    head = model.get_output_embeddings()
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear)
        and module is not head
        and not is_vision_parameter(name, quirks)
        and not is_projector_parameter(name, quirks)
        and not names_pattern(("lm_head",)).search(name)
    ]


def load_model(config: ChipConfig, path: str | None = None) -> nn.Module:
    """The checkpoint at ``path`` (default ``model_name_or_path``) in the run's dtype, as loaded."""
    path = path or config.model_name_or_path
    if not path:
        raise ConfigError("model_name_or_path is required")
    if Path(path).expanduser().exists():  # absolute, so a saved adapter's base path works from anywhere
        path = str(Path(path).expanduser().resolve())
    try:
        return AutoModelForImageTextToText.from_pretrained(
            path, dtype=resolve_dtype(config), trust_remote_code=config.trust_remote_code
        )
    except ValueError as error:  # e.g. a config class with no image-text-to-text model
        message = " ".join(str(error).split())[:300]
        raise ConfigError(f"{path}: AutoModelForImageTextToText cannot load it: {message}") from error


def prepare_policy(model: nn.Module, config: ChipConfig, peft_config: Any = None) -> nn.Module:
    """The trainable policy: vision tower frozen (when asked), LoRA wrapped (when asked).

    ``peft_config`` (a `peft.LoraConfig`) replaces the adapter the ``lora_*`` fields describe.
    """
    if config.freeze_vision_tower:
        freeze_vision_tower(model)
    if config.use_peft or peft_config is not None:
        model = wrap_lora(model, config, peft_config)
    if config.gradient_checkpointing:
        # Frozen embeddings + checkpointing would otherwise cut the graph before the first LoRA layer.
        model.enable_input_require_grads()
    return model


def wrap_lora(model: nn.Module, config: ChipConfig, peft_config: Any = None) -> nn.Module:
    """``model`` with a LoRA adapter: ``peft_config`` when given (its targets defaulting to the
    language model's linear layers, as the ``lora_*`` fields' do), else the ``lora_*`` fields."""
    from peft import get_peft_model

    if peft_config is None:
        lora = lora_config(model, config)
    elif peft_config.target_modules is None:
        lora = replace(peft_config, target_modules=language_linear_modules(model))
    else:
        lora = peft_config
    # The adapter's random initial weights depend on the seed alone, not on how much randomness
    # loading took (DeepSpeed ZeRO-3 loads under `zero.Init`, which draws from the generator).
    set_seed(config.seed)
    return get_peft_model(model, lora)


def lora_config(model: nn.Module, config: ChipConfig):
    """The `peft.LoraConfig` of the ``lora_*`` fields for ``model``."""
    from peft import LoraConfig

    targets = config.lora_target_modules or language_linear_modules(model)
    if not targets:
        raise ConfigError("no linear layers found for LoRA; pass --lora_target_modules")
    dropout = config.lora_dropout
    if dropout and _has_fused_experts(model):
        # PEFT moves gate/up/down_proj targets onto fused MoE expert weights (GLM-4.5V, ...), whose
        # LoRA wrapper takes no dropout; it would refuse the whole model.
        logger.warning("fused MoE expert weights: LoRA dropout %s -> 0 (PEFT supports none there)", dropout)
        dropout = 0.0
    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
    )


def _has_fused_experts(model: nn.Module) -> bool:
    """Whether the language model keeps MoE experts as 3D parameters ``(experts, out, in)``."""
    quirks = quirks_for(model.config)
    return any(
        param.dim() == 3 and not is_vision_parameter(name, quirks) for name, param in model.named_parameters()
    )
