"""Checks of a model path that need only its config: run before any weights load."""

from __future__ import annotations

from pathlib import Path

from chip.errors import ConfigError


def check_model_path(path: str | None, trust_remote_code: bool = False) -> None:
    """The model path names a checkpoint `AutoModelForImageTextToText` can load, or one line says why not."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    if not path:
        raise ConfigError("model_name_or_path is required (a folder saved with save_pretrained, or a hub id)")
    local = Path(path).expanduser()
    if local.is_dir() and not (local / "config.json").is_file():
        raise ConfigError(
            f"{path} is a folder but not a model (no config.json): pass a folder saved with save_pretrained"
        )
    if not local.exists() and (path.startswith((".", "/", "~")) or path.count("/") != 1):
        raise ConfigError(
            f"model {path!r} not found: no such folder, and not a hub id of the form owner/name"
        )
    try:
        model_config = AutoConfig.from_pretrained(
            str(local) if local.exists() else path, trust_remote_code=trust_remote_code
        )
    except OSError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"cannot load model config {path!r} ({first}); if the hub is unreachable, download it on a connected "
            f"machine (`huggingface-cli download {path} --local-dir DIR`) and pass DIR"
        ) from None
    except ValueError as err:  # unknown model_type, or custom code without --trust_remote_code
        first = str(err).strip().splitlines()[0]
        raise ConfigError(f"cannot load model config {path!r}: {first[:300]}") from None
    model_type = getattr(model_config, "model_type", None)
    custom = bool(getattr(model_config, "auto_map", None)) and trust_remote_code
    if model_type not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES and not custom:
        raise ConfigError(
            f"{path} is a {model_type!r} model, not a vision-language model: chip trains checkpoints that "
            "transformers' AutoModelForImageTextToText loads (LLaVA, Qwen2-VL, Gemma 3, Idefics3, ...; docs/models.md)"
        )
