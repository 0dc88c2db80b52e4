"""User-facing errors: raised anywhere, printed by the CLI as one line without a traceback."""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Iterable, Mapping
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


# A range as a setting declares it: "> 0", ">= 1", "[0, 1)", "[0, 999]", alternatives joined by " or "
# ("-1 or >= 1"), a bare number meaning that value alone.
_INTERVAL = re.compile(r"^([\[(])\s*(\S+)\s*,\s*(\S+)\s*([\])])$")
_COMPARISON = re.compile(r"^(>=|>|<=|<)\s*(\S+)$")


def within(value: float, bounds: str) -> bool:
    """Whether ``value`` lies in ``bounds`` (the notation above)."""
    for part in bounds.split(" or "):
        part = part.strip()
        if interval := _INTERVAL.match(part):
            low, high = float(interval[2]), float(interval[3])
            above = value >= low if interval[1] == "[" else value > low
            below = value <= high if interval[4] == "]" else value < high
            if above and below:
                return True
        elif comparison := _COMPARISON.match(part):
            limit = float(comparison[2])
            if {">": value > limit, ">=": value >= limit, "<": value < limit, "<=": value <= limit}[
                comparison[1]
            ]:
                return True
        elif value == float(part):
            return True
    return False


def bounds_message(name: str, bounds: str, value: object) -> str:
    """The one line for a value outside its range."""
    inside = f"in {bounds}" if bounds[0] in "[(" and " or " not in bounds else bounds
    return f"{name} must be {inside}; got {value}"


def check_bounds(config: object, extra: Mapping[str, str] | None = None) -> None:
    """Raise `ConfigError` when a numeric field of ``config`` is outside the range its declaration
    gives (``bounds`` metadata) or ``extra`` names (for fields declared by other libraries)."""
    for spec in dataclasses.fields(config):  # type: ignore[arg-type]
        bounds = spec.metadata.get("bounds") or (extra or {}).get(spec.name)
        value = getattr(config, spec.name)
        if (
            bounds
            and isinstance(value, (int, float))
            and not isinstance(value, bool)
            and not within(value, bounds)
        ):
            raise ConfigError(bounds_message(spec.name, bounds, value))


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`` (did you mean learning_rate?)`` for a name close to a known one, else empty."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.75)
    return f" (did you mean {close[0]}?)" if close else ""


class Interrupted(ChipError):
    """The user stopped the run (Ctrl-C) after a checkpoint was saved; the message says how to resume."""

    exit_code = 130
