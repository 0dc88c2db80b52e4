"""User-facing errors: raised anywhere, printed by the CLI as one line without a traceback."""

from __future__ import annotations


class ChipError(Exception):
    """An expected failure whose message is complete enough to act on (file, row, field, reason)."""

    exit_code = 1


class DataError(ChipError):
    """A dataset row or file cannot be used."""


class ConfigError(ChipError):
    """A configuration value is invalid or inconsistent."""

    exit_code = 2
