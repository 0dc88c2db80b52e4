"""Any `chip` command under `accelerate launch` with CPU processes (gloo), for the tests.

Each rank is a real ``python -m chip`` process importing this checkout, one torch thread each,
with a free port per launch (tests running at once never share one). ``machines=2`` starts two
launchers on this host, machine ranks 0 and 1 with one process each, meeting at 127.0.0.1: a
two-node launch as accelerate and torchrun run it across machines.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from chip.ranks import part_files
from tests.training.launch_helpers import rank_pids

REPO = Path(__file__).resolve().parents[1]
CPU_CONFIG = REPO / "configs" / "accelerate" / "ddp_cpu.yaml"
WAIT_S = 600  # generous: every rank imports torch and transformers on a shared 2-core machine


def finished(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]


def rows_on_disk(path: Path) -> int:
    """Complete rows of a JSON Lines output and of its per-process parts."""
    files = [path, *part_files(path)] if path.exists() else part_files(path)
    return sum(file.read_bytes().count(b"\n") for file in files)


def parts_rows(path: Path) -> int:
    """Complete rows in the per-process parts of ``path`` alone: more than 0 only when the
    processes really split the work (one that took itself for the only one writes ``path``)."""
    return sum(file.read_bytes().count(b"\n") for file in part_files(path))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": path, **(extra or {})}


def launch_argv(
    args: list[str], processes: int = 2, machine: tuple[int, int, int] | None = None
) -> list[str]:
    """``accelerate launch`` of ``python -m chip ARGS``; ``machine`` = (rank, machines, port)."""
    if machine is None:
        topology = ["--num_processes", str(processes), "--main_process_port", str(free_port())]
    else:
        rank, machines, port = machine
        topology = [
            *("--num_processes", str(machines), "--num_machines", str(machines)),
            *(
                "--machine_rank",
                str(rank),
                "--main_process_ip",
                "127.0.0.1",
                "--main_process_port",
                str(port),
            ),
        ]
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(CPU_CONFIG),
        *topology,
        "-m",
        "chip",
        *map(str, args),
    ]


def run_launch(
    args: list[str], processes: int = 2, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run ``chip ARGS`` on ``processes`` ranks to the end."""
    return subprocess.run(
        launch_argv(args, processes),
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        env=launch_env(env),
        cwd=REPO,
    )


def run_two_machines(per_machine: Callable[[int], list[str]], env: dict[str, str] | None = None) -> list[str]:
    """Two launchers on this host as machine ranks 0 and 1 (``per_machine(rank)`` = its chip args);
    returns each one's output once both succeeded."""
    port = free_port()
    launchers = [
        subprocess.Popen(
            launch_argv(per_machine(rank), machine=(rank, 2, port)),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=launch_env(env),
            cwd=REPO,
        )
        for rank in (0, 1)
    ]
    outputs = [launcher.communicate(timeout=WAIT_S)[0] for launcher in launchers]
    for launcher, output in zip(launchers, outputs):
        assert launcher.returncode == 0, output[-3000:]
    return outputs


def kill_one_rank_when(
    args: list[str], ready: Callable[[], bool], log: Path, env: dict[str, str] | None = None
) -> int:
    """Start ``chip ARGS`` on two ranks, SIGKILL the second once ``ready()`` holds; the launcher's exit code."""
    with log.open("wb") as sink:
        launcher = subprocess.Popen(
            launch_argv(args), stdout=sink, stderr=subprocess.STDOUT, env=launch_env(env), cwd=REPO
        )
    deadline = time.monotonic() + WAIT_S
    while not ready():
        assert launcher.poll() is None, (
            f"the launch ended (code {launcher.returncode}) first: {log.read_text()[-3000:]}"
        )
        assert time.monotonic() < deadline, "timed out waiting to kill a rank"
        time.sleep(0.01)
    ranks = rank_pids(launcher.pid)
    assert len(ranks) == 2, ranks
    os.kill(ranks[-1], 9)
    return launcher.wait(timeout=WAIT_S)
