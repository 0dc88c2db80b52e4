"""One run per folder: a second `chip train`, `chip data precompute`, `chip pairs` (or `chip eval --model`
on the same answers file) writing where a live run writes is refused at once, naming that run.

The lock is an ``flock`` on a file in the folder (``.chip-lock.json``), so the kernel releases it the
moment its process ends, however it ends: a lock left by a killed run is stale by construction and
the next run takes it over (logging whose it was). The file holds the holder's pid, host, command
and start time, for the message; it is never deleted, because deleting a locked file lets two later
runs lock two different files of the same name.

Under ``accelerate launch`` / ``torchrun`` the processes of one run share the folder: only global
rank 0 (``$RANK``) takes the lock.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from chip.errors import ChipError

logger = logging.getLogger("chip")

LOCK_FILE = ".chip-lock.json"  # JSON, so a folder that must hold only JSON and safetensors still does


class FolderInUseError(ChipError):
    """Another live chip process is writing into the same folder."""


def _holder(handle) -> dict:
    handle.seek(0)
    try:
        record = json.loads(handle.read() or "{}")
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return record if isinstance(record, dict) else {}


def _describe(holder: dict) -> str:
    if not holder:
        return "another chip process"
    return (
        f"`chip {holder.get('command', '?')}` (pid {holder.get('pid', '?')} on {holder.get('host', '?')}, "
        f"started {holder.get('started', '?')})"
    )


@contextmanager
def run_lock(folder: str | Path, command: str, name: str = LOCK_FILE) -> Iterator[None]:
    """Hold ``folder/name`` for the block; `FolderInUseError` at once if a live process holds it.

    ``command`` (e.g. ``"train"``) is recorded for the message another run would print.
    """
    if int(os.environ.get("RANK", "0")) != 0:
        yield
        return
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    with open(os.open(path, os.O_RDWR | os.O_CREAT, 0o644), "r+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderInUseError(
                f"{folder} is in use by {_describe(_holder(handle))}; wait for it to end or write elsewhere"
            ) from None
        stale = _holder(handle)
        if stale:
            logger.warning("%s: taking over the lock of %s, which has ended", folder, _describe(stale))
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": command,
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(record))
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            handle.write("{}")  # no holder: ended cleanly (the flock goes with the handle)
