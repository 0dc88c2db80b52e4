"""`chip eval`: score an answers file (or generate one with a model) on a hallucination benchmark
or on a general-ability one (mme, mmbench, scienceqa).

    chip eval --bench chair --answers A.jsonl --annotations COCO_DIR --output M.json
    chip eval --bench pope  --answers A.jsonl --questions Q.jsonl --output M.json
    chip eval --bench amber --answers A.jsonl --annotations AMBER/data --output M.json
    chip eval --bench mmhal --answers A.jsonl --questions response_template.json \\
        --judge-url http://127.0.0.1:8000/v1 --judge-model NAME --output M.json
    chip eval --bench pope --model out/chip --questions Q.jsonl --image-root val2014 --output M.json
    chip eval --bench mme --answers eval_tool/answers/MODEL --output M.json
    chip eval --bench mmbench --answers A.jsonl --questions MMBench_DEV_EN.tsv --output M.json
    chip eval --bench scienceqa --answers A.jsonl --annotations scienceqa --output M.json
    chip eval --compare base.json dpo.json chip.json [--markdown table.md]
    chip eval --compare base/ dpo/ chip/     # one folder of metrics JSONs per model

Results are one JSON of metrics per run (fractions, written atomically) plus an optional
Markdown table; `--compare` prints runs side by side with their differences from the first; runs
given the same name (a folder, or repeated `--names`) form one column, hallucination benchmarks
first, then general ones.
`--reading official` (default) scores as the benchmark's reference code does, quirks included;
`--reading corrected` applies chip's fixes (docs/evaluation.md lists them). Every metrics JSON
names its `reading`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from chip.cli import OneLineParser
from chip.errors import ConfigError
from chip.evaluation.benchmarks import BENCHMARKS, READINGS, read_answers
from chip.evaluation.judge import JudgeClient
from chip.evaluation.report import compare_table, load_runs, metrics_table
from chip.files import write_json_atomic, write_text_atomic
from chip.ranks import current_ranks
from chip.runlock import run_lock


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="chip eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    run = parser.add_argument_group("benchmark run")
    run.add_argument("--bench", choices=sorted(BENCHMARKS), help="benchmark to run")
    run.add_argument("--answers", help="answers JSONL to score (with --model: where answers are written)")
    run.add_argument(
        "--annotations",
        help="COCO 2014 annotation folder (chair, objhal), AMBER data folder, ScienceQA folder (scienceqa)",
    )
    run.add_argument(
        "--questions",
        nargs="+",
        help="question file(s) (pope, mmhal, hallusionbench, mmbench TSV, mme TASK.txt folder; generation)",
    )
    run.add_argument("--output", help="metrics JSON to write")
    run.add_argument("--markdown", help="also write the metrics (or the comparison) as a Markdown table")
    run.add_argument(
        "--reading",
        choices=READINGS,
        default="official",
        help="official: as the reference scorers compute it (the numbers papers print); corrected: chip's fixes",
    )

    gen = parser.add_argument_group("generation (with --model)")
    gen.add_argument("--model", help="model folder or hub id to generate answers with")
    gen.add_argument("--adapter", help="PEFT adapter folder to apply on top of --model")
    gen.add_argument("--image_root", default=".", help="folder that question image paths are relative to")
    gen.add_argument("--prompt", help="prompt for benchmarks whose questions have none (chair, objhal)")
    gen.add_argument("--batch-size", type=int, default=8)
    gen.add_argument(
        "--num-beams", type=int, default=1, help="1 = greedy (the default); the CHiP authors used 3"
    )
    gen.add_argument("--max-new-tokens", type=int, default=256)
    gen.add_argument("--limit", type=int, help="answer only the first N questions")
    gen.add_argument(
        "--device",
        help="torch device (default: this process's under accelerate launch, else cuda if available, else cpu)",
    )
    gen.add_argument(
        "--dtype", default="auto", help="torch dtype for the model (auto, float32, bfloat16, ...)"
    )

    judge = parser.add_argument_group("judge LLM (mmhal, hallusionbench, objhal, mmbench)")
    judge.add_argument("--judge-url", help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1")
    judge.add_argument("--judge-model", default="gpt-4", help="model name sent to the endpoint")
    judge.add_argument(
        "--judge-prompt",
        help="the reference script (mmhal: eval_gpt4.py; objhal: RLHF-V's eval_gpt_obj_halbench.py; "
        "mmbench: VLMEvalKit's multiple_choice.py) or a text file with its template, for the "
        "reference's exact judge prompt",
    )
    judge.add_argument(
        "--judge-api-key-env", default="CHIP_JUDGE_API_KEY", help="environment variable holding the API key"
    )
    judge.add_argument("--judge-timeout", type=float, default=60.0, help="seconds per request")
    judge.add_argument("--judge-retries", type=int, default=3)
    judge.add_argument("--judge-workers", type=int, default=4, help="concurrent judge requests")

    compare = parser.add_argument_group("comparison")
    compare.add_argument(
        "--compare",
        nargs="+",
        metavar="RUN",
        help="metrics JSON files, or folders of them (one per model), to put side by side",
    )
    compare.add_argument(
        "--names",
        nargs="+",
        help="column names for --compare (default: file or folder names); runs with one name form one column",
    )
    return parser


def _compare(args: argparse.Namespace) -> int:
    kinds = {name: bench.kind for name, bench in BENCHMARKS.items()}
    table = compare_table(load_runs(args.compare, args.names), kinds)
    print(table, end="")
    if args.markdown:
        write_text_atomic(args.markdown, table)
    return 0


def _judge(args: argparse.Namespace) -> JudgeClient | None:
    if not args.judge_url:
        return None
    return JudgeClient(
        args.judge_url,
        model=args.judge_model,
        api_key=os.environ.get(args.judge_api_key_env),
        timeout=args.judge_timeout,
        retries=args.judge_retries,
    )


def _generate(args: argparse.Namespace) -> Path:
    # Imported here so that scoring never needs torch/transformers.
    from chip.evaluation.generate import GenerationSettings, generate_answers

    bench = BENCHMARKS[args.bench]
    if not args.questions:
        raise ConfigError(
            f"--bench {args.bench} --model needs --questions (the prompts and images to answer)"
        )
    questions = bench.questions(args)[: args.limit]
    answers_path = Path(args.answers) if args.answers else Path(args.output).with_suffix(".answers.jsonl")
    settings = GenerationSettings(
        batch_size=args.batch_size,
        num_beams=args.num_beams,
        max_new_tokens=args.max_new_tokens,
        device=args.device,
        dtype=args.dtype,
    )
    # Per answers file, not per folder: several benchmarks are often answered into one folder at once.
    with run_lock(answers_path.parent, f"eval --bench {args.bench}", f".{answers_path.name}.lock"):
        generate_answers(
            args.model,
            questions,
            answers_path,
            args.image_root,
            settings,
            adapter=args.adapter,
            id_field=bench.id_field,
        )
    return answers_path


def main(argv: list[str]) -> int:
    """Entry point of `chip eval`; returns the exit code. User errors raise `ChipError`."""
    args = build_parser().parse_args(argv)
    if args.compare:
        return _compare(args)
    if not args.bench or not args.output:
        raise ConfigError("chip eval needs --bench and --output (or --compare RUN ...)")
    bench = BENCHMARKS[args.bench]
    for option in bench.needs:
        if not getattr(args, option):
            raise ConfigError(f"--bench {args.bench} needs --{option}")
    if bench.official_only and args.reading != "official":
        raise ConfigError(
            f"--bench {args.bench} has only the reference's reading; drop --reading {args.reading}"
        )
    if bench.needs_judge and not args.judge_url:
        raise ConfigError(
            f"--bench {args.bench} needs a judge (--judge-url); it has no rule-based scorer (docs/evaluation.md)"
        )
    if args.model:
        answers_path = _generate(args)
        if not current_ranks().is_main:  # under accelerate launch the main process scores
            return 0
    elif args.answers:
        answers_path = Path(args.answers)
    else:
        raise ConfigError("give --answers FILE to score, or --model PATH to generate answers first")

    answers = read_answers(answers_path, bench)
    judge = _judge(args)
    metrics = bench.score(args, answers, judge)
    result = {
        "benchmark": bench.name,
        "kind": bench.kind,
        "reading": args.reading,
        **metrics,
        "answers": str(answers_path),
        "n_answers": len(answers),
    }
    if judge is not None:
        result["judge"] = {**judge.describe(), **judge.stats.as_dict()}
    write_json_atomic(args.output, result)
    table = metrics_table(result, title=f"{bench.name} — {result['scorer']}")
    if args.markdown:
        write_text_atomic(args.markdown, table)
    print(table, end="", file=sys.stdout)
    return 0
