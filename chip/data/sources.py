"""What a `dataset` argument names: a local file or folder, a hub id, or a `load_dataset` spec.

    open_dataset("data/train.jsonl")                       # a file, a folder of shards, save_to_disk
    open_dataset("openbmb/RLAIF-V-Dataset")                # a hub id (not an existing local path)
    open_dataset("name=parquet,data_files=data/*.parquet") # `datasets.load_dataset` arguments
    open_dataset('{"name": "openbmb/RLAIF-V-Dataset", "split": "train"}')  # the same as JSON/YAML

A local path always wins, so a folder that happens to be called `owner/name` is read from disk.
A hub id or spec goes through `datasets.load_dataset` without streaming: the dataset is
downloaded once into the Hugging Face cache (arrow files, memory-mapped), so a check and the
training run that follows read the same local copy, and every row can be counted and checked.
A hub id is first looked up with one short request (no retries), so that an offline machine or
a misspelt name is told so at once instead of after `load_dataset`'s retries; with
`HF_HUB_OFFLINE=1` the lookup is skipped and the cached copy is used. Any failure (offline,
unknown name, gated) is one line naming what to do instead.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from chip.data.readers import (
    RawRecord,
    download_hint,
    folder_splits,
    read_loaded_dataset,
    read_records,
    read_rows,
)
from chip.errors import DataError

# `load_dataset` arguments a spec may give; `name` is the hub id or builder (`parquet`, `json`...).
SPEC_KEYS = ("name", "config", "split", "data_files", "data_dir", "revision")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_DATA_SUFFIXES = (".jsonl", ".json", ".parquet", ".arrow", ".csv")
# Seconds the hub lookup may take before the hub counts as unreachable.
HUB_LOOKUP_TIMEOUT = 10
# `key=value` pairs separated by commas; a comma inside a value (a list of files) is kept.
_SPEC_PAIR = re.compile(r",\s*(?=\w+\s*=)")


@dataclass
class DatasetSource:
    """An opened dataset: its records, how to name it in messages, and where relative images live."""

    name: str  # the path or hub id as given, used in every message
    total: int
    records: Iterator[RawRecord]
    default_root: Path  # folder image paths are relative to when no image_root is given
    description: str = ""  # what was read: "split train, 4 .parquet file(s)", "hub dataset"


def open_dataset(
    dataset: str | os.PathLike[str] | Mapping[str, Any] | Sequence[Mapping[str, Any]] | Any,
    split: str | None = None,
) -> DatasetSource:
    """Open a local dataset, or load a hub id / spec with `datasets.load_dataset` (see module doc).

    Rows already in memory are read too: a `datasets.Dataset` / `DatasetDict` or a list of dicts
    (their relative image paths are taken from the working directory).
    """
    loaded = sys.modules.get("datasets")  # a `datasets` object exists only if datasets is imported
    if loaded is not None and isinstance(dataset, (loaded.Dataset, loaded.DatasetDict)):
        name = f"{type(dataset).__name__} of {dataset.num_rows} rows"
        total, records, description = read_loaded_dataset(dataset, name, split)
        return DatasetSource(name, total, records, Path.cwd(), description)
    if isinstance(dataset, (list, tuple)):
        total, records = read_rows(dataset)
        return DatasetSource(f"list of {total} rows", total, records, Path.cwd())
    spec = parse_spec(dataset)
    if spec is not None and Path(str(spec["name"])).exists() and set(spec) <= {"name", "split"}:
        # `name=<local folder>,split=test`: a split of a local folder, read from disk
        return open_dataset(str(spec["name"]), spec.get("split") or split)
    if spec is None:
        path = Path(dataset)  # type: ignore[arg-type]
        total, records, description = read_records(path, split)
        root = path.resolve() if path.is_dir() else path.resolve().parent
        if path.is_dir() and ((path / "state.json").exists() or (path / "dataset_dict.json").exists()):
            root = path.resolve().parent  # a save_to_disk folder's images sit next to it
        return DatasetSource(str(path), total, records, root, description)
    return _open_hub(spec, split)


def local_splits(dataset: str | os.PathLike[str] | Mapping[str, Any]) -> list[str]:
    """The splits a local dataset folder holds (empty for a file, a hub id or a spec: not looked up)."""
    if parse_spec(dataset) is not None:
        return []
    return folder_splits(Path(dataset))  # type: ignore[arg-type]


def parse_spec(dataset: str | os.PathLike[str] | Mapping[str, Any]) -> dict[str, Any] | None:
    """The `load_dataset` arguments named by `dataset`, or None for a local path.

    A mapping or a `{...}` JSON/YAML string is a spec; so is `key=value,...`; so is `owner/name`
    when no such local path exists. Anything else is a local path (a missing one is reported by
    the reader, with a download hint).
    """
    if isinstance(dataset, Mapping):
        return _check_spec(dict(dataset), str(dict(dataset)))
    text = os.fspath(dataset)
    if Path(text).exists():
        return None
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            values = yaml.safe_load(stripped)
        except yaml.YAMLError as err:
            raise DataError(
                f"dataset spec {text!r} is not valid JSON/YAML: {str(err).splitlines()[0]}"
            ) from None
        if not isinstance(values, dict):
            raise DataError(f"dataset spec {text!r} must be a mapping of load_dataset arguments")
        return _check_spec(values, text)
    if re.match(r"^\s*\w+\s*=", stripped):
        values = {}
        for pair in _SPEC_PAIR.split(stripped):
            key, sep, value = pair.partition("=")
            if not sep:
                raise DataError(f"dataset spec {text!r}: {pair!r} is not key=value")
            values[key.strip()] = value.strip()
        if isinstance(values.get("data_files"), str) and "," in values["data_files"]:
            values["data_files"] = [item.strip() for item in values["data_files"].split(",")]
        return _check_spec(values, text)
    owner = stripped.split("/", 1)[0]
    if _HUB_ID.match(stripped) and not stripped.lower().endswith(_DATA_SUFFIXES) and not Path(owner).exists():
        return {"name": stripped}
    return None  # a local path (`data/rlhf-v` when `data/` exists), reported missing by the reader


def _check_spec(values: dict[str, Any], text: str) -> dict[str, Any]:
    unknown = sorted(set(values) - set(SPEC_KEYS))
    if unknown:
        raise DataError(
            f"dataset spec {text!r}: unknown key(s) {', '.join(unknown)}; keys are {', '.join(SPEC_KEYS)}"
        )
    if not values.get("name"):
        raise DataError(f"dataset spec {text!r} needs name= (a hub id, or a builder such as parquet or json)")
    return values


def _open_hub(spec: dict[str, Any], split: str | None) -> DatasetSource:
    import datasets

    name = str(spec["name"])
    split = spec.get("split") or split
    arguments = {key: spec[key] for key in ("data_files", "data_dir", "revision") if spec.get(key)}
    label = name if set(spec) == {"name"} else ",".join(f"{k}={v}" for k, v in spec.items())
    if "/" in name:  # a hub id, not a builder such as parquet
        _look_up(name, spec)
    try:
        loaded = datasets.load_dataset(name, spec.get("config"), split=split, **arguments)
    except Exception as err:  # datasets raises many types here (network, hub, builder, files)
        raise DataError(_load_error(name, spec, err)) from None
    total, records, description = read_loaded_dataset(loaded, label, split)
    if split is not None and not description:
        description = f"split {split}"
    return DatasetSource(label, total, records, Path.cwd(), description or "")


def _look_up(name: str, spec: dict[str, Any]) -> None:
    """One quick request for the hub id (skipped offline); a `DataError` when it fails."""
    import huggingface_hub
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return
    try:
        huggingface_hub.HfApi().dataset_info(name, revision=spec.get("revision"), timeout=HUB_LOOKUP_TIMEOUT)
    except Exception as err:  # network errors come from the HTTP client, hub errors from huggingface_hub
        raise DataError(_load_error(name, spec, err)) from None


def _load_error(name: str, spec: dict[str, Any], err: Exception) -> str:
    """One line for a failed `load_dataset`: offline, unknown/gated name, or a builder problem."""
    detail = " ".join(str(err).split())[:300] or type(err).__name__
    folder = f"data/{name.rsplit('/', 1)[-1].lower()}"
    download = (
        f"download it with `hf download {name} --repo-type dataset --local-dir {folder}` on a machine "
        f"with network access and pass the folder {folder} (or, if it is already in the Hugging Face "
        "cache, set HF_HUB_OFFLINE=1)"
    )
    local = "no such local file or folder; " if not spec.get("data_files") and "/" in name else ""
    kind = type(err).__name__
    if isinstance(err, (ConnectionError, TimeoutError)) or any(
        word in f"{kind} {detail}".lower()
        for word in ("connect", "offline", "timed out", "timeout", "resolve host", "name or service")
    ):
        return f"{name}: {local}cannot reach the Hugging Face hub for {name!r} (offline?): {download}"
    if kind in ("DatasetNotFoundError", "RepositoryNotFoundError", "GatedRepoError"):
        return (
            f"{name}: {local}no dataset {name!r} on the Hugging Face hub, or it is gated/private "
            f"(log in with `hf auth login`) ({detail}){download_hint(name)}"
        )
    return f"{name}: cannot load it with datasets.load_dataset ({kind}: {detail})"
