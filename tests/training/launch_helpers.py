"""Multi-process `chip train` runs for the tests: `accelerate launch` with two CPU processes (gloo).

Each rank is a real `python -m chip` process importing this checkout (``PYTHONPATH``), so these
runs go through exactly the path a user's ``accelerate launch ... -m chip train`` takes.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs" / "accelerate"
WAIT_S = 300  # generous: every rank imports torch and transformers on a shared machine
# Compared between runs: the loss, its inputs' summaries, and the clipped global gradient norm.
COMPARED = (
    "loss",
    "grad_norm",
    "rewards/margins",
    "visual/margins",
    "kl/chosen",
    "kl/rejected",
    "logps/chosen",
    "logps/rejected",
    "logps/chosen_corrupt",
)
DEEPSPEED_CONFIGS = ("deepspeed_zero2_cpu.yaml", "deepspeed_zero3_cpu.yaml")

needs_deepspeed = pytest.mark.skipif(
    importlib.util.find_spec("deepspeed") is None,
    reason='deepspeed not installed (pip install -e ".[distributed]")',
)


def launch_command(
    config: str, args: list[str], script: Path | None = None, overrides: tuple[str, ...] = ()
) -> tuple[list[str], dict[str, str]]:
    """The `accelerate launch` command line and environment for ``configs/accelerate/CONFIG``.

    DeepSpeed on CPU: its CPU accelerator, gloo, and no ``--use_cpu`` (which would make accelerate
    drop DeepSpeed); every other config runs with the ``--use_cpu true`` of ``train_args``.
    ``overrides`` go to `accelerate launch` (``--num_processes 2`` for a GPU config).
    """
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    if config.startswith("deepspeed"):
        env["DS_ACCELERATOR"] = "cpu"
        args = [*args, "--use_cpu", "false", "--ddp_backend", "gloo"]
    target = [str(script)] if script else ["-m", "chip"]
    # a port of its own: two test workers launching at once would otherwise both take 29500
    port = ["--main_process_port", str(_free_port())]
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(CONFIGS / config),
        *port,
        *overrides,
        *target,
        "train",
        *map(str, args),
    ]
    return command, env


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(
    config: str, args: list[str], script: Path | None = None, overrides: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    """Run two ranks to the end; ``script`` replaces ``-m chip`` (a test entry point)."""
    command, env = launch_command(config, args, script, overrides)
    return subprocess.run(command, capture_output=True, text=True, timeout=900, env=env, cwd=REPO)


def spawn(config: str, args: list[str], log: Path) -> subprocess.Popen:
    """Start two ranks in the background, their output kept in ``log``."""
    command, env = launch_command(config, args)
    with log.open("wb") as sink:
        return subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=REPO)


def complete_checkpoint(folder: Path) -> bool:
    """Whole as ``--resume_from_checkpoint last`` of a two-rank run sees it: rank 0's trainer_state.json
    parses and both ranks' RNG states are whole (rank 1 may still be writing its own after rank 0's
    state file)."""
    from chip.training.checkpoints import is_complete_checkpoint

    return is_complete_checkpoint(folder, world_size=2)


def wait_for_checkpoint(folder: Path, launcher: subprocess.Popen) -> None:
    deadline = time.monotonic() + WAIT_S
    while not complete_checkpoint(folder):
        assert launcher.poll() is None, f"the run ended (code {launcher.returncode}) before {folder.name}"
        assert time.monotonic() < deadline, f"timed out waiting for {folder.name}"
        time.sleep(0.01)


def rank_pids(launcher_pid: int) -> list[int]:
    """The ``python -m chip`` worker processes under an `accelerate launch` process (read from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            pid, rest = stat.read_text().split(" (", 1)
        except OSError:
            continue
        parent = int(rest.rsplit(") ", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(pid))
    found, todo = [], [launcher_pid]
    while todo:
        for child in children.get(todo.pop(), []):
            todo.append(child)
            try:
                if b"chip" in Path(f"/proc/{child}/cmdline").read_bytes():
                    found.append(child)
            except OSError:
                pass
    return sorted(found)


def kill_one_rank(launcher: subprocess.Popen) -> int:
    """SIGKILL the last rank (no chance to clean up); returns the launcher's exit code once it has torn down."""
    ranks = rank_pids(launcher.pid)
    assert len(ranks) == 2, ranks
    os.kill(ranks[-1], signal.SIGKILL)
    return launcher.wait(timeout=WAIT_S)


def log_history(output_dir: Path) -> list[dict]:
    state = json.loads((output_dir / "trainer_state.json").read_text())
    return [entry for entry in state["log_history"] if "loss" in entry]


def assert_same_history(expected: list[dict], got: list[dict], rel: float = 1e-4, abs: float = 1e-5) -> None:
    """Same steps, and every compared metric equal within ``rel`` (``abs`` near zero)."""
    assert [h["step"] for h in got] == [h["step"] for h in expected]
    for one, two in zip(expected, got):
        for name in COMPARED:
            if name in one:
                assert two[name] == pytest.approx(one[name], rel=rel, abs=abs), (one["step"], name)


def max_difference(expected: list[dict], got: list[dict]) -> float:
    """The largest relative difference over every compared metric and step (for docs/distributed.md)."""
    return max(
        abs(two[name] - one[name]) / max(abs(one[name]), 1e-8)
        for one, two in zip(expected, got)
        for name in COMPARED
        if name in one and abs(one[name]) > 1e-5
    )
