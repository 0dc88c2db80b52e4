"""Reading answer/question files and writing results, with errors that name file, line and field.

Benchmarks ship their question files as JSON lists (AMBER, MMHal-Bench, HallusionBench) or
JSON Lines (POPE, our own answers), so `read_records` takes either. Results are written with
`chip.files` (a temporary file and `os.replace`), so an interrupted run or a full disk never
leaves a half-written JSON.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from chip.errors import DataError


def _check_fields(path: Path, where: str, row: object, required: Sequence[str | tuple[str, ...]]) -> dict:
    if not isinstance(row, dict):
        raise DataError(f"{path}:{where}: expected a JSON object, got {type(row).__name__}")
    for field in required:
        # A tuple lists alternative names for one field, e.g. ("answer", "text").
        names = field if isinstance(field, tuple) else (field,)
        if not any(name in row for name in names):
            raise DataError(f"{path}:{where}: field {'/'.join(names)!r}: missing")
    return row


def _json_list(path: Path, text: str, required: Sequence[str | tuple[str, ...]]) -> list[tuple[str, dict]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}: invalid JSON ({err.msg})") from err
    if isinstance(data, dict):
        # Some releases wrap the list: {"annotations": [...]} or {"data": [...]}.
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise DataError(f"{path}: expected a JSON list of records")
        data = lists[0]
    return [(f"item {i}", _check_fields(path, f"item {i}", row, required)) for i, row in enumerate(data)]


def _is_json_document(text: str) -> bool:
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return False
    return True


def read_located_records(
    path: str | Path, required: Sequence[str | tuple[str, ...]] = ()
) -> list[tuple[str, dict]]:
    """`read_records` with each row's location ("12" for line 12, "item 3" in a JSON list)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        return _json_list(path, text, required)
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            if not rows and _is_json_document(text):
                # A pretty-printed object wrapping the list, not JSON Lines.
                return _json_list(path, text, required)
            raise DataError(f"{path}:{number}: invalid JSON ({err.msg})") from err
        rows.append((str(number), _check_fields(path, str(number), row, required)))
    return rows


def read_records(path: str | Path, required: Sequence[str | tuple[str, ...]] = ()) -> list[dict]:
    """Rows of a JSON Lines file or a JSON list, each checked to have the `required` fields.

    Blank lines are skipped. Raises `DataError` naming the file, the line (or list item) and the
    field for a missing file, invalid JSON or a missing field.
    """
    return [row for _, row in read_located_records(path, required)]


def read_json(path: str | Path) -> object:
    """A whole JSON document, with `DataError` for a missing file or invalid JSON."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}: invalid JSON ({err.msg})") from err


def index_by(rows: Iterable[dict], key: str, path: str | Path) -> dict:
    """Rows keyed by `row[key]`; a repeated key is a `DataError` (it would silently drop a row)."""
    indexed: dict = {}
    for row in rows:
        value = row[key]
        if not isinstance(value, (str, int)):
            raise DataError(f"{path}: field {key!r}: {value!r} is not a string or integer id")
        if value in indexed:
            raise DataError(f"{path}: field {key!r}: duplicate value {value!r}")
        indexed[value] = row
    return indexed
