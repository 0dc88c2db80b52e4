"""The model card: ``output_dir/README.md`` in the Hugging Face layout, written at the final save.

YAML metadata (base model, library, tags, datasets) then Markdown: what the model is, the data,
the method and its weights, the hyperparameters, the logged training and evaluation metrics and
the framework versions. Everything taken from the run's inputs (paths, hub ids, dataset names)
is untrusted text: the metadata is written by ``yaml.safe_dump`` and every value in the Markdown
goes through `escape`, so a folder named ``<script>`` or ``a|b`` shows those characters and
breaks neither the page nor a table.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import yaml

from chip.training.config import ChipConfig

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_MARKDOWN = re.compile(r"([\\`*_\[\]|~])")  # marks that act inside a line; < > & are HTML-escaped
_DATA_SUFFIXES = (".jsonl", ".json", ".parquet", ".arrow", ".csv")
# The method's settings shown in the card, in this order (their help texts are `chip train --help`'s).
METHOD_FIELDS = (
    "beta",
    "segment_weight",
    "token_weight",
    "visual_weight",
    "anchor_weight",
    "sft_weight",
    "combine",
    "tdpo",
    "loss_type",
    "label_smoothing",
    "length_normalize",
    "corruption",
    "noise_step",
    "reference",
)
TRAINING_FIELDS = (
    "learning_rate",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "num_train_epochs",
    "max_steps",
    "lr_scheduler_type",
    "warmup_steps",
    "optim",
    "bf16",
    "fp16",
    "seed",
    "max_length",
    "freeze_vision_tower",
)
# Logged metrics shown per step, when the run logged them; any other `eval_` metric follows.
TRAIN_COLUMNS = ("loss", "rewards/margins", "rewards/accuracies", "visual/margins")
EVAL_COLUMNS = ("eval_loss", "eval_rewards/accuracies", "eval_chair_i", "eval_chair_s", "eval_recall")
MAX_TABLE_ROWS = 20  # a long run's table keeps this many logged steps, evenly spaced, the last included


@dataclass
class RunData:
    """What the card says about the data: where it came from and how many pairs were used."""

    train_source: str
    train_rows: int
    eval_source: str | None = None
    eval_rows: int = 0


def escape(value: Any) -> str:
    """``value`` as Markdown text that renders as itself: HTML escaped, Markdown marks backslashed, one line."""
    value = getattr(
        value, "value", value
    )  # an enum setting shows its value (linear, not SchedulerType.LINEAR)
    text = " ".join(str(value).split())
    return _MARKDOWN.sub(r"\\\1", html.escape(text, quote=True))


def is_hub_id(name: str | None) -> bool:
    """Whether ``name`` reads as ``owner/name`` on the hub rather than a local path."""
    return (
        bool(name)
        and _HUB_ID.fullmatch(name) is not None
        and not name.lower().endswith(_DATA_SUFFIXES)
        and not Path(name).exists()
    )


def model_card(
    config: ChipConfig, log_history: Sequence[dict[str, Any]], data: RunData, adapter: bool
) -> str:
    """The card's text for a run with ``config`` that logged ``log_history``."""
    base = config.model_name_or_path
    metadata: dict[str, Any] = {}
    if is_hub_id(base):
        metadata["base_model"] = base
    metadata["library_name"] = "peft" if adapter else "transformers"
    metadata["pipeline_tag"] = "image-text-to-text"
    metadata["tags"] = ["chip", "dpo", "preference-optimization", "hallucination", "vision-language"]
    if is_hub_id(config.dataset):
        metadata["datasets"] = [config.dataset]
    name = escape(Path(config.output_dir).name)
    kind = "A LoRA adapter for" if adapter else "A fine-tune of"
    sections = [
        f"---\n{yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True)}---",
        f"# {name}",
        f"{kind} {escape(base)} trained with **CHiP** (Cross-modal Hierarchical Direct Preference "
        "Optimization, Fu et al., ICLR 2025) with chip, to make it hallucinate less.",
        _data_section(data),
        _method_section(config, adapter),
        _metrics_section(log_history),
        _versions_section(adapter),
    ]
    return "\n\n".join(sections) + "\n"


def _data_section(data: RunData) -> str:
    lines = ["## Training data", "", f"- training pairs: {data.train_rows} from {escape(data.train_source)}"]
    if data.eval_source is not None:
        lines.append(f"- held-out pairs: {data.eval_rows} from {escape(data.eval_source)}")
    return "\n".join(lines)


def _method_section(config: ChipConfig, adapter: bool) -> str:
    rows = [("model_name_or_path", config.model_name_or_path)]
    rows.append(("method", "CHiP" if _is_chip(config) else "DPO (every CHiP weight 0)"))
    rows += [(name, getattr(config, name)) for name in METHOD_FIELDS]
    if adapter:
        rows += [(name, getattr(config, name)) for name in ("lora_r", "lora_alpha", "lora_dropout")]
    rows += [(name, getattr(config, name)) for name in TRAINING_FIELDS]
    table = ["| setting | value |", "|---|---|"] + [f"| {escape(k)} | {escape(v)} |" for k, v in rows]
    return "\n".join(
        [
            "## Training procedure",
            "",
            "Every setting is a `chip train` option; `chip train --help` explains each.",
            "",
            *table,
        ]
    )


def _is_chip(config: ChipConfig) -> bool:
    return any(getattr(config, name) for name in ("segment_weight", "token_weight", "visual_weight"))


def _metrics_section(log_history: Sequence[dict[str, Any]]) -> str:
    train = [entry for entry in log_history if "loss" in entry]
    evaluated = [entry for entry in log_history if "eval_loss" in entry]
    summary = next((entry for entry in reversed(log_history) if "train_runtime" in entry), None)
    parts = ["## Training results"]
    if summary is not None:
        parts.append(
            f"Trained {summary.get('step', '?')} steps in {summary['train_runtime']:.0f} s; "
            f"mean training loss {summary.get('train_loss', float('nan')):.4f}."
        )
    parts.append(_table(train, TRAIN_COLUMNS) if train else "No training step was logged.")
    if evaluated:
        extra = sorted(
            {k for e in evaluated for k in e if k.startswith("eval_chair") or k.startswith("eval_pope")}
        )
        columns = tuple(dict.fromkeys([*EVAL_COLUMNS, *extra]))
        parts += [
            "## Evaluation results",
            "Held-out pairs, every evaluation step:",
            _table(evaluated, columns),
        ]
    return "\n\n".join(parts)


def _table(entries: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    shown = [name for name in columns if any(name in entry for entry in entries)]
    if len(entries) > MAX_TABLE_ROWS:
        step = (len(entries) - 1) / (MAX_TABLE_ROWS - 1)
        entries = [entries[round(i * step)] for i in range(MAX_TABLE_ROWS)]
    head = ["| step | " + " | ".join(escape(name) for name in shown) + " |", "|---" * (len(shown) + 1) + "|"]
    body = [
        f"| {entry.get('step', '')} | " + " | ".join(_number(entry.get(name)) for name in shown) + " |"
        for entry in entries
    ]
    return "\n".join(head + body)


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) else ""


def _versions_section(adapter: bool) -> str:
    packages = ["chip", "transformers", "torch", *(["peft"] if adapter else [])]
    lines = ["## Framework versions", ""]
    for package in packages:
        try:
            lines.append(f"- {package} {version(package)}")
        except PackageNotFoundError:
            continue
    return "\n".join(lines)


def write_model_card(folder: str | Path, text: str) -> Path:
    """Write the card as ``folder/README.md``."""
    card = Path(folder) / "README.md"
    card.write_text(text, encoding="utf-8")
    return card


def merged_card(text: str, adapter_dir: str | Path) -> str:
    """An adapter's card for the model `chip export --merge` made of it: a full model, and saying so."""
    text = text.replace("\nlibrary_name: peft\n", "\nlibrary_name: transformers\n", 1)
    text = text.replace("A LoRA adapter for", "A fine-tune (a LoRA adapter merged into) of", 1)
    return (
        text + f"\n## Export\n\nMerged by `chip export --merge` from the adapter in {escape(adapter_dir)}.\n"
    )
