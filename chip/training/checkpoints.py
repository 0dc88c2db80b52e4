"""Checkpoints: which one ``--resume_from_checkpoint`` names (refusing one a kill left half-written),
and saving one when the user presses Ctrl-C."""

from __future__ import annotations

import json
import logging
import signal
import threading
from pathlib import Path

from transformers import TrainerCallback

from chip.errors import ConfigError
from chip.training.config import ChipConfig
from chip.training.distributed import on_any_process

logger = logging.getLogger("chip")

RESUME_LAST = ("last", "latest", "true")  # --resume_from_checkpoint values meaning "newest complete one"


def resolve_resume_checkpoint(config: ChipConfig) -> str | None:
    """The folder ``--resume_from_checkpoint`` names, or for ``last`` the newest complete one in output_dir.

    ``Trainer`` writes a checkpoint's files in place, ``trainer_state.json`` last, so a run killed
    while saving leaves a folder with weights but no (or half a) state file; resuming from it would
    fail or load torn files. ``last`` skips such folders; an explicit incomplete one is refused.
    ``last`` with no checkpoint yet starts at step 0, so one command serves the first start and
    every restart of a preemptible job.
    """
    value = config.resume_from_checkpoint
    if value is None or value.lower() in ("", "false", "none"):
        return None
    if value.lower() in RESUME_LAST:
        folders = sorted(Path(config.output_dir).glob("checkpoint-*"), key=_checkpoint_step)
        complete = [folder for folder in folders if _complete_checkpoint(folder)]
        newest = _checkpoint_step(complete[-1]) if complete else -1
        torn = [folder.name for folder in folders if _checkpoint_step(folder) > newest]
        if torn:
            logger.warning("ignoring incomplete checkpoint(s) %s (killed while saving?)", ", ".join(torn))
        if not complete:
            logger.info("no complete checkpoint in %s: starting from step 0", config.output_dir)
            return None
        logger.info("resuming from %s", complete[-1])
        return str(complete[-1])
    folder = Path(value)
    if not folder.is_dir():
        raise ConfigError(f"--resume_from_checkpoint {value}: no such checkpoint folder")
    if not _complete_checkpoint(folder):
        raise ConfigError(
            f"--resume_from_checkpoint {value}: incomplete checkpoint (no readable trainer_state.json; the run was "
            "probably killed while saving it); pass an earlier checkpoint or `--resume_from_checkpoint last`"
        )
    return str(folder)


def _checkpoint_step(folder: Path) -> int:
    suffix = folder.name.rpartition("-")[2]
    return int(suffix) if suffix.isdigit() else -1


def _complete_checkpoint(folder: Path) -> bool:
    try:
        state = json.loads((folder / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(state, dict) and "global_step" in state


class StopOnInterrupt(TrainerCallback):
    """Ctrl-C finishes the current step, saves a checkpoint and stops; a second Ctrl-C stops at once.

    Use as a context manager around ``trainer.train()`` (it installs the SIGINT handler there);
    `interrupted` then says whether the run ended early.
    """

    def __init__(self) -> None:
        self.interrupted = False
        self._previous = None

    def __enter__(self) -> StopOnInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, *exc_info) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _on_sigint(self, signum, frame) -> None:
        if self.interrupted:
            raise KeyboardInterrupt
        self.interrupted = True
        logger.warning("interrupted: finishing this step and saving a checkpoint (Ctrl-C again to stop now)")

    def on_step_end(self, args, state, control, **kwargs):
        if on_any_process(self.interrupted, args.device):
            control.should_save = True
            control.should_training_stop = True
        return control
