"""How a run is put together: the adapter, the examples, the policy, the reference and the collator.

One function, `assemble_run`, builds them for both ways in: `chip train` hands it a `ChipConfig`
alone (every path read from there); `ChipTrainer(model=..., train_dataset=..., peft_config=...)`
hands it the objects a TRL user already holds (a loaded model or a path, a `datasets.Dataset`, a
list of dicts or a path, a processor, a `peft.LoraConfig`, a reference model). Both get the same
checks, the same one-line errors and, with the same settings, the same run.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn
from transformers import set_seed

from chip.data import PreferenceExample
from chip.errors import ConfigError, DataError
from chip.modeling import VLMAdapter
from chip.training.collate import ChipCollator
from chip.training.config import ChipConfig
from chip.training.hallucination import HallucinationProbe
from chip.training.models import load_model, prepare_policy
from chip.training.preflight import check_integrations, check_output_dir, check_run, warn_ignored
from chip.training.reference import REFERENCES, LiveReference, Reference

logger = logging.getLogger("chip")

# split names of a folder preferred for --eval_dataset, in this order, when --eval_split is not given
HELD_OUT_SPLITS = ("test", "validation", "valid", "val", "eval", "dev")
SKIPPED_ROWS_SHOWN = 5  # skipped rows quoted in the training log before "and N more"

# A dataset as `ChipTrainer` takes it: a path / hub id / spec, a `datasets.Dataset`, or a list of dicts.
DatasetLike = str | os.PathLike[str] | Sequence[dict[str, Any]] | Any


@dataclass
class RunParts:
    """What a `ChipTrainer` needs beyond its `ChipConfig`."""

    model: nn.Module  # the policy: vision tower frozen and LoRA wrapped as the config asks
    adapter: VLMAdapter
    train: list[PreferenceExample]
    held_out: list[PreferenceExample]
    reference: Reference
    collator: ChipCollator
    hallucination: HallucinationProbe | None = None  # with --eval_hallucination


def assemble_run(
    config: ChipConfig,
    model: nn.Module | str | os.PathLike[str] | None = None,
    train_dataset: DatasetLike | None = None,
    eval_dataset: DatasetLike | None = None,
    processor: Any = None,
    ref_model: nn.Module | None = None,
    peft_config: Any = None,
) -> RunParts:
    """Check the run, then load (or take) the processor, the data, the model and the reference.

    Objects given here take the place of the config's paths: ``model`` of ``model_name_or_path``,
    ``train_dataset`` / ``eval_dataset`` of ``dataset`` / ``eval_dataset``, ``peft_config`` of the
    ``lora_*`` fields (it turns ``use_peft`` on), ``ref_model`` of the reference the config names
    (it needs ``reference="model"``). A path given as an object is written into the config, so
    the saved run names it.
    """
    loaded = model if isinstance(model, nn.Module) else None
    _take_paths(config, model, train_dataset, eval_dataset, loaded)
    if peft_config is not None:
        config.use_peft = True
    if ref_model is not None and config.reference != "model":
        raise ConfigError(
            f"ref_model= is a live reference: it needs reference='model', not {config.reference!r}"
        )
    if loaded is None:
        check_run(config)
    else:  # the model is already loaded: nothing to find on disk
        check_integrations(config.report_to or [])
        check_output_dir(Path(config.output_dir))
    warn_ignored(config)
    record_method(config)
    set_seed(config.seed)
    adapter = load_adapter(config, processor, loaded.config if loaded is not None else None)
    examples, held_out = load_train_eval(config, adapter, train_dataset, eval_dataset)
    report_unused_rejected(config, examples + held_out)
    policy = loaded if loaded is not None else load_model(config)
    if ref_model is not None:
        reference: Reference = LiveReference(ref_model.eval().requires_grad_(False))
    else:
        reference = REFERENCES[config.reference].prepare(
            config, policy, adapter.processor, examples + held_out
        )
    policy = prepare_policy(policy, config, peft_config)
    collator = ChipCollator.from_config(config, adapter, examples, reference_cache=reference.cache)
    probe = HallucinationProbe.from_config(config, adapter, held_out)
    return RunParts(policy, adapter, examples, held_out, reference, collator, probe)


def report_unused_rejected(config: ChipConfig, examples: list) -> None:
    """Say how many listed rejected responses ``--max_rejected`` leaves out (none are dropped unsaid)."""
    limit = config.max_rejected
    unused = sum(max(0, 1 + len(ex.more_rejected) - limit) for ex in examples) if limit > 0 else 0
    if unused:
        logger.warning(
            "%d rejected responses listed after the first %d of their row are not used (--max_rejected %d); "
            "--max_rejected 0 or --method chip-multi uses them all",
            unused,
            limit,
            limit,
        )


def record_method(config: ChipConfig) -> None:
    """Log the resolved loss settings and save them as ``method.json`` in the output folder."""
    settings = json.dumps(config.method_settings, sort_keys=True)
    logger.info("method %s: %s", config.method or "(no preset)", settings)
    if config.should_save:
        Path(config.output_dir).mkdir(parents=True, exist_ok=True)
        (Path(config.output_dir) / "method.json").write_text(settings + "\n")


def _take_paths(
    config: ChipConfig,
    model: nn.Module | str | os.PathLike[str] | None,
    train_dataset: DatasetLike | None,
    eval_dataset: DatasetLike | None,
    loaded: nn.Module | None,
) -> None:
    """Write the paths given as objects into ``config``; a loaded model's own name when none is set."""
    if model is not None and loaded is None:
        config.model_name_or_path = os.fspath(model)
    elif loaded is not None and not config.model_name_or_path:
        config.model_name_or_path = getattr(loaded.config, "name_or_path", None) or None
    for name, value in (("dataset", train_dataset), ("eval_dataset", eval_dataset)):
        if isinstance(value, (str, os.PathLike)):
            setattr(config, name, os.fspath(value))


def load_adapter(config: ChipConfig, processor: Any = None, model_config: Any = None) -> VLMAdapter:
    """The run's `VLMAdapter`: the given processor and config, else those saved at ``model_name_or_path``."""
    from transformers import AutoConfig

    from chip.modeling.processors import load_processor

    if processor is not None and model_config is not None:
        return VLMAdapter(processor, model_config)
    if not config.model_name_or_path:
        raise ConfigError("model_name_or_path is required")
    path, remote = config.model_name_or_path, config.trust_remote_code
    if processor is None and model_config is None:
        return VLMAdapter.from_pretrained(path, trust_remote_code=remote)
    if processor is None:
        return VLMAdapter(load_processor(path, trust_remote_code=remote), model_config)
    return VLMAdapter(processor, AutoConfig.from_pretrained(path, trust_remote_code=remote))


def load_examples(
    config: ChipConfig, adapter: VLMAdapter, dataset: DatasetLike | None = None, split: str | None = None
):
    """Validated examples of ``dataset`` and ``split`` (default ``--dataset``, ``--dataset_split``); bad
    rows (overlong prompts included) refuse the run or are skipped and counted."""
    from chip.data import apply_on_bad_row, load_preference_rows
    from chip.data.prompt_checks import check_with_processor

    if dataset is None:
        dataset, split = config.dataset, config.dataset_split
    if dataset is None or (isinstance(dataset, str) and not dataset):
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
    logger.info("%s%s: %s", report.source, read, report.mapping.describe())
    check_with_processor(examples, report, adapter, config.max_length)
    examples = apply_on_bad_row(examples, report, config.on_bad_row)
    if not report.ok:
        _log_skipped(report.source, report)
    if not examples:
        raise DataError(f"{report.source}: no usable rows left to train on")
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


def load_held_out(
    config: ChipConfig, adapter: VLMAdapter, examples: list, eval_dataset: DatasetLike | None = None
) -> list:
    """The held-out examples (``eval_dataset``, else --eval_dataset), refused when any of them is
    also a training row."""
    from chip.data.overlap import shared_rows

    if eval_dataset is not None:
        held_out = load_examples(config, adapter, eval_dataset, config.eval_split)
    else:
        held_out = load_examples(config, adapter, config.eval_dataset, eval_split(config))
    overlap = shared_rows(examples, held_out)
    if overlap.rows:
        name = config.eval_dataset if eval_dataset is None else "eval_dataset"
        raise DataError(
            f"--eval_dataset {name}: {overlap.rows} of its {len(held_out)} rows are also in "
            f"--dataset {config.dataset} ({overlap.describe()}); held-out metrics on training rows measure "
            "memory: evaluate on another split (--eval_split) or file, or use --eval_fraction"
        )
    return held_out


def load_train_eval(
    config: ChipConfig,
    adapter: VLMAdapter,
    train_dataset: DatasetLike | None = None,
    eval_dataset: DatasetLike | None = None,
) -> tuple[list, list]:
    """Training examples and held-out ones (``eval_dataset`` / ``--eval_dataset``, else an
    ``--eval_fraction`` of the training data)."""
    examples = load_examples(config, adapter, train_dataset, config.dataset_split)
    held_out: list = []
    if eval_dataset is not None or config.eval_dataset:
        held_out = load_held_out(config, adapter, examples, eval_dataset)
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
