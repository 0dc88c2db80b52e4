"""`bench/gpu_check.sh`: its CPU twin runs every step the GPU run will, so the script cannot rot
while no GPU is at hand; without a GPU the real run stops with one line.

What the GPU run measures is not checked here (tiny CPU timings mean nothing); that each step
runs through, produces finite numbers, reaches the variable-length path and is reported is.
"""

from __future__ import annotations

import json
import subprocess

import pytest
import torch

from bench.gpu_check import REPO, TIME_TARGETS, VARIANTS, failures, main


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: the real check would run")
def test_without_a_gpu_the_script_says_so_in_one_line() -> None:
    run = subprocess.run(
        ["bash", str(REPO / "bench" / "gpu_check.sh")], capture_output=True, text=True, cwd=REPO
    )
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        "gpu_check: no CUDA GPU visible (torch.cuda.is_available() is False); run with --cpu-tiny for the CPU twin"
    ]


def test_cpu_twin_runs_every_step(tmp_path, capsys) -> None:
    out = tmp_path / "gpu_check.json"
    assert main(["--cpu-tiny", "--repeats", "1", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["mode"] == "cpu-tiny" and report["failed"] == []
    results = report["results"]
    for model in ("llava-next-7b-varlen", "qwen2-vl-7b-varlen"):
        step = results[f"step/{model}"]
        assert set(step["variants"]) == set(VARIANTS)
        for row in step["variants"].values():
            assert row["median_seconds"] > 0 and row["peak_bytes"] > 0 and row["time_ratio_to_trl"] > 0
        assert len(step["targets"]) == 2 * len(TIME_TARGETS)  # computed; only a GPU run fails on them
        varlen = results[f"varlen/{model}"]
        assert varlen["ok"] and varlen["kernel_calls"] == 2  # one call per decoder layer (2 layers)
        assert varlen["max_difference_per_token"] <= varlen["limit_per_token"]
    fsdp = results["launch"]["fsdp_cpu.yaml"]
    assert fsdp["ok"] and len(fsdp["losses"]) == 3
    zero3 = results["launch"]["deepspeed_zero3_cpu.yaml"]
    assert zero3["ok"] or zero3["skipped"].startswith("deepspeed not installed")
    printed = capsys.readouterr().out
    assert "| launch fsdp_cpu.yaml | ok" in printed and "all checks passed" in printed


def test_a_missed_target_fails_only_a_gpu_run() -> None:
    results = {
        "step/m": {
            "ok": True,
            "targets": {"chip-live time <= 0.8 x TRL": False, "chip-dpo peak memory <= TRL": True},
        },
        "varlen/m": {"ok": True},
        "launch": {"fsdp.yaml": {"ok": True}, "deepspeed_zero3.yaml": {"ok": False}},
    }
    assert failures(results, gpu=False) == ["deepspeed_zero3.yaml"]
    assert failures(results, gpu=True) == ["step/m: chip-live time <= 0.8 x TRL", "deepspeed_zero3.yaml"]
