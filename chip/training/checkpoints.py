"""Checkpoints: which one ``--resume_from_checkpoint`` names (refusing one a kill left half-written),
saving one when the user presses Ctrl-C, and what a full disk while saving leaves behind."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from transformers import TrainerCallback

from chip.errors import ConfigError
from chip.files import DiskFullError, disk_full_errors, disk_full_message, is_disk_full
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
        complete = [folder for folder in folders if is_complete_checkpoint(folder, config.world_size)]
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
    if not is_complete_checkpoint(folder, config.world_size):
        raise ConfigError(
            f"--resume_from_checkpoint {value}: incomplete checkpoint (no readable trainer_state.json, or a "
            "rank's RNG state missing or cut short; the run was probably killed while saving it); pass an "
            "earlier checkpoint or `--resume_from_checkpoint last`"
        )
    return str(folder)


def _checkpoint_step(folder: Path) -> int:
    suffix = folder.name.rpartition("-")[2]
    return int(suffix) if suffix.isdigit() else -1


def is_complete_checkpoint(folder: str | Path, world_size: int = 1) -> bool:
    """Whether ``folder`` holds a whole checkpoint: a readable ``trainer_state.json`` and every
    rank's RNG state whole. In a run of several processes each rank writes its own
    ``rng_state_K.pth`` and only rank 0 the state file, with no barrier between them, so a kill
    right after the state file can leave another rank's file missing or cut short (which resuming
    would fail to unpickle)."""
    folder = Path(folder)
    try:
        state = json.loads((folder / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    if not (isinstance(state, dict) and "global_step" in state):
        return False
    per_rank = list(folder.glob("rng_state_*.pth"))
    if per_rank and any(not (folder / f"rng_state_{rank}.pth").is_file() for rank in range(world_size)):
        return False
    return all(_whole_archive(path) for path in [*folder.glob("rng_state.pth"), *per_rank])


def _whole_archive(path: Path) -> bool:
    """Whether a ``torch.save`` file (a zip archive) is whole: readable directory and CRCs."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (OSError, zipfile.BadZipFile, EOFError):
        return False


FINAL_STAGING = ".final-partial"  # the final save is written here, then moved into output_dir


@contextmanager
def checkpoints_or_one_line(output_dir: str | Path) -> Iterator[None]:
    """Around ``trainer.train()``: a disk that fills while a checkpoint is written stops the run with one
    `DiskFullError` line; the torn checkpoint is removed (it would only hold space) and the last
    complete one stays for ``--resume_from_checkpoint last``."""
    try:
        yield
    except Exception as err:  # boundary: Trainer's checkpoint writes; only a full disk is converted
        if not is_disk_full(err, output_dir):
            raise
        raise _checkpoint_disk_full(Path(output_dir)) from None


def _checkpoint_disk_full(output_dir: Path) -> DiskFullError:
    folders = sorted(output_dir.glob("checkpoint-*"), key=_checkpoint_step)
    complete = [folder for folder in folders if is_complete_checkpoint(folder)]
    newest = _checkpoint_step(complete[-1]) if complete else -1
    torn = [folder for folder in folders if _checkpoint_step(folder) > newest]
    for folder in torn:
        shutil.rmtree(folder, ignore_errors=True)
    needed = folder_bytes(complete[-1]) if complete else None
    then = (
        f"{complete[-1]} is complete: free some space and add --resume_from_checkpoint last"
        if complete
        else "no checkpoint is complete yet: free some space and start again"
    )
    return DiskFullError(disk_full_message(torn[-1] if torn else output_dir, needed, "checkpoint", then))


def folder_bytes(folder: Path) -> int:
    """Total size of the files under ``folder``."""
    return sum(file.stat().st_size for file in folder.rglob("*") if file.is_file())


def save_final(trainer, output_dir: str | Path) -> None:
    """The final model and ``trainer_state.json``, written to ``output_dir/.final-partial`` and moved into
    ``output_dir`` only once all of it is on disk, so a full disk leaves the previous final save (and
    every checkpoint) as it was, plus one `DiskFullError` line."""
    output = Path(output_dir)
    staging = output / FINAL_STAGING
    with disk_full_errors(output, _weights_bytes(trainer.model), "final model"):
        try:
            trainer.save_model(str(staging))
            if trainer.args.should_save:
                trainer.state.save_to_json(str(staging / "trainer_state.json"))
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    if not trainer.args.should_save:
        return
    for item in staging.iterdir():
        target = output / item.name
        if item.is_dir() and target.is_dir():
            shutil.rmtree(target)
        os.replace(item, target)
    staging.rmdir()


def _weights_bytes(model) -> int:
    """Bytes of the weights a final save writes: the trainable ones of a LoRA model, else all."""
    trainable_only = hasattr(model, "peft_config")
    return sum(
        param.numel() * param.element_size()
        for param in model.parameters()
        if param.requires_grad or not trainable_only
    )


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
