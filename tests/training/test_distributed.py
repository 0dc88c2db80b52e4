"""Two-process DDP (`accelerate launch`, gloo on CPU) gives the same losses as one process on the
same global batch: 2 processes x 2 examples vs 1 process x 4 examples, same seed and sampler."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.train_helpers import train, train_args, write_pairs

REPO = Path(__file__).resolve().parents[2]
COMPARED = ("loss", "grad_norm", "rewards/margins", "visual/margins", "kl/rejected", "logps/chosen")


def test_ddp_two_processes_match_one_process(tiny_model, tmp_path):
    model_dir = tiny_model("llava")
    data = write_pairs(tmp_path / "data")
    single = train(model_dir, data, tmp_path / "single", per_device_train_batch_size=4, max_steps=3)

    args = train_args(model_dir, data, tmp_path / "ddp", per_device_train_batch_size=2, max_steps=3)
    command = [sys.executable, "-m", "accelerate.commands.launch",
               "--config_file", str(REPO / "configs/accelerate/ddp_cpu.yaml"), "-m", "chip", "train", *args]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count("chip: done") == 2  # both ranks finished
    state = json.loads((tmp_path / "ddp" / "trainer_state.json").read_text())
    ddp = [entry for entry in state["log_history"] if "loss" in entry]

    assert [h["step"] for h in ddp] == [h["step"] for h in single] == [1, 2, 3]
    for one, two in zip(single, ddp):
        for name in COMPARED:
            assert two[name] == pytest.approx(one[name], rel=1e-4, abs=1e-5), (one["step"], name)
