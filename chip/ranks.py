"""One command's work shared over the processes of `accelerate launch`, and their parts merged.

    accelerate launch --num_processes 8 -m chip eval --bench pope --model M --questions Q ...

`chip data precompute`, `chip eval --model` and `chip pairs` run unchanged in one process. Under
`accelerate launch` every process takes the work units whose key (an example id) hashes to its
rank (`Ranks.owns`): the split depends on the ids alone, not on the order rows were read. A JSON
Lines output is written by each process to a part of its own (``FILE.part-RANK-of-COUNT``,
appended as each batch ends) and the main process merges the parts into the file one process
writes, rows in the order of the work list (`merge_parts`). A restart, with any number of
processes, first folds the parts a killed run left into the file, so nothing is done twice.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from chip.errors import ConfigError, DataError

if TYPE_CHECKING:
    import torch

PART = ".part-"  # FILE.part-RANK-of-COUNT


@dataclass(frozen=True)
class Ranks:
    """This process's place in the launch: ``index`` of ``count`` processes (0 of 1 without one)."""

    index: int = 0
    count: int = 1

    @property
    def is_main(self) -> bool:
        return self.index == 0

    def owns(self, key: str) -> bool:
        """Whether the unit named ``key`` is this process's to do."""
        return share_of(key, self.count) == self.index

    def wait(self) -> None:
        """Every process reaches this point before any goes on (nothing to wait for alone)."""
        if self.count > 1:
            from accelerate import PartialState

            PartialState().wait_for_everyone()

    def part(self, path: Path) -> Path:
        """Where this process appends its share of ``path``; ``path`` itself when alone."""
        return path if self.count == 1 else path.with_name(f"{path.name}{PART}{self.index}-of-{self.count}")


def share_of(key: str, count: int) -> int:
    """The process (0..count-1) that a unit belongs to: a hash of its key, the same on every machine."""
    digest = hashlib.blake2b(str(key).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % count


def launched() -> bool:
    """Whether this process is one of several started by `accelerate launch` (or torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _launch_state():
    """accelerate's state of this launched process, the process group joined on first use."""
    import torch  # here, so that scoring answers (chip eval without --model) never imports torch
    from accelerate import PartialState

    # Without a GPU accelerate joins no process group unless told the processes are CPU ones: every
    # rank would then see itself as the only one and do all the work.
    return PartialState(cpu=not torch.cuda.is_available())


def current_ranks() -> Ranks:
    """This process's `Ranks`, joining the launch's process group on first use."""
    if not launched():
        return Ranks()
    state = _launch_state()
    if state.num_processes <= 1:
        raise ConfigError(
            f"this process was launched as one of {os.environ['WORLD_SIZE']} but joined no process group "
            "(CPU processes: chip data precompute needs --use_cpu true)"
        )
    return Ranks(state.process_index, state.num_processes)


def default_device() -> torch.device:
    """The device of this process: its own GPU under a launch, else cuda when there is one, else cpu."""
    import torch

    if launched():
        return _launch_state().device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def part_files(path: Path) -> list[Path]:
    """The parts of ``path`` on disk, from this launch or an earlier one with another process count."""
    return sorted(path.parent.glob(glob.escape(path.name) + PART + "*"))


def _lines(path: Path, id_field: str, drop_torn: bool) -> list[tuple[str, str]]:
    """(id, line) of every row of ``path``; a last line cut by a kill is dropped."""
    text = path.read_text(encoding="utf-8")
    rows = []
    lines = text.splitlines(keepends=True)
    for number, line in enumerate(lines, start=1):
        if not line.endswith("\n") and drop_torn:
            break
        if not line.strip():
            continue
        try:
            key = json.loads(line)[id_field]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise DataError(
                f"{path}:{number}: no readable {id_field!r} ({err}); cannot merge this file"
            ) from err
        rows.append((str(key), line if line.endswith("\n") else line + "\n"))
    return rows


def merge_parts(path: Path, order: Sequence[str], id_field: str) -> None:
    """Fold every part of ``path`` into ``path``: rows in the order of ``order`` (ids not in it after
    them, as found), each id once (a merge killed after its rename but before removing the parts
    leaves rows twice). Written to ``path.tmp`` and renamed, then the parts are removed; nothing
    is rewritten when there are no parts and the rows are already in order."""
    parts = part_files(path)
    rows = _lines(path, id_field, drop_torn=True) if path.is_file() else []
    for part in parts:
        rows += _lines(part, id_field, drop_torn=True)
    position = {key: number for number, key in enumerate(order)}
    unique: dict[str, str] = {}
    for key, line in rows:
        unique.setdefault(key, line)
    merged = sorted(unique.items(), key=lambda row: position.get(row[0], len(position)))
    if not parts and [line for _, line in merged] == [line for _, line in rows]:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        handle.writelines(line for _, line in merged)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    for part in parts:
        part.unlink()
