"""The rows of `chip data view`, good and bad, as the page shows them.

Every row of the dataset is shown, in stored order: a usable row from its `PreferenceExample`, a
bad row with the problems the report lists for it and whatever of it can still be read. Bad rows
are dropped by `load_preference_rows`, so their fields are read again from the source (only when
there are bad rows), mapped with the same column mapping and parsed field by field: a row whose
only problem is its image still shows its prompt and responses, and a row whose fields cannot be
parsed shows the record as stored.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chip.data.images import ImagePathResolver, ImageProblem, ImageRef
from chip.data.messages import FieldProblem
from chip.data.report import BadRow, DataReport
from chip.data.rows import FIELD_RULES, PreferenceExample, parse_row
from chip.data.sources import open_dataset

# Characters of a bad row's stored record shown on the page.
RAW_CHARACTERS = 4000
_RULES = {rule.name: rule for rule in FIELD_RULES}


@dataclass
class ViewRow:
    """One dataset row on the page: its display fields, its images and, if usable, its example."""

    row: int
    fields: dict[str, Any]  # JSON-ready: loc, id, prompt, chosen, rejected, spans, issues, warnings, raw
    images: list[ImageRef | ImageProblem] = field(default_factory=list)
    example: PreferenceExample | None = None  # set when training would use the row


def view_rows(
    examples: list[PreferenceExample],
    report: DataReport,
    dataset: str | os.PathLike[str] | Mapping[str, Any],
    split: str | None,
    image_root: Path | None,
    allow_outside_root: bool,
) -> list[ViewRow]:
    """Every row of the dataset in stored order; `examples` are the rows that passed the checks.

    ``image_root`` is the one given to `load_preference_rows` (None: the dataset's own folder).
    """
    problems = _by_row(report.bad_rows)
    warnings = _by_row(report.warnings)
    rows: dict[int, ViewRow] = {}
    for example in examples:
        usable = example.row not in problems
        rows[example.row] = ViewRow(
            example.row,
            example_fields(example, _location(report, example.row, example.line, example.shard)),
            list(example.images),
            example if usable else None,
        )
    missing = set(problems) - set(rows)
    if missing:
        rows.update(_reread(missing, report, dataset, split, image_root, allow_outside_root))
    for row, view in rows.items():
        view.fields["issues"] = [[bad.field, bad.kind, bad.reason] for bad in problems.get(row, [])]
        view.fields["warnings"] = [[bad.field, bad.kind, bad.reason] for bad in warnings.get(row, [])]
    for row in range(report.total_rows):
        if row not in rows:  # unreadable record (invalid JSON...): only its problems are known
            located = problems[row][0]
            fields = _empty_fields(located.location)
            fields["issues"] = [[bad.field, bad.kind, bad.reason] for bad in problems[row]]
            fields["warnings"] = []
            rows[row] = ViewRow(row, fields)
    return [rows[row] for row in range(report.total_rows)]


def example_fields(example: PreferenceExample, location: str) -> dict[str, Any]:
    """The display fields of a parsed row (prompt, responses, the spans the data gives)."""
    return {
        "loc": location,
        "id": example.id,
        "prompt": prompt_view(example.prompt),
        "chosen": example.chosen,
        "rejected": example.rejected,
        "spans": {"chosen": _spans(example.chosen_segments), "rejected": _spans(example.rejected_segments)},
        "raw": None,
    }


def prompt_view(prompt: str | list[dict[str, Any]]) -> str | list[dict[str, str]]:
    """A plain prompt as is; chat messages as (role, text) with ``[image]`` where an image goes."""
    if isinstance(prompt, str):
        return prompt
    return [
        {
            "role": message["role"],
            "text": "".join(
                part.get("text") or "" if part.get("type") == "text" else "[image]"
                for part in message["content"]
            ),
        }
        for message in prompt
    ]


def _spans(spans: list[tuple[int, int]] | None) -> list[list[int]] | None:
    return None if spans is None else [[int(start), int(end)] for start, end in spans]


def _by_row(entries: list[BadRow]) -> dict[int, list[BadRow]]:
    grouped: dict[int, list[BadRow]] = defaultdict(list)
    for entry in sorted(entries, key=lambda bad: (bad.row, bad.field)):
        grouped[entry.row].append(entry)
    return grouped


def _location(report: DataReport, row: int, line: int | None, shard: str | None) -> str:
    return BadRow(report.source, row, "", "", "", line, shard).location


def _empty_fields(location: str) -> dict[str, Any]:
    return {
        "loc": location,
        "id": None,
        "prompt": None,
        "chosen": None,
        "rejected": None,
        "spans": {"chosen": None, "rejected": None},
        "raw": None,
    }


def _reread(
    wanted: set[int],
    report: DataReport,
    dataset: str | os.PathLike[str] | Mapping[str, Any],
    split: str | None,
    image_root: Path | None,
    allow_outside_root: bool,
) -> dict[int, ViewRow]:
    """The bad rows' fields, read again from the source with the report's column mapping."""
    rows = {}
    source = open_dataset(dataset, split)
    resolve = ImagePathResolver(
        image_root if image_root is not None else source.default_root, allow_outside_root
    )
    for raw in source.records:
        if raw.row not in wanted or raw.problem is not None:
            continue
        location = _location(report, raw.row, raw.line, raw.shard)
        record = raw.record
        if report.mapping is not None:
            record, _ = report.mapping.apply(record)
        parsed, sources, _ = parse_row(record)
        if parsed is not None:
            fields = example_fields(_parsed_example(parsed, raw.row, report.source), location)
        else:
            fields = _fields_one_by_one(record, location)
            fields["raw"] = _stored_text(raw.record)
        images = [_image_ref(source_value, resolve) for _, source_value in sources]
        rows[raw.row] = ViewRow(raw.row, fields, images)
    return rows


def _parsed_example(parsed, row: int, source: str) -> PreferenceExample:
    return PreferenceExample(
        id=parsed.id if parsed.id is not None else str(row),
        row=row,
        source=source,
        images=[],
        prompt=parsed.prompt,
        chosen=parsed.chosen,
        rejected=parsed.rejected,
        chosen_segments=parsed.chosen_segments,
        rejected_segments=parsed.rejected_segments,
    )


def _fields_one_by_one(record: dict[str, Any], location: str) -> dict[str, Any]:
    """Each field that parses on its own; the others are None (the stored record is shown instead)."""
    values: dict[str, Any] = {}
    for name, rule in _RULES.items():
        try:
            values[name] = rule.parse(record[name]) if record.get(name) is not None else None
        except FieldProblem:
            values[name] = None
    fields = _empty_fields(location)
    fields["id"] = values["id"]
    fields["prompt"] = prompt_view(values["prompt"]) if values["prompt"] is not None else None
    fields["chosen"], fields["rejected"] = values["chosen"], values["rejected"]
    for side in ("chosen", "rejected"):
        spans, text = values[f"{side}_segments"], values[side]
        in_range = text is not None and spans is not None and all(end <= len(text) for _, end in spans)
        fields["spans"][side] = _spans(spans) if in_range else None
    return fields


def _image_ref(value: str | bytes, resolve: ImagePathResolver) -> ImageRef | ImageProblem:
    if isinstance(value, bytes):
        return ImageRef(data=value)
    try:
        return ImageRef(path=resolve(value))
    except ImageProblem as problem:
        return problem


def _stored_text(record: dict[str, Any]) -> str:
    """The stored record as JSON, inline image bytes replaced by their size, cut to a readable length."""

    def plain(value: Any) -> Any:
        if isinstance(value, bytes):
            return f"<{len(value)} bytes>"
        if isinstance(value, dict):
            return {str(key): plain(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(item) for item in value]
        return value if isinstance(value, (str, int, float, bool)) or value is None else repr(value)

    text = json.dumps(plain(record), ensure_ascii=False, indent=1)
    return text if len(text) <= RAW_CHARACTERS else text[:RAW_CHARACTERS] + " …"
