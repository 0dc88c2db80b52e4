"""What can be known to fail is checked before any data or weights load, and said in one line.

A 7B run that dies after ten minutes of loading because ``tensorboard`` is not installed, or
because the model path names a text-only model, costs the user a GPU slot for nothing; so
`check_run` looks at the logging integrations, the model path and the output folder first, and
`warn_ignored` names settings that this run will not use.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import fields
from pathlib import Path

from chip.errors import ConfigError
from chip.modeling.checks import check_model_path
from chip.training.config import ChipConfig
from chip.training.early import check_not_finished

logger = logging.getLogger("chip")

# --report_to value -> (an importable module that provides it, the pip command that installs it)
INTEGRATIONS = {
    "tensorboard": (("tensorboard", "tensorboardX"), "pip install 'chip[tensorboard]'"),
    "wandb": (("wandb",), "pip install 'chip[wandb]'"),
    "mlflow": (("mlflow",), "pip install mlflow"),
    "comet_ml": (("comet_ml",), "pip install comet_ml"),
    "clearml": (("clearml",), "pip install clearml"),
    "trackio": (("trackio",), "pip install trackio"),
    "swanlab": (("swanlab",), "pip install swanlab"),
}
LORA_FIELDS = ("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules")


def check_run(config: ChipConfig, need_output_dir: bool = True) -> None:
    """Raise `ConfigError` (one line) for a logging integration, model path or output folder that cannot work."""
    check_integrations(config.report_to or [])
    check_model_path(config.model_name_or_path, config.trust_remote_code)
    if need_output_dir:
        check_output_dir(Path(config.output_dir))
        if not (config.overwrite_output_dir or config.resume_from_checkpoint):
            check_not_finished(Path(config.output_dir))


def check_integrations(report_to: list[str]) -> None:
    for name in report_to:
        if name in ("none", "all"):
            continue
        modules, install = INTEGRATIONS.get(name, ((name,), f"pip install {name}"))
        if not any(importlib.util.find_spec(module) for module in modules):
            raise ConfigError(
                f"--report_to {name} needs the {modules[0]} package: {install} (or pass --report_to none)"
            )


def check_output_dir(output_dir: Path) -> None:
    if output_dir.exists() and not output_dir.is_dir():
        raise ConfigError(f"--output_dir {output_dir} exists and is not a folder")
    parent = (
        output_dir if output_dir.exists() else next((p for p in output_dir.parents if p.exists()), Path("."))
    )
    if not _writable(parent):
        raise ConfigError(f"--output_dir {output_dir}: cannot write to {parent}")


def _writable(folder: Path) -> bool:
    return os.access(folder, os.W_OK | os.X_OK)


def warn_ignored(config: ChipConfig) -> None:
    """One warning line per setting this run will not use (e.g. --lora_r without --use_peft)."""
    defaults = {f.name: f.default for f in fields(ChipConfig) if f.name in LORA_FIELDS}
    changed = [name for name in LORA_FIELDS if getattr(config, name) != defaults[name]]
    if changed and not config.use_peft:
        logger.warning(
            "%s ignored: LoRA is off (add --use_peft to train an adapter)",
            ", ".join(f"--{n}" for n in changed),
        )
    if config.reference_cache and config.reference != "precomputed":
        logger.warning("--reference_cache ignored: --reference is %s, not precomputed", config.reference)
    if config.eval_split and not config.eval_dataset:
        logger.warning("--eval_split ignored: no --eval_dataset is given")
    if config.eval_fraction and config.eval_dataset:
        logger.warning("--eval_fraction ignored: --eval_dataset is given")
