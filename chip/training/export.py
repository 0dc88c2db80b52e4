"""`chip export`: turn a trained LoRA adapter into a standalone model that transformers loads alone.

    chip export runs/chip-lora --merge --output_dir runs/chip-merged
    chip export runs/chip-lora/checkpoint-500 --merge --output_dir merged --dtype bfloat16

The adapter folder names its base model (`adapter_config.json`); the LoRA weights are merged into
it (`peft`'s ``merge_and_unload``) and saved with the processor, so the result loads with
``AutoModelForImageTextToText.from_pretrained`` and serves like any checkpoint.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from chip.cli import OneLineParser
from chip.errors import ConfigError
from chip.training.model_card import merged_card, write_model_card
from chip.training.models import DTYPES as MODEL_DTYPES

logger = logging.getLogger("chip")

DTYPES = {"auto": "auto", **MODEL_DTYPES}


def export_merged(adapter_dir: Path, output_dir: Path, dtype: str = "auto") -> Path:
    """Merge the LoRA adapter saved in ``adapter_dir`` into its base model and save it to ``output_dir``."""
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    config_file = adapter_dir / "adapter_config.json"
    if not config_file.is_file():
        raise ConfigError(f"{adapter_dir} holds no LoRA adapter (no adapter_config.json): nothing to merge")
    base_path = json.loads(config_file.read_text()).get("base_model_name_or_path")
    if not base_path:
        raise ConfigError(f"{config_file} names no base model (base_model_name_or_path)")
    if output_dir.exists() and any(output_dir.iterdir()):
        raise ConfigError(f"--output_dir {output_dir} is not empty; pick a new folder")
    base = AutoModelForImageTextToText.from_pretrained(base_path, dtype=DTYPES[dtype])
    merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    merged.save_pretrained(output_dir)
    try:  # `chip train` saves the processor beside the adapter; a bare adapter takes the base's
        processor = AutoProcessor.from_pretrained(adapter_dir)
    except (OSError, ValueError):
        processor = AutoProcessor.from_pretrained(base_path)
    processor.save_pretrained(output_dir)
    card = adapter_dir / "README.md"
    if card.is_file():  # written by chip's final save
        write_model_card(output_dir, merged_card(card.read_text(encoding="utf-8"), adapter_dir))
    return output_dir


def main(argv: list[str]) -> int:
    """Merge a LoRA adapter trained by `chip train --use_peft` into a standalone model."""
    parser = OneLineParser(prog="chip export", description=__doc__.split("\n\n")[0])
    parser.add_argument("adapter", metavar="ADAPTER_DIR", help="output_dir (or a checkpoint) of a LoRA run")
    parser.add_argument(
        "--merge", action="store_true", help="merge the adapter into the base weights (required)"
    )
    parser.add_argument("--output_dir", required=True, help="folder for the merged model and its processor")
    parser.add_argument(
        "--dtype", choices=sorted(DTYPES), default="auto", help="weights dtype of the merged model"
    )
    args = parser.parse_args(argv)
    if not args.merge:
        raise ConfigError("chip export only merges for now: add --merge")
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    path = export_merged(Path(args.adapter), Path(args.output_dir), args.dtype)
    logger.info("merged model written to %s (loads with AutoModelForImageTextToText.from_pretrained)", path)
    return 0
