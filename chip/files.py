"""Writing files so that a full disk or a kill never leaves half a file that a later run trusts.

Every file chip writes goes through one of three shapes:

- a whole file (`write_atomic`, `write_text_atomic`, `write_json_atomic`): written to a temporary
  file in the same folder, fsynced, then renamed over the real name (``os.replace``), so readers
  see the old file or the new one; on any failure the temporary file is removed;
- a line log (`append_text`: answers, samples, judgments): the file is cut back to its size before
  the write when the write fails, so it always ends with a complete line;
- a folder written by code chip does not own (`Trainer` checkpoints, ``save_pretrained``): see
  `disk_full_errors`, used around those writes by their callers.

A full disk (``ENOSPC``, or a quota: ``EDQUOT``) becomes one `DiskFullError` line naming the path,
the space the write needed and the space left, instead of a traceback.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from chip.errors import ChipError

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
DISK_FULL_TEXT = ("No space left on device", "Disk quota exceeded")  # strerror, in wrapped errors
RETRY = "free some space and run the same command again (finished work is kept)"
NEARLY_FULL = 1024 * 1024  # bytes left below which a write error without an errno means a full disk


class DiskFullError(ChipError):
    """The disk (or quota) filled up while chip wrote a file; nothing complete was replaced."""


def is_disk_full(err: BaseException, path: str | Path | None = None) -> bool:
    """Whether ``err`` (or an error it was raised from) is a full disk or an exceeded quota.

    Some writers drop the errno: torch's zip writer raises a bare ``RuntimeError`` ("unexpected
    pos ..."), safetensors wraps it in its own error. Given the ``path`` being written, an
    ``OSError`` or ``RuntimeError`` counts as a full disk when less than `NEARLY_FULL` is left there.
    """
    chain = []
    while err is not None and err not in chain:
        chain.append(err)
        err = err.__cause__ or err.__context__
    for error in chain:
        if isinstance(error, OSError) and error.errno in DISK_FULL:
            return True
        if any(text in str(error) for text in DISK_FULL_TEXT):
            return True
    write_error = any(isinstance(error, (OSError, RuntimeError)) for error in chain)
    return write_error and path is not None and free_bytes(path) < NEARLY_FULL


def human_bytes(count: float) -> str:
    """``1536`` -> ``'1.5 KB'`` (powers of 1024; what `df -h` shows)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(count) < 1024 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def free_bytes(path: str | Path) -> int:
    """Bytes free on the file system holding ``path`` (its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def disk_full_message(path: str | Path, needed: int | None, what: str = "", then: str = RETRY) -> str:
    """``disk full writing PATH (WHAT): needs about N, M free; THEN`` for a `DiskFullError`."""
    need = f"needs about {human_bytes(needed)}, " if needed else ""
    label = f" ({what})" if what else ""
    return f"disk full writing {path}{label}: {need}{human_bytes(free_bytes(path))} free; {then}"


@contextmanager
def disk_full_errors(path: str | Path, needed: int | None = None, what: str = "") -> Iterator[None]:
    """Turn a full disk inside the block into a one-line `DiskFullError` about ``path``."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as err:  # boundary: any library's write error; only a full disk is converted
        if not is_disk_full(err, path):
            raise
        raise DiskFullError(disk_full_message(path, needed, what)) from None


def write_atomic(path: str | Path, write: Callable[[Path], None], needed: int | None = None) -> None:
    """Call ``write(tmp)`` to write a temporary file beside ``path``, fsync it and rename it to ``path``.

    ``needed`` (bytes, when known) goes into the message of a full disk. The temporary file is
    removed whatever goes wrong, so it never fills the disk further or is mistaken for a result.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Unique per process and thread (writers run in threads); created with the umask's mode, like
    # the file it becomes (mkstemp would make it private).
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    os.close(os.open(tmp, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o666))
    with disk_full_errors(path, needed):  # outside the cleanup, so the space left is counted without tmp
        try:
            write(tmp)
            with tmp.open("rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see `write_atomic`)."""
    write_atomic(path, lambda tmp: tmp.write_bytes(data), needed=len(data))


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (see `write_atomic`)."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, data: object) -> None:
    """Write ``data`` as indented JSON, atomically."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False, ensure_ascii=False) + "\n")


def append_text(path: str | Path, text: str) -> None:
    """Append ``text`` (whole lines) to ``path`` and fsync; a failed write is cut back off the file.

    The file then ends where it ended before, with a complete line, so a resumed run re-does only
    what this write held.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode("utf-8")
    with disk_full_errors(path, len(data)), path.open("ab", buffering=0) as handle:
        size = handle.seek(0, os.SEEK_END)
        try:
            written = 0
            while written < len(data):  # an unbuffered write may take only part of the bytes
                written += handle.write(data[written:])
            os.fsync(handle.fileno())
        except BaseException:
            handle.truncate(size)
            raise
