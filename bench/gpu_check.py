"""The checks to run when a CUDA GPU is lent for a few minutes: one command, one JSON, one table.

    bash bench/gpu_check.sh                 # one CUDA GPU, no internet; ~8 minutes on an 80 GB+ GPU
    bash bench/gpu_check.sh --cpu-tiny      # the same steps on CPU with tiny models (run by the tests)

Steps, each recorded even when another fails:

1. ``step``: for LLaVA-1.6-7B and Qwen2-VL-7B geometry (random weights, bf16, built on the GPU from
   configs; presets ``llava-next-7b-varlen`` / ``qwen2-vl-7b-varlen`` of `bench/presets.py`), the
   step time and peak memory of TRL's `DPOTrainer` step (LM head on completions, as TRL runs on a
   GPU), chip CHiP with the live reference, with a precomputed one, and chip DPO, on the same
   variable-length rows (`bench/bench_step.py`'s runner, variants one after another). Targets:
   step time ≤ 0.8 (live), 0.6 (precomputed), 0.45 (DPO) × TRL's; peak memory ≤ TRL's.
2. ``varlen``: chip's pair forward with torch's variable-length flash attention against the same
   forward with per-segment SDPA: equal log-probs within bf16 tolerance, the kernel really called.
3. ``launch``: `chip train` under `accelerate launch --num_processes 1` with the shipped FSDP2 and
   DeepSpeed ZeRO-3 configs, 3 steps of a tiny LLaVA: finishes, finite losses.

On CPU (``--cpu-tiny``) every step runs at tiny size: the models are the same families shrunk,
the variable-length kernel is emulated by per-segment SDPA (so the bookkeeping around it is what
is checked), the launches use the ``*_cpu.yaml`` configs (ZeRO-3 only when DeepSpeed is installed).
Targets are computed and reported there too but only a GPU run fails on them. Exits 1 when a step
failed or a GPU target was missed, 2 (one line) without a GPU.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` and `chip` importable from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import torch  # noqa: E402

from bench.bench_step import Runner, summarise  # noqa: E402
from bench.bench_step import parse_args as step_args  # noqa: E402
from bench.distributions import ImageSizes, ResponseLengths  # noqa: E402
from bench.presets import PRESETS, Preset  # noqa: E402
from bench.workload import build_workload  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
MODELS = ("llava-next-7b-varlen", "qwen2-vl-7b-varlen")
VARIANTS = ("trl-completion", "chip-live", "chip-precomputed", "chip-dpo")
TIME_TARGETS = {"chip-live": 0.8, "chip-precomputed": 0.6, "chip-dpo": 0.45}  # x TRL's step time
TINY = dict(
    vocab_size=512,
    hidden_size=32,
    intermediate_size=64,
    num_layers=2,
    num_heads=2,
    num_kv_heads=2,
    vision_hidden_size=16,
    vision_intermediate_size=32,
    vision_layers=1,
    vision_heads=1,
)
TINY_LENGTHS = ResponseLengths(median_words=6, min_words=2, max_words=20)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cpu-tiny", action="store_true", help="every step on CPU at tiny size")
    parser.add_argument(
        "--steps", nargs="+", choices=("step", "varlen", "launch"), default=["step", "varlen", "launch"]
    )
    parser.add_argument("--repeats", type=int, default=2, help="timed steps per variant")
    parser.add_argument("--out", type=Path, default=Path("bench/results/gpu_check.json"))
    return parser.parse_args(argv)


def tiny_twin(preset: Preset) -> Preset:
    """``preset`` shrunk for a CPU: same family and kinds of draws, tiny widths and images, float32."""
    if preset.family == "qwen2_vl":
        sizes = dict(TINY, num_image_tokens=4, min_pixels=256, max_pixels=64 * 256)
        images = ImageSizes(min_pixels=4 * 256, max_pixels=40 * 256, multiple=16)
    else:
        sizes = dict(TINY, num_image_tokens=16, image_grid_pinpoints=preset.sizes["image_grid_pinpoints"])
        images = ImageSizes(min_pixels=500, max_pixels=20_000, aspect_ratios=(1.0, 2.0, 1 / 2))
    return replace(
        preset,
        sizes=sizes,
        dtype="float32",
        response_lengths=TINY_LENGTHS,
        prompt_tokens=30,
        image_sizes=images,
    )


def presets(tiny: bool) -> dict[str, Preset]:
    return {name: tiny_twin(PRESETS[name]) if tiny else PRESETS[name] for name in MODELS}


def check_step(
    preset_name: str, preset: Preset, device: torch.device, args: argparse.Namespace
) -> dict[str, Any]:
    """Step time and peak memory of every variant on ``preset``; ratios to TRL's and the targets."""
    options = step_args(
        [
            *("--preset", preset_name, "--device", device.type, "--variants", ",".join(VARIANTS)),
            *("--sequential", "--warmup", "1", "--repeats", str(args.repeats), "--no-kl-error"),
        ]
    )
    workload = build_workload(preset, device, num_examples=preset.batch_size * options.num_batches)
    settings = {
        "learning_rate": options.learning_rate,
        "kl_top_k": options.kl_top_k,
        "num_batches": options.num_batches,
        "gradient_checkpointing": False,
        "output_dir": tempfile.mkdtemp(prefix="chip-gpu-check-"),
    }
    runner = Runner(options, workload, device, settings)
    runner.run_sequential()
    report = summarise(options, preset, device, runner.results, runner.kl_error, True, workload)
    variants = {}
    for name in VARIANTS:
        result = report["variants"].get(name, {})
        variants[name] = {
            "median_seconds": result.get("median_seconds"),
            "peak_bytes": result.get("peak_bytes"),
            "time_ratio_to_trl": result.get("time_ratio_to_trl_completion"),
            "memory_ratio_to_trl": result.get("memory_ratio_to_trl_completion"),
            "error": result.get("error"),
        }
    targets = {}
    for name, limit in TIME_TARGETS.items():
        ratio, memory = variants[name]["time_ratio_to_trl"], variants[name]["memory_ratio_to_trl"]
        targets[f"{name} time <= {limit} x TRL"] = ratio is not None and ratio <= limit
        targets[f"{name} peak memory <= TRL"] = memory is not None and memory <= 1.0
    ran = all(
        v["median_seconds"] is not None and math.isfinite(v["median_seconds"]) for v in variants.values()
    )
    return {"ok": ran, "variants": variants, "targets": targets, "examples": report["examples"]}


def emulated_varlen(calls: list[int]):
    """torch's ``varlen_attn`` as a CPU runs it: each sequence between two bounds attends causally on
    its own through SDPA (the CPU twin's stand-in for the CUDA kernel)."""

    def varlen_attn(query, key, value, cu_q, cu_k, max_q, max_k, *, scale=None, window_size, enable_gqa):
        calls.append(len(cu_q) - 1)
        outputs = []
        for first, last in zip(cu_q[:-1].tolist(), cu_q[1:].tolist()):
            q, k, v = (x[first:last].transpose(0, 1)[None] for x in (query, key, value))  # (1, h, L, D)
            outputs.append(
                torch.nn.functional.scaled_dot_product_attention(
                    q, k, v, is_causal=True, scale=scale, enable_gqa=enable_gqa
                )[0].transpose(0, 1)
            )
        return torch.cat(outputs)

    return varlen_attn


@contextmanager
def varlen_kernel(kind: str, calls: list[int]):
    """Within the block chip's pair attention uses: ``"sdpa"`` per-segment calls only, ``"kernel"``
    torch's variable-length kernel (counted), ``"emulated"`` its CPU stand-in."""
    import chip.modeling.pair_attention as pair_attention

    saved = pair_attention._VARLEN_ATTN, pair_attention._varlen_usable
    if kind == "sdpa":
        pair_attention._VARLEN_ATTN = None
    elif kind == "kernel":
        real = saved[0]

        def counted(*args, **kwargs):
            calls.append(len(args[3]) - 1)
            return real(*args, **kwargs)

        pair_attention._VARLEN_ATTN = counted
    else:
        pair_attention._VARLEN_ATTN = emulated_varlen(calls)
        pair_attention._varlen_usable = lambda query, dropout: True
    try:
        yield
    finally:
        pair_attention._VARLEN_ATTN, pair_attention._varlen_usable = saved


def check_varlen(preset: Preset, device: torch.device) -> dict[str, Any]:
    """Log-probs of the same pairs through the variable-length path and through per-segment SDPA."""
    from chip.modeling import response_logps
    from chip.modeling.pairs import PAIR_LENGTHS

    workload = build_workload(replace(preset, num_batches=1), device, num_examples=2)
    adapter, model = workload.adapter, workload.base_model.eval()
    pairs = adapter.collate_pairs(
        [
            (
                adapter.encode_prompt(example.load_images(), example.prompt),
                adapter.encode_response(example.chosen),
                adapter.encode_response(example.rejected),
            )
            for example in workload.examples
        ]
    )
    pairs = {k: v.to(device) if torch.is_tensor(v) else v for k, v in pairs.items()}
    calls: list[int] = []
    with torch.no_grad():
        with varlen_kernel("sdpa", calls):
            sdpa = response_logps(model, pairs).logps.float()
        with varlen_kernel("kernel" if device.type == "cuda" else "emulated", calls):
            varlen = response_logps(model, pairs).logps.float()
    shortest = int(pairs[PAIR_LENGTHS][:, 1:].clamp(min=1).min())  # response tokens, fewest of any row
    difference = (varlen - sdpa).abs()
    per_token = difference.max().item() / shortest
    # bf16 rounds every activation to ~3 significant digits; fp32 (the twin) to ~7
    limit = 2e-2 if preset.dtype == "bfloat16" else 1e-5
    return {
        "ok": bool(calls) and per_token <= limit,
        "kernel_calls": len(calls),
        "max_abs_logp_difference": difference.max().item(),
        "max_difference_per_token": per_token,
        "limit_per_token": limit,
        "logps_sdpa": sdpa.tolist(),
        "logps_varlen": varlen.tolist(),
    }


def check_launches(tiny: bool, folder: Path) -> dict[str, Any]:
    """`chip train` launched on one process with the shipped FSDP2 and ZeRO-3 configs (their CPU
    versions on a CPU), 3 steps of a tiny LLaVA; each must finish with 3 finite losses."""
    from chip.testing import build_tiny_model

    model = build_tiny_model("llava", folder / "tiny-llava")
    data = write_colour_pairs(folder / "data")
    results = {}
    for config in ("fsdp", "deepspeed_zero3"):
        name = f"{config}_cpu.yaml" if tiny else f"{config}.yaml"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
        extra = []
        if config.startswith("deepspeed"):
            if not _has_deepspeed():
                results[name] = {
                    "ok": None,
                    "skipped": 'deepspeed not installed (pip install -e ".[distributed]")',
                }
                continue
            if tiny:
                env["DS_ACCELERATOR"] = "cpu"
                extra = ["--use_cpu", "false", "--ddp_backend", "gloo"]
        out = folder / f"out-{config}"
        command = [
            *(
                sys.executable,
                "-m",
                "accelerate.commands.launch",
                "--config_file",
                str(REPO / "configs/accelerate" / name),
            ),
            *("--num_processes", "1", "--main_process_port", str(_free_port()), "-m", "chip", "train"),
            *("--model_name_or_path", str(model), "--dataset", str(data), "--output_dir", str(out)),
            *("--per_device_train_batch_size", "2", "--max_steps", "3", "--logging_steps", "1"),
            *(
                "--save_strategy",
                "no",
                "--report_to",
                "none",
                "--learning_rate",
                "1e-3",
                "--max_length",
                "512",
            ),
            *(("--use_cpu", "true") if tiny and not config.startswith("deepspeed") else ()),
            *extra,
        ]
        start = time.perf_counter()
        run = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO)
        losses = _losses(out)
        results[name] = {
            "ok": run.returncode == 0 and len(losses) == 3 and all(map(math.isfinite, losses)),
            "seconds": time.perf_counter() - start,
            "losses": losses,
            "exit_code": run.returncode,
            "tail": run.stderr[-1500:] if run.returncode else "",
        }
    return results


def write_colour_pairs(folder: Path, n: int = 6) -> Path:
    """n preference pairs over solid-colour images (chosen names the colour)."""
    from PIL import Image

    colours = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        colour, wrong = list(colours)[i % 3], list(colours)[(i + 1) % 3]
        Image.new("RGB", (32, 32), colours[colour]).save(folder / f"img{i}.png")
        rows.append(
            {
                "id": f"ex{i}",
                "images": [f"img{i}.png"],
                "prompt": "What colour is the image?",
                "chosen": f"the image is {colour} .",
                "rejected": f"the image is {wrong} and big .",
            }
        )
    (folder / "pairs.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return folder / "pairs.jsonl"


def _losses(out: Path) -> list[float]:
    try:
        state = json.loads((out / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return []
    return [entry["loss"] for entry in state["log_history"] if "loss" in entry]


def _has_deepspeed() -> bool:
    import importlib.util

    return importlib.util.find_spec("deepspeed") is not None


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _guarded(name: str, results: dict[str, Any], call, *args) -> None:
    """Run one check; a crash is recorded (and fails the run) instead of ending the others."""
    start = time.perf_counter()
    try:
        results[name] = call(*args)
    except Exception as error:  # noqa: BLE001 - every failure of a check is its result
        results[name] = {
            "ok": False,
            "error": f"{type(error).__name__}: {error}",
            "trace": traceback.format_exc()[-3000:],
        }
    print(f"{name}: {time.perf_counter() - start:.0f} s", flush=True)


def run_checks(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device("cpu" if args.cpu_tiny else "cuda")
    if args.cpu_tiny:
        torch.set_num_threads(1)
    results: dict[str, Any] = {}
    for name, preset in presets(args.cpu_tiny).items():
        if "step" in args.steps:
            _guarded(f"step/{name}", results, check_step, name, preset, device, args)
        if "varlen" in args.steps:
            _guarded(f"varlen/{name}", results, check_varlen, preset, device)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if "launch" in args.steps:
        with tempfile.TemporaryDirectory() as tmp:
            _guarded("launch", results, check_launches, args.cpu_tiny, Path(tmp))
    return results


def failures(results: dict[str, Any], gpu: bool) -> list[str]:
    """What failed: a check that did not run through, and on a GPU a target missed."""
    failed = []
    for name, result in results.items():
        parts = result.items() if name == "launch" else [(name, result)]
        failed += [part for part, value in parts if value.get("ok") is False]
        if gpu and name.startswith("step/"):
            failed += [f"{name}: {target}" for target, met in result.get("targets", {}).items() if not met]
    return failed


def table(results: dict[str, Any]) -> str:
    lines = ["| check | result |", "|---|---|"]
    for name, result in results.items():
        if name.startswith("step/"):
            for variant, row in result.get("variants", {}).items():
                seconds, peak = row["median_seconds"], row["peak_bytes"]
                ratio, memory = row["time_ratio_to_trl"], row["memory_ratio_to_trl"]
                lines.append(
                    f"| {name} {variant} | "
                    + (f"{seconds:.3f} s/step, {peak / 2**30:.2f} GiB" if seconds and peak else "did not run")
                    + (f" ({ratio:.2f}x TRL time, {memory:.2f}x memory)" if ratio and memory else "")
                    + " |"
                )
            if "error" in result:
                lines.append(f"| {name} | FAILED: {result['error']} |")
        elif name.startswith("varlen/"):
            lines.append(
                f"| {name} | "
                + (
                    f"{result['kernel_calls']} kernel calls, max |d logp| per token "
                    f"{result['max_difference_per_token']:.2e} (limit {result['limit_per_token']:.0e})"
                    if "kernel_calls" in result
                    else f"FAILED: {result.get('error')}"
                )
                + " |"
            )
        else:
            for config, row in result.items() if "error" not in result else [("launch", result)]:
                status = (
                    "skipped: " + row["skipped"]
                    if row.get("skipped")
                    else ("ok" if row.get("ok") else "FAILED")
                )
                lines.append(f"| launch {config} | {status} {row.get('losses', row.get('error', ''))} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.cpu_tiny and not torch.cuda.is_available():
        print(
            "gpu_check: no CUDA GPU visible (torch.cuda.is_available() is False); run with --cpu-tiny for the CPU twin",
            file=sys.stderr,
        )
        return 2
    started = time.perf_counter()
    results = run_checks(args)
    failed = failures(results, gpu=not args.cpu_tiny)
    report = {
        "command": "bash bench/gpu_check.sh " + " ".join(argv if argv is not None else sys.argv[1:]),
        "mode": "cpu-tiny" if args.cpu_tiny else "gpu",
        "machine": {
            "platform": platform.platform(),
            "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        "targets": {"time_ratio_to_trl": TIME_TARGETS, "peak_memory_ratio_to_trl": 1.0},
        "seconds": time.perf_counter() - started,
        "results": results,
        "failed": failed,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=str))
    print(table(results), end="")
    print(f"written: {args.out}; " + ("all checks passed" if not failed else f"FAILED: {'; '.join(failed)}"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
