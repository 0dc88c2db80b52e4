"""How many CPU threads torch uses: chosen so that processes never oversubscribe the cores.

torch's default is one thread per core of the machine, and its idle threads spin while they wait
for the others. Two such processes on two cores run several times slower than one thread each
(measured in docs/performance.md, "Threads"), so chip picks the count itself, says which in the
log, and takes ``OMP_NUM_THREADS`` as the user's word when it is set.
"""

from __future__ import annotations

import os
from typing import Literal

import torch

from chip.errors import ConfigError

# tiny: models of a few million parameters, whose operations are too small to split across threads;
# train: a `chip train` process, which takes the cores it was given, shared with its local ranks.
Workload = Literal["tiny", "train"]


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, which `taskset` and containers narrow)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def choose_threads(workload: Workload, environ: dict[str, str] | None = None) -> tuple[int, str]:
    """The thread count for ``workload`` and the reason, as the log states it.

    ``OMP_NUM_THREADS`` wins when set; otherwise a tiny model gets one thread, and training gets the
    usable cores divided among the processes of this machine (``LOCAL_WORLD_SIZE``, set by
    ``accelerate launch`` and ``torchrun``).
    """
    environ = os.environ if environ is None else environ
    if "OMP_NUM_THREADS" in environ:
        given = environ["OMP_NUM_THREADS"]
        if not given.isdigit() or int(given) < 1:
            raise ConfigError(f"OMP_NUM_THREADS must be a whole number >= 1, got {given!r}")
        return int(given), "from OMP_NUM_THREADS"
    if workload == "tiny":
        return 1, "tiny models gain nothing from more; set OMP_NUM_THREADS to change"
    cores = usable_cores()
    ranks = int(environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    shared = f" shared by {ranks} processes" if ranks > 1 else ""
    return max(1, cores // ranks), f"{cores} usable cores{shared}; set OMP_NUM_THREADS to change"


def set_threads(workload: Workload) -> str:
    """Apply `choose_threads` to torch; returns the line that states the choice, for the log."""
    threads, reason = choose_threads(workload)
    torch.set_num_threads(threads)
    waiting = os.environ.get("OMP_WAIT_POLICY", "ACTIVE").lower()
    return f"torch uses {threads} CPU thread{'' if threads == 1 else 's'} ({reason}); idle threads wait {waiting}"
