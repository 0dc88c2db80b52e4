"""Reading raw records from local storage: JSON Lines, JSON, parquet, a folder of such shards, or a
`datasets` folder.

A reader only turns storage into Python dicts; what a row must contain is `chip.data.rows`'s job.
Problems that make a whole file unreadable (missing file, unknown format, corrupt parquet footer)
raise `DataError`; a problem confined to one record (an invalid JSON line, non-UTF-8 bytes) is
returned as that record's `problem` so that every other row is still checked and reported.

Row numbering: `row` is the 0-based index among records. JSON Lines also gives the 1-based `line`
(blank lines are skipped and not counted as rows, so a trailing newline is harmless). In a folder
of shards `row` counts across the shards in name order, and `shard` names the file and the place in
it (`data/train-00001-of-00004.parquet row 2`), which is what a user can open.

Splits: a DatasetDict folder, or shards named as the Hugging Face hub names them
(`data/train-00000-of-00004.parquet`, `train/0000.parquet`), are read one split at a time: the
requested one, else `train`, else the only one.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from chip.errors import DataError

# Rows decoded per parquet / arrow batch: large enough to be fast, small enough to stream.
BATCH_SIZE = 1024


@dataclass
class RawRecord:
    """One stored row before validation: the dict, or the (field, kind, reason) that prevented it."""

    row: int
    line: int | None
    record: dict[str, Any] = field(default_factory=dict)
    problem: tuple[str, str, str] | None = None
    shard: str | None = None  # in a folder of shards: the file and the line/row within it


# Split names the hub recognises in shard file names (`train-00000-of-00004`) and folder names.
SPLIT_NAMES = ("train", "test", "validation", "valid", "val", "dev", "eval")
_SPLIT_IN_NAME = re.compile(rf"^({'|'.join(SPLIT_NAMES)})(?:[-_.].*)?$", re.IGNORECASE)

# Published datasets whose names appear in the paths recipes use: a missing file says how to get it.
KNOWN_DATASETS = {"rlhf-v": "openbmb/RLHF-V-Dataset", "rlaif-v": "openbmb/RLAIF-V-Dataset"}


def read_records(path: Path, split: str | None = None) -> tuple[int, Iterator[RawRecord], str]:
    """(number of records, an iterator over them, what was read) for a local dataset path.

    The description is empty for a single file; for a folder it names the split and files read.
    """
    if not path.exists():
        raise DataError(f"dataset not found: {path}{download_hint(path)}")
    if path.is_dir():
        if (path / "state.json").exists() or (path / "dataset_dict.json").exists():
            return _read_datasets_folder(path, split)
        return _read_shard_folder(path, split)
    if split is not None:
        raise DataError(f"{path} is a single file: it has no splits to choose with split={split!r}")
    total, records = read_file(path)
    return total, records, ""


def read_file(path: Path) -> tuple[int, Iterator[RawRecord]]:
    """(number of records, an iterator over them) for one .jsonl, .json or .parquet file."""
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise DataError(
            f"unsupported dataset format {path.suffix or '(no extension)'!r} for {path}: "
            f"expected {', '.join(sorted(READERS))}, a folder of such files, or a `datasets` folder "
            "(save_to_disk)"
        )
    return reader(path)


def download_hint(path: Path | str) -> str:
    """How to get a published dataset whose name the missing path contains, or ''."""
    for key, hub_id in KNOWN_DATASETS.items():
        if key in str(path).lower():
            path = Path(path)
            folder = path if not path.suffix else path.parent
            return (
                f" (download {hub_id} with `hf download {hub_id} --repo-type dataset --local-dir "
                f"{folder}` and pass the folder {folder}, or pass the hub id {hub_id})"
            )
    return ""


def _read_jsonl(path: Path) -> tuple[int, Iterator[RawRecord]]:
    try:
        with path.open("rb") as handle:
            total = sum(1 for line in handle if line.strip())
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror or err}") from None
    return total, _iter_jsonl(path)


def _iter_jsonl(path: Path) -> Iterator[RawRecord]:
    row = 0
    with path.open("rb") as handle:
        for line_number, raw_line in enumerate(handle, start=1):
            if not raw_line.strip():
                continue
            if line_number == 1 and raw_line.startswith(b"\xef\xbb\xbf"):
                raw_line = raw_line[3:]  # a UTF-8 byte-order mark written by some editors
            yield _parse_json_line(raw_line, row, line_number)
            row += 1


def _parse_json_line(raw_line: bytes, row: int, line: int) -> RawRecord:
    try:
        text = raw_line.decode("utf-8")
    except UnicodeDecodeError as err:
        byte = raw_line[err.start]
        reason = f"not valid UTF-8: byte 0x{byte:02x} at byte offset {err.start} of the line"
        return RawRecord(row, line, problem=("row", "invalid_utf8", reason))
    try:
        record = json.loads(text)
    except json.JSONDecodeError as err:
        reason = f"invalid JSON: {err.msg} at column {err.colno}"
        return RawRecord(row, line, problem=("row", "invalid_json", reason))
    if not isinstance(record, dict):
        reason = f"expected a JSON object per line, got {type(record).__name__}"
        return RawRecord(row, line, problem=("row", "not_an_object", reason))
    return RawRecord(row, line, record)


def _read_json(path: Path) -> tuple[int, Iterator[RawRecord]]:
    """A JSON array of row objects (LLaVA / POVID style); a `.json` file holding JSON Lines is read as such."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        raise DataError(f"cannot read {path}: not valid UTF-8 (byte offset {err.start})") from None
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as err:
        if text.lstrip().startswith("{"):  # one object per line, named .json
            return _read_jsonl(path)
        raise DataError(
            f"{path} is not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}"
        ) from None
    if not isinstance(rows, list):
        raise DataError(f"{path}: expected a JSON array of row objects, got a {type(rows).__name__}")

    def records() -> Iterator[RawRecord]:
        for row, record in enumerate(rows):
            if isinstance(record, dict):
                yield RawRecord(row, None, record)
            else:
                reason = f"expected a JSON object per array item, got {type(record).__name__}"
                yield RawRecord(row, None, problem=("row", "not_an_object", reason))

    return len(rows), records()


def _read_parquet(path: Path) -> tuple[int, Iterator[RawRecord]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"cannot read parquet file {path}: {err}") from None

    def batches() -> Iterator[list[dict[str, Any]]]:
        try:
            for batch in parquet.iter_batches(batch_size=BATCH_SIZE):
                yield batch.to_pylist()
        except (pa.ArrowException, OSError) as err:
            raise DataError(f"cannot read parquet file {path}: {err}") from None

    return parquet.metadata.num_rows, _number(batches())


def _read_datasets_folder(path: Path, split: str | None) -> tuple[int, Iterator[RawRecord], str]:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except (OSError, ValueError, FileNotFoundError) as err:
        raise DataError(f"cannot load `datasets` folder {path}: {err}") from None
    return read_loaded_dataset(loaded, str(path), split)


def read_loaded_dataset(loaded: Any, source: str, split: str | None) -> tuple[int, Iterator[RawRecord], str]:
    """Records of a `datasets.Dataset`, or of one split of a `DatasetDict`, with images undecoded."""
    import datasets

    description = ""
    if isinstance(loaded, datasets.DatasetDict):
        chosen = choose_split(source, sorted(loaded), split)
        loaded, description = loaded[chosen], f"split {chosen}"
    elif split is not None and str(loaded.split or "") not in ("", split):
        raise DataError(f"{source} holds the split {loaded.split!r}, not {split!r}")
    # Arrow format yields the stored structs ({bytes, path} for images) without decoding images.
    arrow = loaded.with_format("arrow")

    def batches() -> Iterator[list[dict[str, Any]]]:
        for start in range(0, len(arrow), BATCH_SIZE):
            yield arrow[start : start + BATCH_SIZE].to_pylist()

    return len(arrow), _number(batches()), description


def choose_split(source: str, splits: list[str], split: str | None) -> str:
    """The requested split, else `train`, else the only one; a one-line error otherwise."""
    if split is not None:
        if split not in splits:
            raise DataError(f"{source} has no split {split!r}; its splits are {', '.join(splits)}")
        return split
    if "train" in splits:
        return "train"
    if len(splits) == 1:
        return splits[0]
    raise DataError(
        f"{source} holds several splits ({', '.join(splits)}) and none is 'train': "
        f"choose one with --split (split=), e.g. --split {splits[0]}"
    )


def folder_splits(path: Path) -> list[str]:
    """The split names a local folder holds (a DatasetDict folder, or shards named after splits);
    empty for a file or a folder without named splits."""
    if not path.is_dir():
        return []
    if (path / "dataset_dict.json").exists():
        try:
            return [str(name) for name in json.loads((path / "dataset_dict.json").read_text())["splits"]]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise DataError(f"{path}/dataset_dict.json is not readable: {err}") from None
    found = (
        _split_of(file.relative_to(path))
        for file in path.rglob("*")
        if file.suffix.lower() in READERS and not any(p.startswith(".") for p in file.relative_to(path).parts)
    )
    return sorted({name for name in found if name is not None})


def _split_of(relative: Path) -> str | None:
    """The split a shard belongs to by the hub's naming (`train-00000-of-00002`, `test/0000`), if any."""
    for name in (relative.stem, *reversed(relative.parent.parts)):
        match = _SPLIT_IN_NAME.match(name)
        if match:
            return match.group(1).lower()
    return None


def _read_shard_folder(path: Path, split: str | None) -> tuple[int, Iterator[RawRecord], str]:
    """Every .parquet (else .jsonl, else .json) file under `path`, of one split, in name order."""
    found = sorted(
        file
        for file in path.rglob("*")
        if file.suffix.lower() in READERS
        and file.is_file()
        and not any(part.startswith(".") for part in file.relative_to(path).parts)
    )
    if not found:
        raise DataError(
            f"{path} is a folder but not a `datasets` folder (no state.json or dataset_dict.json) and "
            f"holds no {', '.join(sorted(READERS))} files: pass a data file, a folder of data files, or "
            "a folder written by Dataset.save_to_disk"
        )
    # Hub repositories may hold the same rows in two formats, or metadata next to the data.
    suffix = next(s for s in (".parquet", ".jsonl", ".json") if any(f.suffix.lower() == s for f in found))
    files = [file for file in found if file.suffix.lower() == suffix]
    splits = {file: _split_of(file.relative_to(path)) for file in files}
    named = sorted({name for name in splits.values() if name is not None})
    description = ""
    if named:
        chosen = choose_split(str(path), named, split)
        files = [file for file in files if splits[file] == chosen]
        description = f"split {chosen}, "
    elif split is not None:
        raise DataError(
            f"{path}: no file is named after a split (train-*, test/...), so split={split!r} cannot be "
            "chosen; pass the file or folder of that split"
        )
    counted = [(file, *read_file(file)) for file in files]
    ignored = [str(f.relative_to(path)) for f in found if f.suffix.lower() != suffix]
    description += f"{len(files)} {suffix} file(s)"
    if ignored:
        shown = ", ".join(ignored[:3]) + (f" and {len(ignored) - 3} more" if len(ignored) > 3 else "")
        description += f" (not read: {shown})"

    def records() -> Iterator[RawRecord]:
        row = 0
        for file, _, file_records in counted:
            relative = file.relative_to(path)
            for record in file_records:
                where = f"line {record.line}" if record.line is not None else f"row {record.row}"
                yield RawRecord(row, record.line, record.record, record.problem, f"{relative} {where}")
                row += 1

    return sum(total for _, total, _ in counted), records(), description


def read_rows(rows: Sequence[Any]) -> tuple[int, Iterator[RawRecord]]:
    """(number of records, an iterator over them) for rows held in memory: a list of dicts.

    A `PIL.Image.Image` value (alone or in a list, as TRL datasets hold them) becomes inline PNG
    bytes, losslessly, so the row is read exactly as the same image saved to a file would be.
    """

    def records() -> Iterator[RawRecord]:
        for row, record in enumerate(rows):
            if not isinstance(record, Mapping):
                reason = f"expected a dict per row, got {type(record).__name__}"
                yield RawRecord(row, None, problem=("row", "not_an_object", reason))
                continue
            yield RawRecord(row, None, {key: _inline_images(value) for key, value in record.items()})

    return len(rows), records()


def _inline_images(value: Any) -> Any:
    if isinstance(value, list):
        return [_inline_images(item) for item in value]
    if isinstance(value, Image.Image):
        buffer = io.BytesIO()
        # PNG keeps every mode a photo comes in except CMYK, which TIFF keeps.
        value.save(buffer, format="TIFF" if value.mode == "CMYK" else "PNG")
        return {"bytes": buffer.getvalue(), "path": None}
    return value


def _number(batches: Iterator[list[dict[str, Any]]]) -> Iterator[RawRecord]:
    row = 0
    for batch in batches:
        for record in batch:
            yield RawRecord(row, None, record)
            row += 1


# file suffix -> reader; folders are read as `datasets` folders or as folders of these files
READERS: dict[str, Callable[[Path], tuple[int, Iterator[RawRecord]]]] = {
    ".jsonl": _read_jsonl,
    ".json": _read_json,
    ".parquet": _read_parquet,
}
