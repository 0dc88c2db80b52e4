"""Parsing `chip train` / `chip data precompute` arguments: a YAML file plus ``--field value`` overrides.

`--help` lists chip's own settings first, in sections (model, LoRA, data, CHiP loss, corrupted
image, reference, speed, robustness); `--help_all` adds every `transformers.TrainingArguments`
field. Any argparse mistake (unknown choice, missing value) is one `ConfigError` line.
"""

from __future__ import annotations

import argparse
import copy
from dataclasses import Field
from types import MappingProxyType

from transformers import HfArgumentParser

from chip.compat import DataclassFieldHook, OnceHelpFormatter, groups_hidden, order_groups, own_options_group
from chip.errors import ConfigError, did_you_mean
from chip.losses import ChipLossConfig
from chip.training.config import LOSS_GROUP, ChipConfig
from chip.training.early import split_config
from chip.training.methods import METHOD_NAMES, preset_args

SECTIONS = (
    "model",
    "LoRA",
    "data",
    LOSS_GROUP,
    "corrupted image",
    "reference",
    "speed",
    "hallucination",
    "robustness",
)
TRAINING_ARGUMENTS_TITLE = "transformers.TrainingArguments (every field; see the transformers docs)"
USAGE = {
    "train": "chip train --config FILE.yaml [--FIELD VALUE ...]",
    "precompute": "chip data precompute --config FILE.yaml --reference_cache DIR [--repair] [--FIELD VALUE ...]",
}
DESCRIPTION = {
    "train": "Train a vision-language model with CHiP (DPO and every ablation are weight settings). "
    "Values on the command line override the --config file; every field is accepted in either.",
    "precompute": "Write the reference log-prob cache for `chip train --reference precomputed`: the model at "
    "--model_name_or_path scores every example of --dataset once. Takes the same settings as "
    "`chip train` (the cache is refused when a setting it depends on changes). A rerun keeps the shards "
    "already done; --repair checks a finished cache against its checksums and recomputes only damaged shards.",
}


class ChipArgumentParser(DataclassFieldHook, HfArgumentParser):
    """`HfArgumentParser` over `ChipConfig` with chip's settings in sections and one-line errors."""

    def __init__(self, command: str = "train"):
        self.command = command
        super().__init__(
            ChipConfig,
            prog=USAGE[command].split(" --")[0],
            usage=USAGE[command],
            description=DESCRIPTION[command],
            formatter_class=OnceHelpFormatter,
        )
        run = self.add_argument_group("run")
        run.add_argument(
            "--config",
            metavar="FILE.yaml",
            default=argparse.SUPPRESS,
            help="YAML file of field: value; command-line values override it.",
        )
        sections = {"run": run, **self.__dict__.get("chip_sections", {})}
        order_groups(self, [sections[title] for title in ("run", *SECTIONS) if title in sections])
        own_options_group(self).title = TRAINING_ARGUMENTS_TITLE

    def add_dataclass_field(self, parser, field: Field) -> None:
        """Add a field's option to its help section (its ``group`` metadata; the loss fields to theirs).

        Runs inside `HfArgumentParser.__init__`, before this class's own attributes are set.
        """
        section = field.metadata.get("group") or (
            LOSS_GROUP if field.name in ChipLossConfig.field_names() else None
        )
        if section is not None:
            sections = parser.__dict__.setdefault("chip_sections", {})
            if section not in sections:
                sections[section] = parser.add_argument_group(section)
            parser = sections[section]
        # argparse takes the remaining metadata as add_argument keywords; a range joins the help text
        metadata = {k: v for k, v in field.metadata.items() if k not in ("group", "bounds")}
        if "bounds" in field.metadata:
            metadata["help"] = f"{metadata.get('help', '')} Range: {field.metadata['bounds']}."
        field = copy.copy(field)
        field.metadata = MappingProxyType(metadata)
        super().add_dataclass_field(parser, field)

    def error(self, message: str):
        raise ConfigError(f"{message} (see `{USAGE[self.command].split(' --')[0]} --help`)")

    def format_help(self, everything: bool = False) -> str:
        """chip's sections; with ``everything`` also each `TrainingArguments` option."""
        if everything:
            return super().format_help()
        sections = self.__dict__.get("chip_sections", {})
        hidden = [sections[title] for title in LONG_HELP_ONLY if title in sections]
        with groups_hidden(self, [own_options_group(self), *hidden]):
            text = super().format_help()
        common = ", ".join(f"--{name}" for name in COMMON_TRAINING_ARGUMENTS)
        return (
            f"{text}\nAlso every transformers.TrainingArguments field, e.g. {common}; and hallucination "
            "measured at each evaluation (--eval_hallucination chair|pope, --min_eval_recall).\n"
            f"`{self.prog} --help_all` lists them all.\n"
        )


# chip's sections listed by --help_all only (the short help stays one screen); the epilog names them
LONG_HELP_ONLY = ("hallucination",)

# TrainingArguments fields a CHiP run typically sets, named at the end of the short help
COMMON_TRAINING_ARGUMENTS = (
    "output_dir",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "learning_rate",
    "num_train_epochs",
    "max_steps",
    "bf16",
    "gradient_checkpointing",
    "save_steps",
    "eval_strategy",
    "eval_steps",
    "logging_steps",
    "report_to",
    "resume_from_checkpoint",
    "seed",
)


def help_text(argv: list[str], command: str = "train") -> str | None:
    """The help to print when ``argv`` asks for it (``-h``, ``--help``, ``--help_all``), else None."""
    if not any(arg in ("-h", "--help", "--help_all", "--help-all") for arg in argv):
        return None
    everything = any(arg in ("--help_all", "--help-all") for arg in argv)
    return ChipArgumentParser(command).format_help(everything=everything)


def parse_config(argv: list[str], command: str = "train") -> ChipConfig:
    """`--config FILE.yaml` supplies defaults; every other `--field value` overrides them."""
    file_args, rest = split_config(argv)
    parser = ChipArgumentParser(command)
    given = _names(file_args + rest)
    try:
        config, unknown = parser.parse_args_into_dataclasses(
            args=values_attached(_with_method(file_args, rest)), return_remaining_strings=True
        )
    except ValueError as err:  # TrainingArguments' own consistency checks
        raise ConfigError(str(err).strip().splitlines()[0]) from None
    if unknown:
        name = unknown[0].lstrip("-").split("=")[0].replace("-", "_")
        hint = did_you_mean(name, ChipConfig.__dataclass_fields__).replace("mean ", "mean --")
        raise ConfigError(f"unknown arguments {' '.join(unknown)}{hint} (see `{parser.prog} --help`)")
    if command == "train" and "output_dir" not in given:
        raise ConfigError("--output_dir is required: the folder for the trained model, checkpoints and logs")
    return config


def _names(args: list[str]) -> set[str]:
    return {arg[2:].split("=")[0].replace("-", "_") for arg in args if arg.startswith("--")}


def _with_method(file_args: list[str], rest: list[str]) -> list[str]:
    """The arguments with a ``--method`` preset's settings placed by precedence.

    A preset named on the command line overrides the YAML file (and yields to the other flags); a
    preset named in the file yields to everything set explicitly in the file or on the command line.
    """
    if (method := _method_named(rest)) is not None:
        return file_args + preset_args(method, _names(rest)) + rest
    if (method := _method_named(file_args)) is not None:
        return preset_args(method, _names(file_args + rest)) + file_args + rest
    return file_args + rest


def _method_named(args: list[str]) -> str | None:
    """The value of the last ``--method`` in ``args``, checked; None when there is none."""
    method = None
    for at, arg in enumerate(args):
        if arg.startswith("--method="):
            method = arg.split("=", 1)[1]
        elif arg == "--method" and at + 1 < len(args):
            method = args[at + 1]
    if method is not None and method not in METHOD_NAMES:
        raise ConfigError(f"--method must be one of {', '.join(METHOD_NAMES)}; got {method!r}")
    return method


def values_attached(args: list[str]) -> list[str]:
    """``--field -1e-4`` -> ``--field=-1e-4``: argparse takes a value starting with "-" for a flag
    unless it is attached, and learning rates are written in that notation."""
    joined: list[str] = []
    for arg in args:
        if joined and joined[-1].startswith("--") and "=" not in joined[-1] and _negative_number(arg):
            joined[-1] += f"={arg}"
        else:
            joined.append(arg)
    return joined


def _negative_number(text: str) -> bool:
    try:
        return text.startswith("-") and float(text) < 0
    except ValueError:
        return False
