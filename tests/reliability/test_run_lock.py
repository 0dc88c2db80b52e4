"""One run per folder: a second `chip train`, `chip data precompute`, `chip eval --model` or `chip pairs`
writing where a live process writes is refused at once, naming that process; a lock left by a
killed process is taken over.

For training the live holder is a real ``python -m chip train`` process (then killed with SIGKILL,
after which the next run takes the folder over). For the other commands the test itself holds the
folder through `chip.runlock` as the command does: ``flock`` conflicts between two opens of the
file in one process as between two processes, and a second interpreter would spend seconds
importing torch.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from chip.runlock import LOCK_FILE, run_lock
from tests.reliability.conftest import Run, assert_one_line_error, log_history
from tests.train_helpers import train_args, write_pairs

WAIT_S = 300  # the child imports torch and transformers on a shared machine


def wait_for_holder(lock: Path, child: subprocess.Popen) -> dict:
    """The lock file's record once ``child`` holds it."""
    deadline = time.monotonic() + WAIT_S
    while True:
        assert child.poll() is None, f"the holder ended (code {child.returncode}) before taking the lock"
        assert time.monotonic() < deadline, "timed out waiting for the holder to take the lock"
        try:
            record = json.loads(lock.read_text())
        except (OSError, ValueError):
            record = {}
        if record.get("pid") == child.pid:
            return record
        time.sleep(0.05)


def test_second_train_into_a_live_runs_folder_is_refused_and_a_killed_runs_lock_taken_over(
    tiny_model: Callable[..., Path],
    tmp_path: Path,
    run_chip: Callable[..., Run],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A real `chip train` of many steps holds ``out``; a second one into ``out`` stops at once with
    the first one's pid and host, before loading a model. After the first is SIGKILLed (no chance to
    clean up), the next run takes the folder over, logs whose lock it was, and trains."""
    caplog.set_level(logging.WARNING, logger="chip")
    model, data = tiny_model("llava"), write_pairs(tmp_path / "data", n=4)
    out = tmp_path / "out"
    argv = train_args(model, data, out, max_steps=100000, per_device_train_batch_size=2)
    with (tmp_path / "first.log").open("wb") as sink:
        first = subprocess.Popen([sys.executable, "-m", "chip", "train", *argv], stdout=sink, stderr=sink)
    try:
        holder = wait_for_holder(out / LOCK_FILE, first)
        started = time.monotonic()
        message = assert_one_line_error(run_chip(["train", *argv]))
        assert time.monotonic() - started < 5  # refused at once, not after loading the model
        assert message == (
            f"{out} is in use by `chip train` (pid {first.pid} on {socket.gethostname()}, "
            f"started {holder['started']}); wait for it to end or write elsewhere"
        )
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()

    short = train_args(model, data, out, max_steps=2, per_device_train_batch_size=2)
    assert run_chip(["train", *short]).code == 0
    assert (
        f"{out}: taking over the lock of `chip train` (pid {first.pid} on {socket.gethostname()}, "
        in caplog.text
    )
    assert [entry["step"] for entry in log_history(out)] == [1, 2]
    assert json.loads((out / LOCK_FILE).read_text()) == {}  # released: the next run finds no holder


@pytest.mark.parametrize("command", ["data precompute", "eval", "pairs"])
def test_other_commands_into_a_held_folder_are_refused(
    command: str, tiny_model: Callable[..., Path], tmp_path: Path, run_chip: Callable[..., Run]
) -> None:
    """Each command is refused before it loads a model or writes a byte into the held folder (eval
    holds its answers file: several benchmarks may be answered into one folder at once)."""
    model, data = tiny_model("llava"), write_pairs(tmp_path / "data", n=2)
    target = tmp_path / "target"
    lock_name = LOCK_FILE
    if command == "data precompute":
        argv = ["data", "precompute", *train_args(model, data, tmp_path / "unused", reference_cache=target)]
    elif command == "eval":
        questions = tmp_path / "pope.jsonl"
        questions.write_text(
            json.dumps({"question_id": 0, "image": "img0.png", "text": "Cat?", "label": "yes"}) + "\n"
        )
        argv = [
            "eval",
            "--bench",
            "pope",
            "--model",
            model,
            "--questions",
            questions,
            "--image-root",
            data.parent,
        ]
        argv += ["--output", target / "pope.json"]
        command, lock_name = "eval --bench pope", ".pope.answers.jsonl.lock"
    else:
        objects = tmp_path / "objects.json"
        objects.write_text(json.dumps({"img0.png": ["cat"], "img1.png": ["dog"]}))
        argv = ["pairs", "--model", model, "--images", data.parent, "--objects", objects, "--output", target]
    with run_lock(target, command, lock_name):
        before = sorted(target.iterdir())
        message = assert_one_line_error(run_chip(argv))
        assert sorted(target.iterdir()) == before
    assert message.startswith(
        f"{target} is in use by `chip {command}` (pid {os.getpid()} on {socket.gethostname()}, "
    )
