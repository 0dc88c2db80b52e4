"""A real small file system for full-disk tests: a tmpfs mounted in the test's folder and filled up.

``small_disk`` mounts a 64 MB tmpfs (the test needs root or CAP_SYS_ADMIN, and is skipped with the
reason where mounting is not allowed); ``disk.leave(n)`` fills it with a filler file until about
``n`` bytes stay free, ``disk.free()`` deletes the filler, as a user would after the error.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

DISK_SIZE = 64 * 1024 * 1024
PAGE = 4096  # tmpfs hands out whole pages


@dataclass
class SmallDisk:
    root: Path

    @property
    def filler(self) -> Path:
        return self.root / "filler.bin"

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

    def leave(self, free: int) -> None:
        """Grow the filler until ``free`` bytes (rounded down to a page) are left."""
        grow = self.free_bytes() - free // PAGE * PAGE
        with self.filler.open("ab") as handle:
            handle.write(b"\0" * max(grow, 0))
        assert abs(self.free_bytes() - free) <= PAGE, (self.free_bytes(), free)

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    root = tmp_path / "disk"
    root.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_SIZE}", "tmpfs", str(root)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield SmallDisk(root)
    finally:
        subprocess.run(["umount", "--lazy", str(root)], check=True)
