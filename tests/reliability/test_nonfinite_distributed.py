"""A non-finite loss on one rank: every rank takes the same decision (two processes, gloo on CPU).

Only the rank whose batch holds the poisoned example (NaN pixels, tests/reliability/poisoned_chip.py)
sees a NaN loss. With ``--on_nonfinite error`` both ranks stop at the same step after saving the
state together, each with one ``chip: error:`` line and no traceback, and the launch exits non-zero;
with ``skip`` both ranks drop the batch and its update, and the run finishes with finite weights.
A rank killed mid-run: tests/training/test_distributed.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.reliability.poisoned_chip import POISONED
from tests.train_helpers import train_args, write_pairs
from tests.training.launch_helpers import DEEPSPEED_CONFIGS, launch, log_history, needs_deepspeed

SCRIPT = Path(__file__).with_name("poisoned_chip.py")
STEPS = 2  # 8 pairs, 2 processes x 2: one epoch, so the poisoned example is in exactly one step
CONFIGS = [
    "fsdp_cpu.yaml",
    pytest.param("ddp_cpu.yaml", marks=pytest.mark.slow),
    *(pytest.param(c, marks=[pytest.mark.slow, needs_deepspeed]) for c in DEEPSPEED_CONFIGS),
]


def _run(config: str, tiny_model, tmp_path: Path, on_nonfinite: str):
    args = train_args(
        tiny_model("llava"),
        write_pairs(tmp_path / "data", n=8),
        tmp_path / "out",
        per_device_train_batch_size=2,
        max_steps=STEPS,
        on_nonfinite=on_nonfinite,
    )
    return launch(config, args, script=SCRIPT)


@pytest.mark.parametrize("config", CONFIGS)
def test_nan_loss_on_one_rank_stops_every_rank_at_the_same_step_after_saving(config, tiny_model, tmp_path):
    result = _run(config, tiny_model, tmp_path, "error")
    assert result.returncode != 0
    assert not re.search(r"\[rank\d\]: Traceback", result.stderr), result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("chip: error: ")]
    assert len(errors) == 2, result.stderr[-3000:]  # one line per rank
    steps = {re.match(r"chip: error: step (\d+): non-finite ", line).group(1) for line in errors}
    assert len(steps) == 1, errors  # the same step on both ranks
    poisoned = [line for line in errors if f"for example ids ['{POISONED}']" in line]
    other = [line for line in errors if "non-finite loss (on another process)" in line]
    assert len(poisoned) == len(other) == 1, errors
    assert "policy_chosen_logps" in poisoned[0]

    saved = tmp_path / "out" / f"nonfinite-step-{steps.pop()}"
    assert json.loads((saved / "nonfinite.json").read_text())["ids"] == [POISONED]
    assert "global_step" in json.loads((saved / "trainer_state.json").read_text())  # written last
    assert (saved / "model.safetensors").exists()  # full weights, also from a sharded run
    assert not (tmp_path / "out" / "trainer_state.json").exists()  # no rank went on


@pytest.mark.parametrize("config", CONFIGS)
def test_nan_loss_on_one_rank_is_skipped_by_every_rank(config, tiny_model, tmp_path):
    result = _run(config, tiny_model, tmp_path, "skip")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count("chip: done") == 2
    assert result.stderr.count("batch skipped (1 so far)") == 2, result.stderr[-3000:]  # both ranks
    assert result.stderr.count("update skipped (1 so far)") == 2  # the NaN gradient, all-reduced
    last = log_history(tmp_path / "out")[-1]
    assert last["skipped_nonfinite_batches"] == last["skipped_nonfinite_updates"] == 1
    weights = load_file(tmp_path / "out" / "model.safetensors")
    assert all(bool(torch.isfinite(tensor).all()) for tensor in weights.values())
