"""Shared pieces of the reliability tests (issue 6): the CLI as a user runs it, and small datasets.

``run_chip(argv)`` runs `chip` in-process through `chip.cli.main`, exactly the path of the console
script, and returns the exit code with what reached stdout and stderr, so a test can assert that a
failure is one ``chip: error:`` line and never a traceback.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from chip.cli import main as chip_main


@dataclass
class Run:
    """What a user sees from one `chip` invocation."""

    code: int
    out: str
    err: str

    @property
    def error_lines(self) -> list[str]:
        """The `chip: error:` lines printed by `chip.cli` for a `ChipError`."""
        return [line for line in self.err.splitlines() if line.startswith("chip: error: ")]


@pytest.fixture
def run_chip(capsys: pytest.CaptureFixture) -> Callable[..., Run]:
    """``run_chip(["train", ...]) -> Run``: one in-process `chip` command, output captured."""

    def run(argv: list[str]) -> Run:
        capsys.readouterr()  # drop anything printed before this command
        code = chip_main([str(arg) for arg in argv])
        out, err = capsys.readouterr()
        return Run(code, out, err)

    return run


def assert_one_line_error(run: Run, code: int = 1) -> str:
    """The command failed with exit ``code``, one `chip: error:` line and no traceback; returns the message."""
    assert run.code == code, run.err[-2000:]
    assert "Traceback" not in run.out + run.err
    assert len(run.error_lines) == 1, run.err[-2000:]
    return run.error_lines[0].removeprefix("chip: error: ")


def log_history(output_dir: Path) -> list[dict]:
    """The training log entries (those with a loss) of a finished run."""
    state = json.loads((output_dir / "trainer_state.json").read_text())
    return [entry for entry in state["log_history"] if "loss" in entry]
