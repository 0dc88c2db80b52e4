"""The benchmark's checkpoint as transformers 4.x reads it, for a peer pinned to 4.x (LLaMA-Factory).

transformers 5 writes a few files in a form 4.x does not read: the tokenizer's class is the
generic ``TokenizersBackend`` and its extra special tokens a list, the image processor's settings
sit inside ``processor_config.json`` instead of ``preprocessor_config.json``, and rotary settings
are ``rope_parameters`` (4.x: ``rope_theta``, and Qwen2-VL's M-RoPE sections in ``rope_scaling``),
and a CLIP vision tower's weights are stored without the ``vision_model.`` level 4.x expects.
:func:`checkpoint_for` writes the same checkpoint with those files in 4.x's form; the tensors are
the same. Whether the peer then runs the same model is not assumed but checked: its summed
log-probs of every response must equal TRL's (`bench/peers/variant.py`).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any


def checkpoint_for(model_dir: str, work_dir: str) -> str:
    """``model_dir`` if the installed transformers reads it, else a copy in 4.x's form under ``work_dir``."""
    import transformers

    if int(transformers.__version__.split(".")[0]) >= 5:
        return model_dir
    return str(to_transformers4(Path(model_dir), Path(work_dir) / "model-transformers4"))


def to_transformers4(source: Path, target: Path) -> Path:
    """Write the transformers-5 checkpoint ``source`` to ``target`` in the form transformers 4.x reads."""
    target.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.suffix == ".safetensors":
            _weights_v4(item, target / item.name)
        elif item.name not in ("config.json", "tokenizer_config.json", "processor_config.json"):
            shutil.copy(item, target / item.name)
    config = json.loads((source / "config.json").read_text())
    _rope_v4(config)
    if "text_config" in config:  # 4.x's Qwen2-VL reads the text settings at the top level too
        text = config["text_config"]
        for key in ("rope_theta", "rope_scaling"):
            if key in text:
                config[key] = text[key]
    _write(target / "config.json", config)
    tokenizer = json.loads((source / "tokenizer_config.json").read_text())
    tokenizer["tokenizer_class"] = "PreTrainedTokenizerFast"
    if isinstance(tokenizer.get("extra_special_tokens"), list):
        tokenizer["extra_special_tokens"] = {}
    _write(target / "tokenizer_config.json", tokenizer)
    processor = json.loads((source / "processor_config.json").read_text())
    for key, name in (
        ("image_processor", "preprocessor_config.json"),
        ("video_processor", "video_preprocessor_config.json"),
    ):
        if key in processor:
            _write(target / name, processor.pop(key))
    _write(target / "processor_config.json", processor)
    return target


def _weights_v4(source: Path, target: Path) -> None:
    """The same tensors; a CLIP vision tower's under 4.x's names (``vision_tower.vision_model.*``)."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(source)
    if not any(
        name.startswith("vision_tower.") and not name.startswith("vision_tower.vision_model.")
        for name in tensors
    ):
        os.symlink(source, target)
        return
    renamed = {
        name.replace("vision_tower.", "vision_tower.vision_model.", 1)
        if name.startswith("vision_tower.")
        else name: value
        for name, value in tensors.items()
    }
    save_file(renamed, target, metadata={"format": "pt"})


def _rope_v4(config: dict[str, Any]) -> None:
    """``rope_parameters`` -> ``rope_theta`` (+ Qwen's M-RoPE ``rope_scaling``), in every nested config."""
    rope = config.pop("rope_parameters", None)
    if rope is not None:
        config["rope_theta"] = rope.get("rope_theta", 10000.0)
        if "mrope_section" in rope:
            config["rope_scaling"] = {
                "type": "mrope",
                "rope_type": "default",
                "mrope_section": rope["mrope_section"],
            }
    for value in config.values():
        if isinstance(value, dict):
            _rope_v4(value)


def _write(path: Path, value: dict[str, Any]) -> None:
    path.write_text(json.dumps(value, indent=2))
