"""User-facing errors: raised anywhere, printed by the CLI as one line without a traceback."""

from __future__ import annotations

from typing import Literal, get_args, get_origin, get_type_hints


class ChipError(Exception):
    """An expected failure whose message is complete enough to act on (file, row, field, reason)."""

    exit_code = 1


class DataError(ChipError):
    """A dataset row or file cannot be used."""


class ConfigError(ChipError):
    """A configuration value is invalid or inconsistent."""

    exit_code = 2


def check_choices(config: object) -> None:
    """Raise `ConfigError` when a ``Literal``-typed field of ``config``'s class holds another value.

    The fields and their allowed values are read from the class's type hints, so a new ``Literal``
    field is checked without being listed anywhere, and its values are written down once.
    """
    for name, hint in get_type_hints(type(config)).items():
        allowed = get_args(hint) if get_origin(hint) is Literal else ()
        value = getattr(config, name)
        if allowed and value not in allowed:
            raise ConfigError(f"{name} must be one of {', '.join(map(str, allowed))}; got {value!r}")


class Interrupted(ChipError):
    """The user stopped the run (Ctrl-C) after a checkpoint was saved; the message says how to resume."""

    exit_code = 130
