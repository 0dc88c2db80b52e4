"""What `chip train` can refuse before importing torch: unknown fields, numbers outside their range,
values outside their choices, an empty or finished --output_dir.

Importing `transformers.TrainingArguments` alone takes seconds (torch, peft), so a typo answered
after it costs the user 10–30 s. This module reads the field declarations from the source files
(`chip.training.config.ChipConfig`, `chip.losses.ChipLossConfig`, transformers' `TrainingArguments`)
without importing them, and checks the YAML file and the flags against them in well under a second.
The full parse that follows (`chip.training.arguments.parse_config`) checks everything again, so
a declaration this reader cannot interpret is simply left to it.
"""

from __future__ import annotations

import ast
import importlib.util
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from chip.errors import ConfigError, bounds_message, did_you_mean, within
from chip.training.bounds import TRAINING_ARGUMENT_BOUNDS

CHIP = Path(__file__).resolve().parent.parent
# (source file, class) of each declaration `chip train` parses, and the files its Literal aliases live in
DECLARATIONS = ((CHIP / "training" / "config.py", "ChipConfig"), (CHIP / "losses.py", "ChipLossConfig"))
ALIAS_FILES = (CHIP / "training" / "config.py", CHIP / "losses.py", CHIP / "corruption.py")
# flags of the command itself, not fields
COMMAND_FLAGS = ("config", "help", "help_all")
# what `chip train` leaves in --output_dir: the final model (or adapter), its state, its checkpoints
EARLIER_RUN = (
    "trainer_state.json",
    "*.safetensors",
    "pytorch_model*.bin",
    "adapter_config.json",
    "checkpoint-*",
)


@dataclass(frozen=True)
class Declared:
    """A field as its declaration states it: the annotation's text, its range, its allowed values."""

    annotation: str
    bounds: str | None = None
    choices: tuple[str, ...] | None = None

    @property
    def kind(self) -> type | None:
        """int or float for a numeric field (optional or not), else None."""
        base = self.annotation.replace(" | None", "").replace("Optional[", "").rstrip("]")
        return {"int": int, "float": float}.get(base)


@cache
def declared_fields() -> dict[str, Declared]:
    """Every field `chip train` accepts, read from the declarations' source (see the module doc)."""
    aliases: dict[str, tuple[str, ...]] = {}
    for path in ALIAS_FILES:
        for node in ast.parse(path.read_text()).body:
            if (
                isinstance(node, ast.Assign)
                and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
            ):
                if (choices := _literal(node.value)) is not None:
                    aliases[node.targets[0].id] = choices
    found: dict[str, Declared] = {}
    transformers = importlib.util.find_spec("transformers")
    sources = list(DECLARATIONS)
    if transformers is not None and transformers.submodule_search_locations:
        sources.append(
            (Path(transformers.submodule_search_locations[0]) / "training_args.py", "TrainingArguments")
        )
    for path, name in sources:
        for field_name, node in _class_fields(path, name):
            bounds = _keyword(node.value, "bounds") or TRAINING_ARGUMENT_BOUNDS.get(field_name)
            annotation = ast.unparse(node.annotation)
            choices = _literal(node.annotation) or aliases.get(annotation)
            found.setdefault(field_name, Declared(annotation, bounds, choices))
    return found


def _class_fields(path: Path, name: str) -> list[tuple[str, ast.AnnAssign]]:
    if not path.exists():
        return []
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return [
                (item.target.id, item)
                for item in node.body
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
            ]
    return []


def _literal(node: ast.expr) -> tuple[str, ...] | None:
    """The values of ``Literal["a", "b"]``, else None."""
    if isinstance(node, ast.Subscript) and ast.unparse(node.value) in ("Literal", "typing.Literal"):
        items = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        if all(isinstance(item, ast.Constant) for item in items):
            return tuple(str(item.value) for item in items)  # type: ignore[attr-defined]
    return None


def _keyword(node: ast.expr | None, name: str) -> str | None:
    if isinstance(node, ast.Call):
        for keyword in node.keywords:
            if keyword.arg == name and isinstance(keyword.value, ast.Constant):
                return str(keyword.value.value)
    return None


def yaml_to_args(path: Path) -> list[str]:
    """A `--config` YAML file as ``--field value`` arguments; an unknown key is one line naming the file."""
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of field: value")
    known = declared_fields()
    args: list[str] = []
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"{path}: unknown field {key!r}{did_you_mean(str(key), known)}")
        if value is None:
            continue
        if isinstance(value, list):
            args += [f"--{key}", *map(str, value)]
        elif isinstance(value, dict):
            args += [f"--{key}", json.dumps(value)]
        else:
            args += [f"--{key}", str(value).lower() if isinstance(value, bool) else str(value)]
    return args


def split_config(argv: list[str]) -> tuple[list[str], list[str]]:
    """(the --config file's arguments, the rest of ``argv``): file values first, so flags override them."""
    rest = list(argv)
    if "--config" not in rest:
        return [], rest
    at = rest.index("--config")
    if at + 1 >= len(rest):
        raise ConfigError("--config needs a YAML file")
    path = Path(rest[at + 1])
    del rest[at : at + 2]
    return yaml_to_args(path), rest


def flag_values(args: list[str]) -> list[tuple[str, list[str]]]:
    """``--field v1 v2 --other=v`` -> [(field, [v1, v2]), (other, [v])]; a value may be a negative number."""
    pairs: list[tuple[str, list[str]]] = []
    for arg in args:
        if arg.startswith("--"):
            name, sep, value = arg[2:].partition("=")
            pairs.append((name.replace("-", "_"), [value] if sep else []))
        elif pairs:
            pairs[-1][1].append(arg)
        else:
            raise ConfigError(f"unexpected argument {arg!r}: settings are --field value")
    return pairs


def check_argv(argv: list[str], command: str = "train") -> None:
    """Every mistake this module can see in ``argv`` (and its --config file), as one `ConfigError` line."""
    file_args, rest = split_config(argv)
    known = declared_fields()
    values: dict[str, list[str]] = {}
    for name, given in flag_values(file_args + rest):
        if name in COMMAND_FLAGS:
            continue
        negated = name.startswith("no_") and known.get(name[3:], Declared("")).annotation == "bool"
        if name not in known and not negated:
            flags = [*known, *COMMAND_FLAGS]
            raise ConfigError(
                f"unknown argument --{name}{did_you_mean(name, flags).replace('mean ', 'mean --')}"
            )
        values[name] = given
    for name, given in values.items():
        if name in known:
            check_value(name, known[name], given)
    output_dir = values.get("output_dir")
    if command == "train" and output_dir is not None:
        if not output_dir or not output_dir[0].strip():
            raise ConfigError("--output_dir is empty: name the folder for the trained model")
        if not _truthy(values.get("overwrite_output_dir")) and not _resuming(
            values.get("resume_from_checkpoint")
        ):
            check_not_finished(Path(output_dir[0]))


def check_value(name: str, declared: Declared, given: list[str]) -> None:
    """One numeric or choice field's values against its declaration."""
    for text in given:
        if declared.choices is not None and text not in declared.choices:
            raise ConfigError(f"--{name} must be one of {', '.join(declared.choices)}; got {text!r}")
        if declared.kind is None or text in ("None", "none"):
            continue
        try:
            number: Any = declared.kind(text)
        except ValueError:
            kind = "a whole number" if declared.kind is int else "a number"
            raise ConfigError(f"--{name} must be {kind}; got {text!r}") from None
        if declared.bounds and not within(number, declared.bounds):
            raise ConfigError(bounds_message(f"--{name}", declared.bounds, text))


def _truthy(given: list[str] | None) -> bool:
    return given is not None and (not given or given[0].lower() in ("true", "1", "yes"))


def _resuming(given: list[str] | None) -> bool:
    return bool(given) and given[0].lower() not in ("", "false", "none")  # type: ignore[index]


def check_not_finished(output_dir: Path) -> None:
    """Refuse an output folder that holds an earlier run's model or checkpoints: a new run would
    replace them without a word."""
    if not output_dir.is_dir():
        return
    found = sorted(
        path.name + ("/" if path.is_dir() else "")
        for pattern in EARLIER_RUN
        for path in output_dir.glob(pattern)
    )
    if found:
        shown = ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
        raise ConfigError(
            f"--output_dir {output_dir} holds an earlier run ({shown}): pass --overwrite_output_dir to "
            "replace it, or --resume_from_checkpoint last to continue it"
        )
