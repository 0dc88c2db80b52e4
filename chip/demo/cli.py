"""`chip demo`: the end-to-end run on the built-in synthetic world (no downloads).

    chip demo --quick                 # smoke run: one seed, DPO vs CHiP, ~9 CPU-minutes with the base
    chip demo                         # lr tuned per method, 5 seeds, 1,000 test scenes, ~30 minutes before the cost runs (not re-measured)
    chip demo --output_dir runs/demo  # where results.json, report.md and the plots go
    chip demo --methods dpo,chip,chip@onpolicy --seeds 3   # a subset of the full run

Every run also trains DPO and CHiP (full: and dpo+segment) on pairs drawn from the base's own
captions (`chip pairs`, "@onpolicy"), measures what each model lost against the base (recall and
attribute questions: colour, position, size, count), and trains CHiP's first seed several times
longer to show how hallucination, recall and attribute accuracy move along training.

A GPU is used automatically when present. The base model is cached (by a hash of its settings)
under ``--cache_dir`` so later runs skip its training.
"""

from __future__ import annotations

import argparse
import shlex
import time
from pathlib import Path

from chip.demo.base import BaseModelConfig
from chip.demo.experiment import DemoConfig, run_experiment
from chip.demo.methods import METHODS, VARIANTS, tuned_as
from chip.demo.report import write_report, write_results
from chip.training.threads import set_threads


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, DemoConfig]:
    """The command line and the `DemoConfig` it asks for."""
    parser = argparse.ArgumentParser(
        prog="chip demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: one seed and one learning rate, DPO and CHiP, 300 test scenes; cannot rank methods",
    )
    parser.add_argument(
        "--output_dir", type=Path, default=Path("runs/demo"), help="results folder (default: runs/demo)"
    )
    parser.add_argument(
        "--cache_dir",
        type=Path,
        default=Path("~/.cache/chip/demo").expanduser(),
        help="where the base model is cached (default: ~/.cache/chip/demo)",
    )
    parser.add_argument(
        "--methods",
        help="comma-separated core methods and visual-term variants to run, a core method with "
        "@onpolicy also on the base's own pairs "
        f"(default: all in full mode; known: {', '.join([*METHODS, *VARIANTS])})",
    )
    parser.add_argument(
        "--base", choices=("quick", "full"), help="base model preset (default: quick with --quick, else full)"
    )
    parser.add_argument("--seeds", type=int, help="training seeds per method and variant (full mode: 5)")
    args = parser.parse_args(argv)
    config = DemoConfig.quick() if args.quick else DemoConfig.full()
    if args.methods:
        names = args.methods.split(",")
        on_policy = [n.removesuffix("@onpolicy") for n in names if n.endswith("@onpolicy")]
        names = [n for n in names if not n.endswith("@onpolicy")]
        unknown = [n for n in names + on_policy if n not in METHODS and n not in VARIANTS]
        unknown += [n for n in on_policy if n in VARIANTS]  # variants have no on-policy run
        if unknown:
            parser.error(f"unknown method(s) {unknown}; known: {', '.join([*METHODS, *VARIANTS])}")
        config.variants = tuple(n for n in names if n in VARIANTS)
        # a variant reuses its core method's learning rate, so that method runs too
        config.methods = tuple(
            dict.fromkeys([n for n in names if n in METHODS] + [tuned_as(v) for v in config.variants])
        )
        config.onpolicy_methods = tuple(on_policy)
    if args.base:
        config.base = BaseModelConfig.quick() if args.base == "quick" else BaseModelConfig.full()
    if args.seeds:
        config.seeds = config.variant_seeds = tuple(range(args.seeds))
    return args, config


def main(argv: list[str]) -> int:
    args, config = parse_args(argv)
    print(set_threads("tiny"))
    start = time.perf_counter()
    results = run_experiment(config, args.output_dir, args.cache_dir)
    results["command"] = "chip demo " + shlex.join(argv)
    results["timings_seconds"]["total"] = round(time.perf_counter() - start, 1)
    write_results(results, args.output_dir)
    report = write_report(results, args.output_dir, results["command"])
    print(f"done in {results['timings_seconds']['total']:.0f}s: {args.output_dir / 'results.json'}, {report}")
    return 0
