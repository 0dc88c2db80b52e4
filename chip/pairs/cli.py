"""`chip pairs`: preference pairs from your own model's samples, judged, with the hallucinations marked.

    chip pairs --model runs/base --images coco/val2014 --annotations coco/annotations \\
        --samples 8 --temperature 0.9 --output data/round1          # judged by COCO objects
    chip pairs --model runs/base --dataset my_prompts.jsonl --judge http://localhost:8000/v1 \\
        --judge_model Qwen2.5-VL-72B-Instruct --output data/round1    # judged by a served VLM
    chip train --config recipe.yaml --dataset data/round1 --output_dir runs/round1
    chip pairs --model runs/round1 ... --output data/round2          # the next round

Each prompt (one per image of --images, with a detailed-description prompt drawn from a built-in
set or from --prompts FILE; or each row of --dataset, any layout `chip data check` reads) is
sampled --samples times; an annotator counts each sample's hallucinations (--annotations: COCO
objects with the CHAIR reading; --objects: your own image -> objects file; --judge: RLAIF-V's
claim-by-claim check by a served model); per prompt, a sample with fewer hallucinations and at
least the same coverage is paired with one with more. The output folder is a dataset `chip train`
reads as is (pairs.jsonl and its images), with pairs_report.md / .json. A kill loses at most one
batch of samples (or the judgments in flight): run the same command again to resume.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from chip.cli import OneLineParser
from chip.errors import ConfigError
from chip.evaluation.benchmarks import READINGS
from chip.evaluation.judge import JudgeClient
from chip.pairs.annotators import Annotator, coco_annotator, objects_annotator
from chip.pairs.judging import JudgeAnnotator, load_judge_prompts
from chip.pairs.output import JUDGMENTS_FILE, PAIRS_FILE, REPORT_MD
from chip.pairs.pairing import COVERAGE_CHOICES, PairingRules
from chip.pairs.sampling import SamplingSettings
from chip.pairs.sources import DEFAULT_PROMPTS, PromptItem, Skipped, dataset_items, folder_items, read_prompts


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="chip pairs", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="model folder or hub id to sample")
    parser.add_argument("--adapter", help="PEFT adapter folder to apply on top of --model")
    parser.add_argument("--output", required=True, help="folder to write (and to resume from)")
    _input_options(parser)
    _annotator_options(parser)
    _sampling_and_pairing_options(parser)
    return parser


def _input_options(parser: argparse.ArgumentParser) -> None:
    inputs = parser.add_argument_group("prompts and images (one of --images, --dataset)")
    inputs.add_argument("--images", help="a folder of images (searched recursively); one prompt per image")
    inputs.add_argument(
        "--dataset", help="any dataset `chip data check` reads; its prompts and images are used"
    )
    inputs.add_argument("--image_root", help="folder the dataset's image paths are relative to")
    inputs.add_argument("--column_map", help="read dataset COLUMN as FIELD, e.g. question=prompt,img=image")
    inputs.add_argument("--split", help="split of a DatasetDict, shard folder or hub dataset")
    inputs.add_argument(
        "--prompts",
        help="prompts to draw from, one per line (or a JSON list); default: a built-in set "
        "of detailed-description prompts (with --dataset: the rows' own prompts)",
    )
    inputs.add_argument("--limit", type=int, help="use N prompts, drawn at random (fixed by --seed)")


def _annotator_options(parser: argparse.ArgumentParser) -> None:
    judged = parser.add_argument_group("annotator (one of --annotations, --objects, --judge)")
    judged.add_argument("--annotations", help="COCO 2014 annotation folder (instances_*, captions_*)")
    judged.add_argument(
        "--reading",
        choices=READINGS,
        default="official",
        help="how COCO mentions are read: official (the CHAIR reference's) or corrected (chip's fixes)",
    )
    judged.add_argument("--objects", help="JSON/JSONL of image -> objects (with optional synonyms)")
    judged.add_argument(
        "--judge", help="OpenAI-compatible endpoint of a vision-language model, e.g. http://127.0.0.1:8000/v1"
    )
    judged.add_argument("--judge_model", default="judge", help="model name sent to the endpoint")
    judged.add_argument(
        "--judge_prompts", help="YAML with the claims and verify templates (see docs/pairs.md)"
    )
    judged.add_argument(
        "--judge_api_key_env", default="CHIP_JUDGE_API_KEY", help="environment variable holding the API key"
    )
    judged.add_argument("--judge_timeout", type=float, default=120.0, help="seconds per request")
    judged.add_argument(
        "--judge_retries", type=int, default=3, help="extra attempts after a timeout or HTTP 5xx/429"
    )
    judged.add_argument(
        "--judge_backoff", type=float, default=1.0, help="seconds before the first retry, doubled each time"
    )
    judged.add_argument("--judge_workers", type=int, default=4, help="samples judged at once")


def _sampling_and_pairing_options(parser: argparse.ArgumentParser) -> None:
    sampling = parser.add_argument_group("sampling")
    sampling.add_argument("--samples", type=int, default=8, help="responses per prompt (K)")
    sampling.add_argument("--temperature", type=float, default=1.0)
    sampling.add_argument("--top_p", type=float, default=1.0)
    sampling.add_argument("--max_new_tokens", type=int, default=256)
    sampling.add_argument(
        "--batch_size", type=int, default=16, help="(prompt, sample) rows per generate call"
    )
    sampling.add_argument(
        "--seed", type=int, default=0, help="with the prompt and sample index, fixes each sample"
    )
    sampling.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    sampling.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16")

    pairing = parser.add_argument_group("pairing")
    pairing.add_argument(
        "--min_gap", type=int, default=1, help="rejected holds at least this many more hallucinations"
    )
    pairing.add_argument("--pairs_per_prompt", type=int, default=1, help="at most this many pairs per prompt")
    pairing.add_argument(
        "--rejected_per_row",
        type=int,
        default=1,
        help="write the pairs of a prompt that share their chosen response as one row with up to N rejected",
    )
    pairing.add_argument(
        "--coverage",
        choices=COVERAGE_CHOICES,
        default="at_least",
        help="at_least: chosen names at least as many true objects (or true claims) as rejected; ignore",
    )
    pairing.add_argument(
        "--length_balance", action="store_true", help="RLAIF-V's length balance of chosen vs rejected"
    )
    pairing.add_argument("--examples", type=int, default=3, help="example pairs shown in the report")


def _items(args: argparse.Namespace) -> tuple[list[PromptItem], Skipped, dict[str, str]]:
    if bool(args.images) == bool(args.dataset):
        raise ConfigError("give one of --images DIR and --dataset DATASET")
    prompts = read_prompts(args.prompts) if args.prompts else None
    if args.images:
        items, skipped = folder_items(args.images, prompts or DEFAULT_PROMPTS, args.seed, args.limit)
        source = {"images": str(args.images)}
    else:
        items, skipped = dataset_items(
            args.dataset, prompts, args.seed, args.limit, args.image_root, args.column_map, args.split
        )
        source = {"dataset": str(args.dataset)}
    if not items:
        raise ConfigError(f"no usable prompt with an image in {args.images or args.dataset}")
    source["prompts"] = (
        str(args.prompts) if args.prompts else ("built-in" if args.images else "the dataset's")
    )
    return items, skipped, source


def _annotator(args: argparse.Namespace, items: list[PromptItem]) -> Annotator:
    chosen = [name for name in ("annotations", "objects", "judge") if getattr(args, name)]
    if len(chosen) != 1:
        raise ConfigError("give one annotator: --annotations COCO_DIR, --objects FILE or --judge URL")
    if args.annotations:
        return coco_annotator(args.annotations, items, args.reading)
    if args.objects:
        return objects_annotator(args.objects, items)
    client = JudgeClient(
        args.judge,
        model=args.judge_model,
        api_key=os.environ.get(args.judge_api_key_env),
        timeout=args.judge_timeout,
        retries=args.judge_retries,
        backoff=args.judge_backoff,
    )
    prompts = load_judge_prompts(args.judge_prompts)
    return JudgeAnnotator(client, prompts, Path(args.output) / JUDGMENTS_FILE, workers=args.judge_workers)


def main(argv: list[str]) -> int:
    """Entry point of `chip pairs`; returns the exit code. User errors raise `ChipError`."""
    from chip.pairs.pipeline import make_pairs

    args = build_parser().parse_args(argv)
    sampling = SamplingSettings(
        samples=args.samples,
        temperature=args.temperature,
        top_p=args.top_p,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
        batch_size=args.batch_size,
        device=args.device,
        dtype=args.dtype,
    )
    rules = PairingRules(
        args.min_gap, args.pairs_per_prompt, args.coverage, args.length_balance, args.rejected_per_row
    )
    items, skipped, source = _items(args)
    annotator = _annotator(args, items)
    report = make_pairs(
        args.model,
        items,
        annotator,
        args.output,
        sampling,
        rules,
        adapter=args.adapter,
        skipped=skipped,
        source=source,
        examples=args.examples,
    )
    output = Path(args.output)
    print(
        f"{report['pairs']['kept']} pairs from {report['pairs']['prompts_with_pairs']} of {len(items)} prompts "
        f"({report['samples']['drawn']} samples, {report['samples']['hallucination_rate']:.1%} hallucinating) "
        f"-> {output / PAIRS_FILE}; report: {output / REPORT_MD}",
        file=sys.stdout,
    )
    return 0
