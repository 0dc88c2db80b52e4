"""`chip train` and `chip data precompute`: CHiP preference training from a YAML file plus overrides.

    chip train --config configs/llava-1.6-7b-chip.yaml
    chip train --config recipe.yaml --segment_weight 0 --token_weight 0 --visual_weight 0  # plain DPO
    accelerate launch --config_file configs/accelerate/deepspeed_zero3.yaml -m chip train --config recipe.yaml

Every `transformers.TrainingArguments` field is accepted, plus the fields of
`chip.training.config.ChipConfig` (the loss settings among them). Values given on the command
line override the file.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import yaml
from transformers import HfArgumentParser, set_seed

from chip.errors import ConfigError, DataError
from chip.training.config import ChipConfig

logger = logging.getLogger("chip")

SKIPPED_ROWS_SHOWN = 5  # skipped rows quoted in the training log before "and N more"


def parse_config(argv: list[str]) -> ChipConfig:
    """`--config FILE.yaml` supplies defaults; every other `--field value` overrides them."""
    file_args: list[str] = []
    rest = list(argv)
    if "--config" in rest:
        at = rest.index("--config")
        if at + 1 >= len(rest):
            raise ConfigError("--config needs a YAML file")
        path = Path(rest[at + 1])
        del rest[at : at + 2]
        file_args = _yaml_to_args(path)
    parser = _Parser(ChipConfig)
    if any(a in ("-h", "--help") for a in rest):
        parser.print_help()
        raise SystemExit(0)
    try:
        config, unknown = parser.parse_args_into_dataclasses(
            args=file_args + rest, return_remaining_strings=True
        )
    except ValueError as err:  # TrainingArguments' own consistency checks
        raise ConfigError(str(err).strip().splitlines()[0]) from None
    if unknown:
        raise ConfigError(f"unknown arguments {' '.join(unknown)} (see `chip train --help`)")
    return config


class _Parser(HfArgumentParser):
    """argparse's mistakes (a bad choice, a missing value) as one `ConfigError` line, not a usage dump."""

    def error(self, message: str):
        raise ConfigError(f"{message} (see `chip train --help`)")


def _yaml_to_args(path: Path) -> list[str]:
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of field: value")
    known = {f for f in ChipConfig.__dataclass_fields__}
    args: list[str] = []
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"{path}: unknown field {key!r}")
        if value is None:
            continue
        if isinstance(value, list):
            args += [f"--{key}", *map(str, value)]
        elif isinstance(value, dict):
            args += [f"--{key}", json.dumps(value)]
        else:
            args += [f"--{key}", str(value).lower() if isinstance(value, bool) else str(value)]
    return args


def load_examples(config: ChipConfig, adapter):
    """Validated examples; bad rows (overlong prompts included) refuse the run or are skipped and counted."""
    from chip.data import apply_on_bad_row, load_preference_rows
    from chip.data.prompt_checks import check_with_processor

    if not config.dataset:
        raise ConfigError("dataset is required (a .jsonl, .parquet or `datasets` folder)")
    examples, report = load_preference_rows(
        config.dataset, image_root=config.image_root, on_bad_row="skip",
        allow_outside_root=config.allow_outside_root, progress=True,
    )  # fmt: skip
    check_with_processor(examples, report, adapter, config.max_length)
    examples = apply_on_bad_row(examples, report, config.on_bad_row)
    if not report.ok:
        _log_skipped(config, report)
    if not examples:
        raise DataError(f"{config.dataset}: no usable rows left to train on")
    return examples


def _log_skipped(config: ChipConfig, report) -> None:
    """Counts say how much was left out and why; the first rows say where to look.

    Overlong prompts are found only here (they need the processor), so `chip data check` cannot list them.
    """
    counts = ", ".join(f"{n} {kind}" for kind, n in sorted(report.counts().items()))
    first = sorted(report.bad_rows, key=lambda bad: (bad.row, bad.field))
    shown = "; ".join(str(bad) for bad in first[:SKIPPED_ROWS_SHOWN])
    more = f"; and {len(first) - SKIPPED_ROWS_SHOWN} more" if len(first) > SKIPPED_ROWS_SHOWN else ""
    logger.warning("skipped %d of %d rows of %s (%s): %s%s; run `chip data check` for the full list",
                   report.num_bad_rows, report.total_rows, config.dataset, counts, shown, more)  # fmt: skip


def build_collator(config: ChipConfig, adapter, examples, reference_cache=None):
    from chip.training.collate import ChipCollator

    return ChipCollator(
        adapter=adapter,
        corruption=config.corruption,
        noise_step=config.noise_step,
        seed=config.seed,
        max_length=config.max_length,
        score_corrupt=config.loss_config.needs_corrupt,
        segment_min_match=config.segment_min_match,
        mark_insertions=config.mark_insertions,
        random_pool=examples,
        reference_cache=reference_cache,
    )


def load_adapter(config: ChipConfig):
    """The checkpoint's `VLMAdapter` (processor and config, no weights): loaded once per run."""
    from chip.modeling import VLMAdapter

    if not config.model_name_or_path:
        raise ConfigError("model_name_or_path is required")
    return VLMAdapter.from_pretrained(config.model_name_or_path, trust_remote_code=config.trust_remote_code)


def run_training(config: ChipConfig, callbacks: list | None = None, replace_progress: bool = False) -> dict:
    """Load data and model, train, save; returns the final metrics. The library entry point of `chip train`.

    ``callbacks`` are added to the Trainer's; with ``replace_progress`` the first of them takes the
    place of the stock progress bar (e.g. one that does not print every logged dict).
    """
    from chip.training.checkpoints import resolve_resume_checkpoint
    from chip.training.models import load_model, prepare_policy
    from chip.training.reference import REFERENCES
    from chip.training.trainer import ChipTrainer

    set_seed(config.seed)
    adapter = load_adapter(config)
    examples = load_examples(config, adapter)
    model = load_model(config)
    reference = REFERENCES[config.reference].prepare(config, model, adapter.processor, examples)
    model = prepare_policy(model, config)
    trainer = ChipTrainer(
        model=model, args=config, train_dataset=examples, processing_class=adapter.processor, reference=reference,
        data_collator=build_collator(config, adapter, examples, reference_cache=reference.cache),
    )  # fmt: skip
    if replace_progress and callbacks:
        from transformers import ProgressCallback

        trainer.remove_callback(ProgressCallback)
    for callback in callbacks or []:
        trainer.add_callback(callback)
    result = trainer.train(resume_from_checkpoint=resolve_resume_checkpoint(config))
    trainer.save_model(config.output_dir)
    trainer.save_state()
    return dict(result.metrics)


def run_precompute(config: ChipConfig) -> Path:
    """Write the reference cache for `config` (the reference = the model at model_name_or_path)."""
    from chip.training.models import load_model
    from chip.training.reference_cache import cache_settings, precompute_reference

    if not config.reference_cache:
        raise ConfigError("--reference_cache DIR is required")
    adapter = load_adapter(config)
    examples = load_examples(config, adapter)
    model = load_model(config).to(config.device).eval()
    return precompute_reference(
        model, build_collator(config, adapter, examples), examples, config.reference_cache,
        cache_settings(config, model, adapter.processor, examples),
        needs_kl=config.loss_config.needs_kl, batch_size=config.per_device_eval_batch_size,
    )  # fmt: skip


def _setup_logging() -> None:
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO, stream=sys.stderr
    )


def main(argv: list[str]) -> int:
    """Train a vision-language model with CHiP. See `chip train --help` for every field."""
    _setup_logging()
    config = parse_config(argv)
    metrics = run_training(config)
    logger.info("done: %s -> %s", json.dumps({k: round(v, 4) for k, v in metrics.items()}), config.output_dir)
    return 0


def precompute_main(argv: list[str]) -> int:
    """Write the reference log-prob cache for `--reference precomputed` training."""
    _setup_logging()
    config = parse_config(argv)
    path = run_precompute(config)
    logger.info("reference cache written to %s", path)
    return 0
