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
from typing import TYPE_CHECKING

from chip.errors import ConfigError, Interrupted
from chip.training.early import check_argv

if TYPE_CHECKING:
    from chip.training.config import ChipConfig

logger = logging.getLogger("chip")


def run_training(config: ChipConfig, callbacks: list | None = None, replace_progress: bool = False) -> dict:
    """Load data and model, train, save; returns the final metrics. The library entry point of `chip train`.

    ``callbacks`` are added to the Trainer's; with ``replace_progress`` the first of them takes the
    place of the stock progress bar (e.g. one that does not print every logged dict). A second run
    into the same ``output_dir`` while this one lives is refused (`chip.runlock`).
    """
    from chip.runlock import run_lock
    from chip.training.preflight import check_run

    check_run(config)  # before the lock, which makes the folder: a bad run leaves nothing behind
    with run_lock(config.output_dir, "train"):
        return _train(config, callbacks, replace_progress)


def _train(config: ChipConfig, callbacks: list | None, replace_progress: bool) -> dict:
    from chip.training.assembly import assemble_run
    from chip.training.checkpoints import (
        StopOnInterrupt,
        checkpoints_or_one_line,
        resolve_resume_checkpoint,
        save_final,
    )
    from chip.training.trainer import ChipTrainer

    resume = resolve_resume_checkpoint(config)
    parts = assemble_run(config)
    trainer = ChipTrainer(
        model=parts.model,
        args=config,
        train_dataset=parts.train,
        eval_dataset=parts.held_out or None,
        processing_class=parts.adapter.processor,
        reference=parts.reference,
        data_collator=parts.collator,
        hallucination=parts.hallucination,
    )
    if replace_progress and callbacks:
        from transformers import ProgressCallback

        trainer.remove_callback(ProgressCallback)
    for callback in callbacks or []:
        trainer.add_callback(callback)
    with StopOnInterrupt() as interrupt, checkpoints_or_one_line(config.output_dir):
        trainer.add_callback(interrupt)
        result = trainer.train(resume_from_checkpoint=resume)
    if interrupt.interrupted:
        raise Interrupted(
            f"stopped at step {trainer.state.global_step}; checkpoint saved in {config.output_dir}. "
            "Resume with the same command plus --resume_from_checkpoint last"
        )
    save_final(trainer, config.output_dir)
    return dict(result.metrics)


def run_precompute(config: ChipConfig, repair: bool = False) -> Path:
    """Write the reference cache for `config` (the reference = the model at model_name_or_path); one
    run per cache folder (`chip.runlock`). With ``repair``, a finished cache is checked first and
    only its damaged shards are recomputed."""
    if not config.reference_cache:
        raise ConfigError("--reference_cache DIR is required")
    from chip.runlock import run_lock
    from chip.training.preflight import check_run

    check_run(config, need_output_dir=False)
    with run_lock(config.reference_cache, "data precompute"):
        if repair:
            from chip.training.precompute import repair_cache

            damaged = repair_cache(config.reference_cache)
            logger.info(
                "%s: %s",
                config.reference_cache,
                "; ".join(damaged) or "every shard intact, nothing to repair",
            )
        return _precompute(config)


def _precompute(config: ChipConfig) -> Path:
    from chip.training.assembly import load_adapter, load_train_eval
    from chip.training.collate import ChipCollator
    from chip.training.models import load_model
    from chip.training.precompute import precompute_reference
    from chip.training.reference_cache import cache_settings

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

    repair = "--repair" in argv  # a command option, not a setting of the cache: kept out of ChipConfig
    argv = [arg for arg in argv if arg != "--repair"]
    if (text := _help(argv, "precompute")) is not None:
        print(text, end="")
        return 0
    _setup_logging()
    config = parse_config(argv, command="precompute")
    logger.info(set_threads("train"))
    path = run_precompute(config, repair=repair)
    logger.info("reference cache written to %s", path)
    return 0
