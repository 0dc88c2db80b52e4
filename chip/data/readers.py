"""Reading raw records from a dataset file: JSON Lines, parquet, or a `datasets` folder.

A reader only turns storage into Python dicts; what a row must contain is `chip.data.rows`'s job.
Problems that make a whole file unreadable (missing file, unknown format, corrupt parquet footer)
raise `DataError`; a problem confined to one record (an invalid JSON line, non-UTF-8 bytes) is
returned as that record's `problem` so that every other row is still checked and reported.

Row numbering: `row` is the 0-based index among records. JSON Lines also gives the 1-based `line`
(blank lines are skipped and not counted as rows, so a trailing newline is harmless).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


def read_records(path: Path) -> tuple[int, Iterator[RawRecord]]:
    """Return (number of records, an iterator over them) for a dataset path of any supported format."""
    if not path.exists():
        raise DataError(f"dataset not found: {path}")
    if path.is_dir():
        return _read_datasets_folder(path)
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise DataError(
            f"unsupported dataset format {path.suffix or '(no extension)'!r} for {path}: "
            f"expected {', '.join(sorted(READERS))} or a `datasets` folder (save_to_disk)"
        )
    return reader(path)


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


def _read_datasets_folder(path: Path) -> tuple[int, Iterator[RawRecord]]:
    if not ((path / "state.json").exists() or (path / "dataset_dict.json").exists()):
        raise DataError(
            f"{path} is a folder but not a `datasets` folder (no state.json or dataset_dict.json): "
            "pass a .jsonl or .parquet file, or a folder written by Dataset.save_to_disk"
        )
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except (OSError, ValueError, FileNotFoundError) as err:
        raise DataError(f"cannot load `datasets` folder {path}: {err}") from None
    if isinstance(loaded, datasets.DatasetDict):
        if len(loaded) != 1:
            raise DataError(
                f"{path} holds several splits {sorted(loaded)}; pass one split's folder, "
                f"e.g. {path / sorted(loaded)[0]}"
            )
        (loaded,) = loaded.values()
    # Arrow format yields the stored structs ({bytes, path} for images) without decoding images.
    arrow = loaded.with_format("arrow")

    def batches() -> Iterator[list[dict[str, Any]]]:
        for start in range(0, len(arrow), BATCH_SIZE):
            yield arrow[start : start + BATCH_SIZE].to_pylist()

    return len(arrow), _number(batches())


def _number(batches: Iterator[list[dict[str, Any]]]) -> Iterator[RawRecord]:
    row = 0
    for batch in batches:
        for record in batch:
            yield RawRecord(row, None, record)
            row += 1


# file suffix -> reader; folders are always read as `datasets` folders
READERS: dict[str, Callable[[Path], tuple[int, Iterator[RawRecord]]]] = {
    ".jsonl": _read_jsonl,
    ".parquet": _read_parquet,
}
