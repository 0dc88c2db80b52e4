"""The model layer's one-line error (printed by the CLI without a traceback, like every `ChipError`)."""

from __future__ import annotations

from chip.errors import ChipError


class ModelError(ChipError):
    """A model or its processor cannot run on this machine or on chip's inputs; names the model and why."""


def one_line(error: BaseException, limit: int = 300) -> str:
    """``error``'s message on one line, cut to ``limit`` characters."""
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
