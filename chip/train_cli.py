"""`chip train` and `chip data precompute`: CHiP preference training from a YAML file plus overrides.

    chip train --config configs/llava-1.6-7b-chip.yaml
    chip train --config recipe.yaml --segment_weight 0 --token_weight 0 --visual_weight 0  # plain DPO
    accelerate launch --config_file configs/accelerate/deepspeed_zero3.yaml -m chip train --config recipe.yaml

Every `transformers.TrainingArguments` field is accepted, plus the fields of `chip.config.ChipConfig`.
Values given on the command line override the file.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import yaml
from transformers import HfArgumentParser, set_seed

from chip.config import ChipConfig
from chip.errors import ConfigError, DataError

logger = logging.getLogger("chip")

SKIPPED_ROWS_SHOWN = 5  # skipped rows quoted in the training log before "and N more"
RESUME_LAST = ("last", "latest", "true")  # --resume_from_checkpoint values meaning "newest complete one"


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
    parser = HfArgumentParser(ChipConfig)
    if any(a in ("-h", "--help") for a in rest):
        parser.print_help()
        raise SystemExit(0)
    try:
        config, unknown = parser.parse_args_into_dataclasses(args=file_args + rest, return_remaining_strings=True)
    except ValueError as err:  # TrainingArguments' own consistency checks
        raise ConfigError(str(err).strip().splitlines()[0]) from None
    if unknown:
        raise ConfigError(f"unknown arguments {' '.join(unknown)} (see `chip train --help`)")
    return config


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
    from chip.data import BadRow, apply_on_bad_row, check_lengths, load_preference_rows
    from chip.modeling.adapter import special_text_reason

    if not config.dataset:
        raise ConfigError("dataset is required (a .jsonl, .parquet or `datasets` folder)")
    examples, report = load_preference_rows(
        config.dataset, image_root=config.image_root, on_bad_row="skip",
        allow_outside_root=config.allow_outside_root, progress=True,
    )  # fmt: skip
    # What only the processor can judge, in one encoding pass: special-token text and prompt length.
    prompt_tokens: dict[int, int] = {}
    for example in examples:
        found = adapter.special_tokens_in(example.prompt)
        if found:
            reason = special_text_reason(found)
            report.bad_rows.append(BadRow(example.source, example.row, "prompt", "special_token_text", reason, example.line))
            continue
        prompt_tokens[example.row] = len(adapter.encode_prompt(example.load_images(), example.prompt).input_ids)
    encodable = [example for example in examples if example.row in prompt_tokens]
    report.bad_rows.extend(check_lengths(encodable, lambda ex: prompt_tokens[ex.row], config.max_length))
    examples = apply_on_bad_row(examples, report, config.on_bad_row)
    if not report.ok:
        # Counts say how much was left out and why; the first rows say where to look. Overlong
        # prompts are found only here (they need the processor), so `chip data check` cannot list them.
        counts = ", ".join(f"{n} {kind}" for kind, n in sorted(report.counts().items()))
        first = sorted(report.bad_rows, key=lambda bad: (bad.row, bad.field))
        shown = "; ".join(str(bad) for bad in first[:SKIPPED_ROWS_SHOWN])
        more = f"; and {len(first) - SKIPPED_ROWS_SHOWN} more" if len(first) > SKIPPED_ROWS_SHOWN else ""
        logger.warning("skipped %d of %d rows of %s (%s): %s%s; run `chip data check` for the full list",
                       report.num_bad_rows, report.total_rows, config.dataset, counts, shown, more)  # fmt: skip
    if not examples:
        raise DataError(f"{config.dataset}: no usable rows left to train on")
    return examples


def build_collator(config: ChipConfig, adapter, examples, reference_cache=None):
    from chip.collate import ChipCollator

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


def cache_fingerprint(config: ChipConfig, model, processor, examples) -> tuple[str, dict]:
    from chip.reference_cache import dataset_fingerprint, fingerprint, model_fingerprint

    tokenizer = getattr(processor, "tokenizer", processor)
    settings = {
        "model": config.model_name_or_path, "model_hash": model_fingerprint(model),
        "tokenizer_hash": fingerprint(tokenizer.get_vocab()), "data_hash": dataset_fingerprint(examples),
        "corruption": config.corruption, "noise_step": config.noise_step, "seed": config.seed,
        "max_length": config.max_length, "kl_top_k": config.kl_top_k,
        "needs_kl": config.loss_config.needs_kl, "needs_corrupt": config.loss_config.needs_corrupt,
    }  # fmt: skip
    return fingerprint(settings), settings


def run_training(config: ChipConfig, callbacks: list | None = None, replace_progress: bool = False) -> dict:
    """Load data and model, train, save; returns the final metrics. The library entry point of `chip train`.

    ``callbacks`` are added to the Trainer's; with ``replace_progress`` the first of them takes the
    place of the stock progress bar (e.g. one that does not print every logged dict).
    """
    from chip.loading import load_policy, load_processor
    from chip.modeling import VLMAdapter
    from chip.reference_cache import ReferenceCache
    from chip.trainer import ChipTrainer

    set_seed(config.seed)
    processor = load_processor(config)
    adapter = VLMAdapter.from_pretrained(config.model_name_or_path, trust_remote_code=config.trust_remote_code)
    examples = load_examples(config, adapter)
    model, ref_model = load_policy(config)

    cache = None
    if config.reference == "precomputed":
        expected, _ = cache_fingerprint(config, model, processor, examples)
        cache = ReferenceCache.open(config.reference_cache, expected_fingerprint=expected)
    collator = build_collator(config, adapter, examples, reference_cache=cache)
    trainer = ChipTrainer(
        model=model, args=config, train_dataset=examples, data_collator=collator,
        processing_class=processor, ref_model=ref_model, skip_nonfinite=config.on_nonfinite == "skip",
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


def resolve_resume_checkpoint(config: ChipConfig) -> str | None:
    """The folder ``--resume_from_checkpoint`` names, or for ``last`` the newest complete one in output_dir.

    ``Trainer`` writes a checkpoint's files in place, ``trainer_state.json`` last, so a run killed
    while saving leaves a folder with weights but no (or half a) state file; resuming from it would
    fail or load torn files. ``last`` skips such folders; an explicit incomplete one is refused.
    ``last`` with no checkpoint yet starts at step 0, so one command serves the first start and
    every restart of a preemptible job.
    """
    value = config.resume_from_checkpoint
    if value is None or value.lower() in ("", "false", "none"):
        return None
    if value.lower() in RESUME_LAST:
        folders = sorted(Path(config.output_dir).glob("checkpoint-*"), key=_checkpoint_step)
        complete = [folder for folder in folders if _complete_checkpoint(folder)]
        newest = _checkpoint_step(complete[-1]) if complete else -1
        torn = [folder.name for folder in folders if _checkpoint_step(folder) > newest]
        if torn:
            logger.warning("ignoring incomplete checkpoint(s) %s (killed while saving?)", ", ".join(torn))
        if not complete:
            logger.info("no complete checkpoint in %s: starting from step 0", config.output_dir)
            return None
        logger.info("resuming from %s", complete[-1])
        return str(complete[-1])
    folder = Path(value)
    if not folder.is_dir():
        raise ConfigError(f"--resume_from_checkpoint {value}: no such checkpoint folder")
    if not _complete_checkpoint(folder):
        raise ConfigError(
            f"--resume_from_checkpoint {value}: incomplete checkpoint (no readable trainer_state.json; the run was "
            "probably killed while saving it); pass an earlier checkpoint or `--resume_from_checkpoint last`"
        )
    return str(folder)


def _checkpoint_step(folder: Path) -> int:
    suffix = folder.name.rpartition("-")[2]
    return int(suffix) if suffix.isdigit() else -1


def _complete_checkpoint(folder: Path) -> bool:
    try:
        state = json.loads((folder / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(state, dict) and "global_step" in state


def run_precompute(config: ChipConfig) -> Path:
    """Write the reference cache for `config` (the reference = the model at model_name_or_path)."""
    from transformers import AutoModelForImageTextToText

    from chip.loading import load_processor, resolve_dtype
    from chip.modeling import VLMAdapter
    from chip.reference_cache import precompute_reference

    if not config.reference_cache:
        raise ConfigError("--reference_cache DIR is required")
    processor = load_processor(config)
    adapter = VLMAdapter.from_pretrained(config.model_name_or_path, trust_remote_code=config.trust_remote_code)
    examples = load_examples(config, adapter)
    model = AutoModelForImageTextToText.from_pretrained(
        config.model_name_or_path, dtype=resolve_dtype(config), trust_remote_code=config.trust_remote_code
    ).to(config.device).eval()
    fp, settings = cache_fingerprint(config, model, processor, examples)
    collator = build_collator(config, adapter, examples)
    return precompute_reference(
        model, collator, examples, config.reference_cache, fp, settings, config.kl_top_k,
        needs_kl=config.loss_config.needs_kl, batch_size=config.per_device_eval_batch_size,
    )  # fmt: skip


def _setup_logging() -> None:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO, stream=sys.stderr)


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
