"""Build the policy from a `ChipConfig`: load, freeze the vision tower, wrap LoRA.

Any checkpoint `AutoModelForImageTextToText` + `AutoProcessor` load works. LoRA goes through
`peft`; with LoRA the live reference is the same network with its adapter disabled
(`chip.training.reference.LiveReference`), so no second copy of the weights is held.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForImageTextToText, set_seed

from chip.errors import ConfigError
from chip.training.config import ChipConfig

# Parameter-name fragments of vision encoders across families (LLaVA/NeXT, Qwen-VL, Idefics3,
# Gemma3, PaliGemma, ...). The projector is deliberately not listed: the recipe trains it.
VISION_TOWER_PATTERN = re.compile(
    r"(^|\.)(vision_tower|vision_model|visual(?!_)|vision_encoder|image_encoder)\."
)
# The projector's merger inside Qwen's `visual` module is trained with the LLM in the authors' recipe.
PROJECTOR_INSIDE_VISION = re.compile(r"(^|\.)visual\.merger\.")

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(config: ChipConfig) -> torch.dtype:
    if config.model_dtype == "auto":
        return torch.bfloat16 if config.bf16 else torch.float16 if config.fp16 else torch.float32
    return DTYPES[config.model_dtype]


def is_vision_parameter(name: str) -> bool:
    """Whether a parameter belongs to the vision encoder (projectors excluded)."""
    return bool(VISION_TOWER_PATTERN.search(name)) and not PROJECTOR_INSIDE_VISION.search(name)


def freeze_vision_tower(model: nn.Module) -> int:
    """Stop gradients into the vision encoder; returns how many parameters were frozen."""
    frozen = 0
    for name, param in model.named_parameters():
        if is_vision_parameter(name):
            param.requires_grad_(False)
            frozen += param.numel()
    return frozen


def language_linear_modules(model: nn.Module) -> list[str]:
    """Full names of every `nn.Linear` of the language model (LoRA's default targets)."""
    names = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and not is_vision_parameter(name + ".") and "lm_head" not in name:
            if "multi_modal_projector" in name or "visual.merger" in name or "connector" in name:
                continue
            names.append(name)
    return names


def load_model(config: ChipConfig, path: str | None = None) -> nn.Module:
    """The checkpoint at ``path`` (default ``model_name_or_path``) in the run's dtype, as loaded."""
    path = path or config.model_name_or_path
    if not path:
        raise ConfigError("model_name_or_path is required")
    if Path(path).expanduser().exists():  # absolute, so a saved adapter's base path works from anywhere
        path = str(Path(path).expanduser().resolve())
    return AutoModelForImageTextToText.from_pretrained(
        path, dtype=resolve_dtype(config), trust_remote_code=config.trust_remote_code
    )


def prepare_policy(model: nn.Module, config: ChipConfig) -> nn.Module:
    """The trainable policy: vision tower frozen (when asked), LoRA wrapped (when asked)."""
    if config.freeze_vision_tower:
        freeze_vision_tower(model)
    if config.use_peft:
        model = wrap_lora(model, config)
    if config.gradient_checkpointing:
        # Frozen embeddings + checkpointing would otherwise cut the graph before the first LoRA layer.
        model.enable_input_require_grads()
    return model


def wrap_lora(model: nn.Module, config: ChipConfig) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    targets = config.lora_target_modules or language_linear_modules(model)
    if not targets:
        raise ConfigError("no linear layers found for LoRA; pass --lora_target_modules")
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
    )
    # The adapter's random initial weights depend on the seed alone, not on how much randomness
    # loading took (DeepSpeed ZeRO-3 loads under `zero.Init`, which draws from the generator).
    set_seed(config.seed)
    return get_peft_model(model, lora)
