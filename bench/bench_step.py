"""Time one optimizer step of CHiP (chip, naive) against TRL's plain DPO, side by side.

    python bench/bench_step.py                                  # CPU default, ~4 CPU-minutes
    python bench/bench_step.py --variants trl-completion,chip-live,chip-live-full-logits,chip-live-unshared,chip-live-twice --no-kl-error
    python bench/bench_step.py --preset llava-7b --device cuda  # the real 7B shape, bf16, one GPU
    python bench/bench_step.py --preset varlen      # variable lengths: also --preset anyres, qwen-dynamic
    python bench/bench_step.py --preset varlen --with-peers  # + ms-swift's and LLaMA-Factory's DPO (bench/peers)

Every variant (see `bench/variants.py`) steps the same model copy on the same batches with the
same optimizer; steps are interleaved (a b c d e, b c d e a, ...) so that load from other
processes hits every variant alike, and the medians after warm-up are compared with TRL's.
During the timed steps the language decoder's calls are counted (`bench/padding.py`): positions
run, and the padding among them; tokens/s is the batches' real tokens (prompt with its image
tokens and both responses of each example, once) over the timed steps' time. Peak memory and the
top-k KL error come from extra, untimed steps (`bench/measure.py`). Prints a table and writes
everything, raw times included, as JSON.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` and `chip` importable from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # TRL's trainers would otherwise ping the hub (telemetry)
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import torch  # noqa: E402

from bench.measure import step_peak_bytes, topk_kl_error  # noqa: E402
from bench.padding import DecoderCount, decoder_of  # noqa: E402
from bench.peers.report import peer_summary, print_peers  # noqa: E402
from bench.peers.variant import PEER_VARIANTS, PEERS, PeerUnavailable  # noqa: E402
from bench.presets import PRESETS  # noqa: E402
from bench.variants import DEFAULT_VARIANTS, Variant  # noqa: E402
from bench.variants import VARIANTS as OWN_VARIANTS  # noqa: E402
from bench.workload import build_workload  # noqa: E402
from chip.training.config import ChipConfig  # noqa: E402

MB = 2**20
VARIANTS = {**OWN_VARIANTS, **PEER_VARIANTS}  # + ms-swift and LLaMA-Factory, each in its own environment


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--preset", choices=sorted(PRESETS), default="cpu", help="model shape and workload (default: cpu)"
    )
    parser.add_argument(
        "--variants",
        default=None,
        help=f"comma-separated, from {sorted(VARIANTS)} (default: the preset's, else "
        f"{','.join(DEFAULT_VARIANTS)})",
    )
    parser.add_argument(
        "--with-peers",
        action="store_true",
        help=f"add the peer trainers' DPO steps ({','.join(PEER_VARIANTS)}; bench/peers/setup.sh)",
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (cuda when available)")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="preference pairs per step (default: the preset's)"
    )
    parser.add_argument(
        "--dtype", choices=["float32", "bfloat16"], default=None, help="weights dtype (default: the preset's)"
    )
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per variant before timing")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per variant")
    parser.add_argument(
        "--num-batches",
        type=int,
        default=None,
        help="distinct batches the steps cycle through (default: the preset's, 2 or 3)",
    )
    parser.add_argument(
        "--learning-rate", type=float, default=1e-4, help="AdamW learning rate of every variant"
    )
    parser.add_argument(
        "--kl-top-k",
        type=int,
        default=ChipConfig.default("kl_top_k"),
        help="top-k of the precomputed reference (chip's default)",
    )
    parser.add_argument("--gradient-checkpointing", action="store_true", help="enable it in every variant")
    parser.add_argument(
        "--sequential",
        action="store_true",
        help="run variants one after another, freeing each (for models too big to hold them all)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: 1 on a CPU, where other processes' load makes "
        "multi-threaded timings erratic; torch's default on a GPU)",
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory steps")
    parser.add_argument("--no-kl-error", action="store_true", help="skip the top-k KL error measurement")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON output file (default: bench/results/bench_step.json for the cpu preset, "
        "bench/results/bench_<preset>.json for the others)",
    )
    args = parser.parse_args(argv)
    preset = PRESETS[args.preset]
    chosen = args.variants.split(",") if args.variants else preset.variants or DEFAULT_VARIANTS
    args.variants = [name.strip() for name in chosen if name.strip()]
    args.variants += [name for name in PEER_VARIANTS if args.with_peers and name not in args.variants]
    args.num_batches = args.num_batches or preset.num_batches
    name = "step" if args.preset == "cpu" else args.preset.replace("-", "_")
    args.out = args.out or Path(f"bench/results/bench_{name}.json")
    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {sorted(VARIANTS)}")
    return args


class Runner:
    """Builds the variants, times their steps and measures memory; `results` holds everything per variant."""

    def __init__(self, args: argparse.Namespace, workload, device: torch.device, settings: dict[str, Any]):
        self.args, self.workload, self.device, self.settings = args, workload, device, settings
        self.results: dict[str, dict[str, Any]] = {}
        self.counts: dict[str, DecoderCount] = {}
        self.kl_error: dict[str, Any] | None = None

    def build(self, name: str) -> Variant | None:
        started = time.perf_counter()
        try:
            variant = VARIANTS[name](self.workload, self.settings)
        except PeerUnavailable as error:  # reported in the table with the peer's own words
            self.results[name] = {"label": PEERS[name].label, "unavailable": str(error)}
            print(f"{name}: cannot run: {error}", file=sys.stderr)
            return None
        self.results[name] = {
            "label": variant.label,
            "setup_seconds": time.perf_counter() - started,
            "step_seconds": [],
            "cpu_seconds": [],
            "losses": [],
            "batch_tokens": [],
            "decoder_calls": [],
            "decoder_positions": [],
            "decoder_real": [],
        }
        self.results[name].update(getattr(variant, "report", {}))
        self.counts[name] = DecoderCount([decoder_of(module) for module in variant.modules])
        return variant

    def warm_up(self, variant: Variant) -> None:
        for index in range(self.args.warmup):
            variant.step(index)

    def timed_step(self, variant: Variant, index: int) -> None:
        with self.counts[variant.key] as count:
            _sync(self.device)
            started, cpu_started = time.perf_counter(), time.process_time()
            loss = variant.step(index)
            _sync(self.device)
            wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        totals = count.totals
        measured = getattr(variant, "measured", None)  # a peer's process times and counts its own step
        if measured:
            wall, cpu, totals = (
                measured["seconds"],
                measured["cpu_seconds"],
                replace(totals, **{key: measured[key] for key in ("calls", "positions", "real")}),
            )
        result = self.results[variant.key]
        result["step_seconds"].append(wall)
        result["cpu_seconds"].append(cpu)
        result["losses"].append(loss)
        batches = self.workload.batches(self.args.num_batches)
        result["batch_tokens"].append(self.workload.batch_tokens(batches[index % len(batches)]))
        result["decoder_calls"].append(totals.calls)
        result["decoder_positions"].append(totals.positions)
        result["decoder_real"].append(totals.real)

    def finish(self, variant: Variant) -> None:
        """Untimed extra steps: peak memory, and the top-k KL error of the live CHiP variant."""
        if not self.args.no_memory:
            index = self.args.warmup + self.args.repeats
            if hasattr(variant, "memory"):  # measured in the peer's own process
                resident, transient = variant.memory(index)
            else:
                transient = step_peak_bytes(lambda: variant.step(index), self.device)
                resident = variant.resident_bytes()
            self.results[variant.key].update(
                resident_bytes=resident, step_peak_bytes=transient, peak_bytes=resident + transient
            )
        if variant.key == "chip-live" and not self.args.no_kl_error:
            reference = variant.trainer.reference.ref_model
            self.kl_error = topk_kl_error(
                variant.trainer.model, reference, variant.batches, self.args.kl_top_k
            )
        if hasattr(variant, "checks"):
            result = self.results[variant.key]
            indices = [self.args.warmup + index for index in range(self.args.repeats)]
            result.update(variant.checks(result["decoder_real"], indices))
            variant.close()

    def run_sequential(self) -> None:
        """One variant after another, each freed before the next (models too big to hold them all)."""
        for name in self.args.variants:
            variant = self.build(name)
            if variant is None:
                continue
            self.warm_up(variant)
            for index in range(self.args.repeats):
                self.timed_step(variant, self.args.warmup + index)
            self.finish(variant)
            del variant
            _free(self.device)

    def run_interleaved(self) -> None:
        variants = [variant for variant in map(self.build, self.args.variants) if variant is not None]
        variants = [variant for variant in variants if self._survives(variant, self.warm_up, variant)]
        for index in range(self.args.repeats):
            # Rotate the order each round: a variant's step runs in the allocator state its predecessor
            # left (e.g. after TRL's 4 GB step freed its memory), so no variant always follows the same one.
            shift = index % len(variants)
            for variant in variants[shift:] + variants[:shift]:
                if not self._survives(variant, self.timed_step, variant, self.args.warmup + index):
                    variants.remove(variant)
        for variant in variants:
            self._survives(variant, self.finish, variant)

    def _survives(self, variant: Variant, call: Any, *args: Any) -> bool:
        """``call(*args)``; a peer whose process dies on the way is reported as unavailable, the rest go on."""
        try:
            call(*args)
        except PeerUnavailable as error:
            self.results[variant.key] = {"label": variant.label, "unavailable": f"during the run: {error}"}
            print(f"{variant.key}: stopped: {error}", file=sys.stderr)
            return False
        return True


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = torch.device(
        "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device.replace("auto", "cpu")
    )
    if args.threads or device.type == "cpu":
        torch.set_num_threads(args.threads or 1)
    preset = PRESETS[args.preset]
    preset = replace(
        preset,
        batch_size=args.batch_size or preset.batch_size,
        dtype=args.dtype or preset.dtype,
        num_batches=args.num_batches,
    )
    sequential = args.sequential or args.preset == "llava-7b"
    workload = build_workload(preset, device, num_examples=preset.batch_size * args.num_batches)
    settings = {
        "learning_rate": args.learning_rate,
        "kl_top_k": args.kl_top_k,
        "num_batches": args.num_batches,
        "gradient_checkpointing": args.gradient_checkpointing,
        "output_dir": tempfile.mkdtemp(prefix="chip-bench-"),
    }
    runner = Runner(args, workload, device, settings)
    runner.run_sequential() if sequential else runner.run_interleaved()
    report = summarise(args, preset, device, runner.results, runner.kl_error, sequential, workload)
    print_table(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"\nwritten: {args.out}")
    return report


BASELINES = {"trl": "trl", "trl-completion": "trl_completion"}  # variant -> suffix of its ratio fields


def summarise(args, preset, device, results, kl_error, sequential, workload) -> dict[str, Any]:
    """Medians and ratios. CPU time (user + system, this process) is what a step costs when the
    machine is shared: waiting for a core counts in wall time only. On a GPU only wall time means anything.

    Tokens/s is the real tokens of all timed steps' batches over their summed time (the batches
    differ in length, so a rate per step would weigh a short batch like a long one); decoder
    positions are per step on average, the padding fraction over all timed steps.
    """
    for result in (result for result in results.values() if "step_seconds" in result):
        times = result["step_seconds"]
        result["median_seconds"] = statistics.median(times)
        result["min_seconds"], result["max_seconds"] = min(times), max(times)
        result["median_cpu_seconds"] = statistics.median(result["cpu_seconds"])
        tokens = sum(result["batch_tokens"])
        result["tokens_per_second"] = tokens / sum(times)
        result["tokens_per_cpu_second"] = tokens / sum(result["cpu_seconds"])
        result["decoder_positions_per_step"] = statistics.mean(result["decoder_positions"])
        result["decoder_real_per_step"] = statistics.mean(result["decoder_real"])
        result["padding_fraction"] = 1.0 - sum(result["decoder_real"]) / sum(result["decoder_positions"])
    for key, suffix in BASELINES.items():
        baseline = results.get(key)
        for result in (r for r in results.values() if "step_seconds" in r) if baseline else ():
            result[f"time_ratio_to_{suffix}"] = result["median_seconds"] / baseline["median_seconds"]
            result[f"cpu_ratio_to_{suffix}"] = result["median_cpu_seconds"] / baseline["median_cpu_seconds"]
            result[f"tokens_per_second_ratio_to_{suffix}"] = (
                result["tokens_per_second"] / baseline["tokens_per_second"]
            )
            result[f"positions_ratio_to_{suffix}"] = (
                result["decoder_positions_per_step"] / baseline["decoder_positions_per_step"]
            )
            if "peak_bytes" in result and "peak_bytes" in baseline:
                result[f"memory_ratio_to_{suffix}"] = result["peak_bytes"] / baseline["peak_bytes"]
    return {
        "command": "python bench/bench_step.py " + " ".join(sys.argv[1:]),
        "preset": args.preset,
        "preset_notes": preset.notes,
        "model_sizes": preset.sizes,
        "dtype": preset.dtype,
        "batch_size": preset.batch_size,
        "prompt_tokens": preset.prompt_tokens,
        "response_tokens": preset.response_tokens,
        "response_lengths": asdict(preset.response_lengths) if preset.response_lengths else None,
        "image_sizes": asdict(preset.image_sizes) if preset.image_sizes else None,
        "examples": _example_summary(workload),
        "num_batches": args.num_batches,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "order": "sequential" if sequential else "interleaved",
        "learning_rate": args.learning_rate,
        "gradient_checkpointing": args.gradient_checkpointing,
        "machine": _machine(device),
        "variants": results,
        "topk_kl_error": kl_error,
        "peers": peer_summary(results),
    }


def _example_summary(workload) -> dict[str, Any]:
    """Each example's token counts, their ranges, and the real tokens of each distinct batch."""
    counts = [asdict(tokens) for tokens in workload.tokens]
    ranges = {
        name: {stat: fn(c[name] for c in counts) for stat, fn in (("min", min), ("max", max))}
        | {"median": statistics.median(c[name] for c in counts)}
        for name in ("prompt", "image", "chosen", "rejected")
    }
    batches = workload.batches(workload.preset.num_batches)
    return {
        "ranges": ranges,
        "batch_tokens": [workload.batch_tokens(ids) for ids in batches],
        "per_example": counts,
    }


def print_table(report: dict[str, Any]) -> None:
    ranges = report["examples"]["ranges"]
    image, chosen, rejected = (ranges[name] for name in ("image", "chosen", "rejected"))
    spans = {
        name: f"{r['min']}" if r["min"] == r["max"] else f"{r['min']}-{r['max']} (median {r['median']:g})"
        for name, r in (("image", image), ("chosen", chosen), ("rejected", rejected))
    }
    print(
        f"\n{report['preset_notes']}; batch {report['batch_size']} pairs, prompt {report['prompt_tokens']} + "
        f"{spans['image']} image tokens, responses chosen {spans['chosen']}, rejected {spans['rejected']}; "
        f"{report['machine']['device']}; {report['order']}, median of {report['repeats']} steps after "
        f"{report['warmup']} warm-up"
    )
    header = (
        "variant",
        "wall s",
        "x (a)",
        "x (a')",
        "cpu s",
        "x (a)",
        "x (a')",
        "peak MB",
        "x (a)",
        "x (a')",
    )
    row = "{:<52} {:>7} {:>6} {:>6} {:>7} {:>6} {:>6} {:>8} {:>6} {:>6}"
    print(row.format(*header))
    for result in _ran(report):
        peak = result.get("peak_bytes")
        print(
            row.format(
                result["label"],
                f"{result['median_seconds']:.2f}",
                *_ratios(result, "time"),
                f"{result['median_cpu_seconds']:.2f}",
                *_ratios(result, "cpu"),
                "" if peak is None else f"{peak / MB:.0f}",
                *_ratios(result, "memory"),
            )
        )
    print(
        f"\nreal tokens per step {statistics.mean(report['examples']['batch_tokens']):,.0f} on average; "
        "decoder positions and padding: every decoder call of a timed step, policy and reference"
    )
    header = ("variant", "tokens/s", "x (a)", "x (a')", "dec. pos/step", "x (a)", "x (a')", "padding")
    row = "{:<52} {:>8} {:>6} {:>6} {:>13} {:>6} {:>6} {:>7}"
    print(row.format(*header))
    for result in _ran(report):
        print(
            row.format(
                result["label"],
                f"{result['tokens_per_second']:,.0f}",
                *_ratios(result, "tokens_per_second"),
                f"{result['decoder_positions_per_step']:,.0f}",
                *_ratios(result, "positions"),
                f"{result['padding_fraction']:.1%}",
            )
        )
    print_peers(report)
    error = report["topk_kl_error"]
    if error:
        for name, stats in (("this model", error["benchmark_model"]), ("sharpened", error["sharpened"])):
            print(
                f"top-{error['top_k']} reference KL vs exact, {name}: per token mean "
                f"{stats['token_rel_error_mean']:.2%} max {stats['token_rel_error_max']:.2%}; per response mean "
                f"{stats['sequence_rel_error_mean']:.2%} max {stats['sequence_rel_error_max']:.2%} (reference "
                f"entropy {stats['reference_entropy_mean_nats']:.2f} nats, top-k mass "
                f"{stats['reference_topk_mass_mean']:.3f}, exact KL {stats['exact_kl_per_token_mean']:.2e}/token)"
            )


def _ran(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [result for result in report["variants"].values() if "step_seconds" in result]


def _ratios(result: dict[str, Any], quantity: str) -> list[str]:
    values = [result.get(f"{quantity}_ratio_to_{suffix}") for suffix in BASELINES.values()]
    return ["" if value is None else f"{value:.2f}" for value in values]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _machine(device: torch.device) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(
            line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    info = {
        "device": device.type,
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    import transformers
    import trl

    info.update(transformers=transformers.__version__, trl=trl.__version__)
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["device"] = f"cuda ({info['gpu']})"
    else:
        info["device"] = f"cpu ({cpu}, {torch.get_num_threads()} threads)"
    return info


if __name__ == "__main__":
    main()
