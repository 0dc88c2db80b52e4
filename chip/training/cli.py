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
import random
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from chip.errors import ConfigError, DataError, Interrupted
from chip.training.early import check_argv

if TYPE_CHECKING:
    from chip.training.config import ChipConfig

logger = logging.getLogger("chip")

# split names of a folder preferred for --eval_dataset, in this order, when --eval_split is not given
HELD_OUT_SPLITS = ("test", "validation", "valid", "val", "eval", "dev")
SKIPPED_ROWS_SHOWN = 5  # skipped rows quoted in the training log before "and N more"


def load_examples(config: ChipConfig, adapter, dataset: str | None = None, split: str | None = None):
    """Validated examples of ``dataset`` and ``split`` (default ``--dataset``, ``--dataset_split``); bad
    rows (overlong prompts included) refuse the run or are skipped and counted."""
    from chip.data import apply_on_bad_row, load_preference_rows
    from chip.data.prompt_checks import check_with_processor

    if dataset is None:
        dataset, split = config.dataset, config.dataset_split
    if not dataset:
        raise ConfigError(
            "--dataset is required (a file, a folder of shards, a `datasets` folder or a hub id)"
        )
    examples, report = load_preference_rows(
        dataset,
        image_root=config.image_root,
        on_bad_row="skip",
        allow_outside_root=config.allow_outside_root,
        progress=True,
        column_map=config.column_map,
        split=split,
    )
    read = f" ({report.description})" if report.description else ""
    logger.info("%s%s: %s", dataset, read, report.mapping.describe())
    check_with_processor(examples, report, adapter, config.max_length)
    examples = apply_on_bad_row(examples, report, config.on_bad_row)
    if not report.ok:
        _log_skipped(dataset, report)
    if not examples:
        raise DataError(f"{dataset}: no usable rows left to train on")
    return examples


def eval_split(config: ChipConfig) -> str | None:
    """``--eval_split``, else the first held-out split the --eval_dataset folder has (None: as for --dataset)."""
    from chip.data.sources import local_splits

    if config.eval_split:
        return config.eval_split
    splits = local_splits(config.eval_dataset)
    split = next((name for name in HELD_OUT_SPLITS if name in splits), None)
    if split is not None:
        logger.info(
            "--eval_dataset %s: evaluating on its %s split (--eval_split to choose)",
            config.eval_dataset,
            split,
        )
    return split


def load_held_out(config: ChipConfig, adapter, examples: list) -> list:
    """The --eval_dataset examples, refused when any of them is also a training row."""
    from chip.data.overlap import shared_rows

    held_out = load_examples(config, adapter, config.eval_dataset, eval_split(config))
    overlap = shared_rows(examples, held_out)
    if overlap.rows:
        raise DataError(
            f"--eval_dataset {config.eval_dataset}: {overlap.rows} of its {len(held_out)} rows are also in "
            f"--dataset {config.dataset} ({overlap.describe()}); held-out metrics on training rows measure "
            "memory: evaluate on another split (--eval_split) or file, or use --eval_fraction"
        )
    return held_out


def load_train_eval(config: ChipConfig, adapter) -> tuple[list, list]:
    """Training examples and held-out ones (``--eval_dataset``, else an ``--eval_fraction`` of ``--dataset``)."""
    examples = load_examples(config, adapter)
    held_out: list = []
    if config.eval_dataset:
        held_out = load_held_out(config, adapter, examples)
    elif config.eval_fraction > 0:
        order = list(range(len(examples)))
        random.Random(f"eval/{config.seed}").shuffle(order)
        cut = set(order[: max(1, round(config.eval_fraction * len(examples)))])
        if len(cut) >= len(examples):
            raise ConfigError(
                f"--eval_fraction {config.eval_fraction} leaves no training example of {len(examples)}"
            )
        held_out = [ex for i, ex in enumerate(examples) if i in cut]
        examples = [ex for i, ex in enumerate(examples) if i not in cut]
    strategy = getattr(config.eval_strategy, "value", config.eval_strategy)
    if strategy != "no" and not held_out:
        raise ConfigError(f"--eval_strategy {strategy} needs --eval_dataset FILE or --eval_fraction F")
    if held_out and strategy == "no":
        config.eval_strategy, config.eval_steps = "steps", config.eval_steps or config.logging_steps
        logger.info(
            "evaluating the %d held-out examples every %s steps (set --eval_strategy to change)",
            len(held_out),
            config.eval_steps,
        )
    shared = {ex.id for ex in examples} & {ex.id for ex in held_out}
    if shared and config.reference == "precomputed":
        raise ConfigError(
            f"example ids {sorted(shared)[:3]} are both in --dataset and --eval_dataset: the reference cache keys examples by id"
        )
    return examples, held_out


def _log_skipped(dataset: str, report) -> None:
    """Counts say how much was left out and why; the first rows say where to look.

    Overlong prompts are found only here (they need the processor), so `chip data check` cannot list them.
    """
    counts = ", ".join(f"{n} {kind}" for kind, n in sorted(report.counts().items()))
    first = sorted(report.bad_rows, key=lambda bad: (bad.row, bad.field))
    shown = "; ".join(str(bad) for bad in first[:SKIPPED_ROWS_SHOWN])
    more = f"; and {len(first) - SKIPPED_ROWS_SHOWN} more" if len(first) > SKIPPED_ROWS_SHOWN else ""
    logger.warning(
        "skipped %d of %d rows of %s (%s): %s%s; run `chip data check` for the full list",
        report.num_bad_rows,
        report.total_rows,
        dataset,
        counts,
        shown,
        more,
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
    from transformers import set_seed

    from chip.training.checkpoints import StopOnInterrupt, resolve_resume_checkpoint
    from chip.training.collate import ChipCollator
    from chip.training.models import load_model, prepare_policy
    from chip.training.preflight import check_run, warn_ignored
    from chip.training.reference import REFERENCES
    from chip.training.trainer import ChipTrainer

    check_run(config)
    warn_ignored(config)
    resume = resolve_resume_checkpoint(config)
    set_seed(config.seed)
    adapter = load_adapter(config)
    examples, held_out = load_train_eval(config, adapter)
    model = load_model(config)
    reference = REFERENCES[config.reference].prepare(config, model, adapter.processor, examples + held_out)
    model = prepare_policy(model, config)
    trainer = ChipTrainer(
        model=model,
        args=config,
        train_dataset=examples,
        eval_dataset=held_out or None,
        processing_class=adapter.processor,
        reference=reference,
        data_collator=ChipCollator.from_config(config, adapter, examples, reference_cache=reference.cache),
    )
    if replace_progress and callbacks:
        from transformers import ProgressCallback

        trainer.remove_callback(ProgressCallback)
    for callback in callbacks or []:
        trainer.add_callback(callback)
    with StopOnInterrupt() as interrupt:
        trainer.add_callback(interrupt)
        result = trainer.train(resume_from_checkpoint=resume)
    if interrupt.interrupted:
        raise Interrupted(
            f"stopped at step {trainer.state.global_step}; checkpoint saved in {config.output_dir}. "
            "Resume with the same command plus --resume_from_checkpoint last"
        )
    trainer.save_model(config.output_dir)
    trainer.save_state()
    return dict(result.metrics)


def run_precompute(config: ChipConfig) -> Path:
    """Write the reference cache for `config` (the reference = the model at model_name_or_path)."""
    from chip.training.collate import ChipCollator
    from chip.training.models import load_model
    from chip.training.precompute import precompute_reference
    from chip.training.reference_cache import cache_settings

    if not config.reference_cache:
        raise ConfigError("--reference_cache DIR is required")
    from chip.training.preflight import check_run

    check_run(config, need_output_dir=False)
    adapter = load_adapter(config)
    examples, held_out = load_train_eval(config, adapter)
    examples = examples + held_out  # the cache covers evaluation too
    model = load_model(config).to(config.device).eval()
    return precompute_reference(
        model,
        ChipCollator.from_config(config, adapter, examples),
        examples,
        config.reference_cache,
        cache_settings(config, model, adapter.processor, examples),
        needs_kl=config.loss_config.needs_kl,
        batch_size=config.per_device_eval_batch_size,
    )


def _setup_logging() -> None:
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO, stream=sys.stderr
    )


def parse_config(argv: list[str], command: str = "train") -> ChipConfig:
    """`chip.training.arguments.parse_config`, imported when called (it imports transformers)."""
    from chip.training.arguments import parse_config as parse

    return parse(argv, command)


def _help(argv: list[str], command: str) -> str | None:
    """The help to print, or None; the cheap checks of `chip.training.early` run when none is asked for."""
    if not any(arg in ("-h", "--help", "--help_all", "--help-all") for arg in argv):
        check_argv(argv, command)  # a typo answered before torch is imported
        return None
    from chip.training.arguments import help_text

    return help_text(argv, command)


def main(argv: list[str]) -> int:
    """Train a vision-language model with CHiP. See `chip train --help` for every field."""
    from chip.training.threads import set_threads

    if (text := _help(argv, "train")) is not None:
        print(text, end="")
        return 0
    _setup_logging()
    config = parse_config(argv)
    logger.info(set_threads("train"))
    metrics = run_training(config)
    logger.info("done: %s -> %s", json.dumps({k: round(v, 4) for k, v in metrics.items()}), config.output_dir)
    return 0


def precompute_main(argv: list[str]) -> int:
    """Write the reference log-prob cache for `--reference precomputed` training."""
    from chip.training.threads import set_threads

    if (text := _help(argv, "precompute")) is not None:
        print(text, end="")
        return 0
    _setup_logging()
    config = parse_config(argv, command="precompute")
    logger.info(set_threads("train"))
    path = run_precompute(config)
    logger.info("reference cache written to %s", path)
    return 0
