"""Load a preference dataset into `PreferenceExample`s, with a report of every unusable row.

    examples, report = load_preference_rows("data/train.jsonl", image_root="data/images")
    examples, report = load_preference_rows("openbmb/RLAIF-V-Dataset", column_map="question=prompt")

The dataset is opened (`chip.data.sources`: a file, a folder of shards, a `datasets` folder, a hub
id or a `load_dataset` spec), its columns are mapped onto the preference fields from its first
records (`chip.data.columns`; the mapping is `report.mapping`), then one pass reads and validates
the records (`chip.data.rows`), resolves image paths against the image root, finds duplicate ids,
then checks each distinct image once, in threads (Pillow releases the GIL while decoding). Nothing about a bad row is silent: with `on_bad_row="error"`
the dataset is refused with a `DataError` naming the first problems; with `"skip"` the bad rows
are dropped and the returned `DataReport` lists and counts them.

Checks that need the model's processor (a prompt longer than `max_length`) cannot run here; the
trainer calls `check_lengths` and then `apply_on_bad_row` so that they end up in the same report.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import chain, islice
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from chip.data.columns import DERIVED_FIELDS, ColumnMapping, detect_mapping, parse_column_map
from chip.data.images import (
    DEFAULT_MAX_PIXELS,
    TINY_IMAGE_SIDE,
    ImageCheck,
    ImagePathResolver,
    ImageProblem,
    ImageRef,
    check_image,
)
from chip.data.readers import RawRecord
from chip.data.report import BadRow, DataReport, OnBadRow
from chip.data.rows import ParsedRow, PreferenceExample, parse_row
from chip.data.sources import open_dataset
from chip.errors import DataError

ImageResult = tuple[int, int] | ImageProblem
ColumnMap = str | Sequence[str] | Mapping[str, str]
# Records read before the rest to find the columns and which image column works.
SAMPLE_ROWS = 200


@dataclass
class _Candidate:
    """A row waiting for its images to be checked; `parsed` is None if its fields already failed."""

    raw: RawRecord
    parsed: ParsedRow | None
    id: str
    images: list[tuple[str, ImageRef]]


def load_preference_rows(
    path: str | os.PathLike[str] | Mapping[str, Any] | Sequence[Mapping[str, Any]] | Any,
    image_root: str | os.PathLike[str] | None = None,
    on_bad_row: OnBadRow = "error",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    allow_outside_root: bool = False,
    image_check: ImageCheck = "decode",
    num_workers: int | None = None,
    progress: bool = False,
    column_map: ColumnMap | None = None,
    split: str | None = None,
    prompts_only: bool = False,
) -> tuple[list[PreferenceExample], DataReport]:
    """Read and validate preference rows from any layout `chip data check` accepts.

    `path` is a `.jsonl`/`.json`/`.parquet` file, a folder of such shards, a `datasets` folder,
    a hub id (`openbmb/RLAIF-V-Dataset`) or a `load_dataset` spec (`"name=parquet,data_files=..."`,
    a JSON/YAML string or a dict); or rows in memory: a `datasets.Dataset` / `DatasetDict` or a
    list of dicts (PIL images in it are kept as PNG bytes). `column_map` overrides the recognised columns:
    `"question=prompt,img=image"`, a list of `COLUMN=FIELD` strings, or a dict; the mapping used is
    `report.mapping`. `split` picks a split of a DatasetDict, shard folder or hub dataset (default:
    `train`, else the only one). With `prompts_only` only prompts and images are read (a prompt
    set, or a preference dataset whose prompts are reused); the examples' responses are empty. Image paths are relative to `image_root`, else to the folder
    holding the data (the working directory for a hub dataset), and may not leave that root unless
    `allow_outside_root`. `image_check="header"` skips full decoding (faster, but a truncated file
    is only found when training reads it). Raises `DataError` (one line) for an unreadable or
    unmappable dataset, and for any bad row when `on_bad_row="error"`.
    """
    if on_bad_row not in ("error", "skip"):
        raise ValueError(f"on_bad_row must be 'error' or 'skip', got {on_bad_row!r}")
    if image_check not in ("decode", "header"):
        raise ValueError(f"image_check must be 'decode' or 'header', got {image_check!r}")
    overrides = parse_column_map(column_map)
    if image_root is not None and not Path(image_root).is_dir():
        raise DataError(f"image_root {image_root} is not a directory")
    source = open_dataset(path, split)
    root = Path(image_root) if image_root is not None else source.default_root
    resolve = ImagePathResolver(root, allow_outside_root)
    report = DataReport(source=source.name, description=source.description)

    records, sample = _peek(source.records)
    columns = list(dict.fromkeys(name for record in sample for name in record))

    def image_works(image_path: str) -> bool:
        try:
            return resolve(image_path).is_file()
        except ImageProblem:
            return False

    report.mapping = detect_mapping(source.name, columns, sample, overrides, image_works, prompts_only)
    candidates = _parse_records(
        records, source.total, resolve, report, report.mapping, progress, prompts_only
    )
    results = _check_images(candidates, max_pixels, image_check, num_workers, progress)

    examples = _usable_examples(candidates, results, report)
    return apply_on_bad_row(examples, report, on_bad_row), report


def _usable_examples(candidates: list, results: dict, report: DataReport) -> list[PreferenceExample]:
    """Examples of the rows whose images all passed; image problems go to ``report`` (tiny ones as warnings)."""
    examples = []
    for candidate in candidates:
        raw, parsed = candidate.raw, candidate.parsed
        for field, ref in candidate.images:
            result = results[ref.key]
            if isinstance(result, ImageProblem):
                report.add(raw.row, field, result.kind, result.reason, raw.line, raw.shard)
                parsed = None
            elif min(result) < TINY_IMAGE_SIDE:
                reason = f"image {ref.describe()} is only {result[0]}×{result[1]} pixels and carries little visual evidence"
                report.warnings.append(
                    BadRow(report.source, raw.row, field, "image_tiny", reason, raw.line, raw.shard)
                )
        if parsed is not None:
            examples.append(_to_example(candidate, parsed, report.source))
    return examples


def check_lengths(
    examples: Iterable[PreferenceExample],
    count_prompt_tokens: Callable[[PreferenceExample], int],
    max_length: int,
) -> list[BadRow]:
    """Report the rows whose prompt alone (image tokens included) leaves no room for a response.

    `count_prompt_tokens` comes from the trainer, which alone knows the processor and how many
    tokens an image expands to. Truncation only ever cuts response tokens, so such a row can
    never be trained on and must be reported rather than silently cut.
    """
    bad_rows = []
    for example in examples:
        n_tokens = count_prompt_tokens(example)
        if n_tokens >= max_length:
            reason = (
                f"the prompt takes {n_tokens} tokens (images included), leaving no room for a "
                f"response within max_length={max_length}"
            )
            bad_rows.append(
                BadRow(
                    example.source,
                    example.row,
                    "prompt",
                    "prompt_too_long",
                    reason,
                    example.line,
                    example.shard,
                )
            )
    return bad_rows


def apply_on_bad_row(
    examples: list[PreferenceExample], report: DataReport, on_bad_row: OnBadRow
) -> list[PreferenceExample]:
    """Refuse the dataset (`"error"`) or drop the rows the report names (`"skip"`)."""
    if report.ok:
        return examples
    if on_bad_row == "error":
        raise DataError(report.summary())
    bad = report.bad_row_indices
    return [example for example in examples if example.row not in bad]


def _peek(records: Iterator[RawRecord]) -> tuple[Iterator[RawRecord], list[dict[str, Any]]]:
    """(all records again, the first readable records) without reading the dataset twice."""
    head = list(islice(records, SAMPLE_ROWS))
    return chain(head, records), [raw.record for raw in head if raw.problem is None]


def _parse_records(
    records: Iterable[RawRecord],
    total: int,
    resolve: ImagePathResolver,
    report: DataReport,
    mapping: ColumnMapping,
    progress: bool,
    prompts_only: bool,
) -> list[_Candidate]:
    """Map columns, validate fields, resolve image paths, find duplicate ids; report every problem.

    Problems are reported under the stored column names (`question`, not `prompt`).
    """
    candidates = []
    first_use: dict[str, str] = {}  # id -> location of the row that used it first
    resolved: dict[str, ImageRef | ImageProblem] = {}  # path as written -> its checked location
    for raw in tqdm(
        records, total=total, desc="reading rows", unit="row", disable=None if progress else True
    ):
        report.total_rows += 1
        if raw.problem is not None:
            report.add(raw.row, *raw.problem, line=raw.line, shard=raw.shard)
            continue
        record, mapping_problems = mapping.apply(raw.record)
        parsed, sources, problems = parse_row(record, prompts_only)
        sources = [(mapping.stored_name(field), source) for field, source in sources]
        if mapping_problems:
            parsed = None
        for field, kind, reason in mapping_problems:
            report.add(raw.row, field, kind, reason, raw.line, raw.shard)
        explained = {name for field, _, _ in mapping_problems for name in DERIVED_FIELDS.get(field, ())}
        problems = [problem for problem in problems if problem[0] not in explained]
        for field, kind, reason in problems:
            report.add(raw.row, mapping.stored_name(field), kind, reason, raw.line, raw.shard)

        row_id = parsed.id if parsed is not None and parsed.id is not None else str(raw.row)
        if parsed is not None and row_id in first_use:
            implicit = "" if parsed.id is not None else " (the row has no id, so its index is its id)"
            reason = f"id {row_id!r}{implicit} is already used by {first_use[row_id]}"
            report.add(raw.row, mapping.stored_name("id"), "duplicate_id", reason, raw.line, raw.shard)
            parsed = None
        elif parsed is not None:
            first_use[row_id] = BadRow(report.source, raw.row, "", "", "", raw.line, raw.shard).location

        images, images_ok = _image_refs(raw, sources, resolve, resolved, report)
        candidates.append(_Candidate(raw, parsed if images_ok else None, row_id, images))
    return candidates


def _image_refs(
    raw: RawRecord,
    sources: list[tuple[str, Any]],
    resolve: ImagePathResolver,
    resolved: dict[str, ImageRef | ImageProblem],
    report: DataReport,
) -> tuple[list[tuple[str, ImageRef]], bool]:
    """The row's images as ``(stored field, ImageRef)``, and whether every one resolved (each
    problem reported). ``resolved`` caches each path as written: datasets reuse images."""
    images, ok = [], True
    for field, source in sources:
        if isinstance(source, bytes):
            images.append((field, ImageRef(data=source)))
            continue
        if source not in resolved:
            try:
                resolved[source] = ImageRef(path=resolve(source))
            except ImageProblem as problem:
                resolved[source] = problem
        ref_or_problem = resolved[source]
        if isinstance(ref_or_problem, ImageProblem):
            report.add(raw.row, field, ref_or_problem.kind, ref_or_problem.reason, raw.line, raw.shard)
            ok = False
        else:
            images.append((field, ref_or_problem))
    return images, ok


def _check_images(
    candidates: list[_Candidate],
    max_pixels: int,
    image_check: ImageCheck,
    num_workers: int | None,
    progress: bool,
) -> dict[str, ImageResult]:
    """Check each distinct image once, in threads; map its key to its size or its problem."""
    unique = {ref.key: ref for candidate in candidates for _, ref in candidate.images}

    def check(ref: ImageRef) -> ImageResult:
        try:
            return check_image(ref, max_pixels, image_check)
        except ImageProblem as problem:
            return problem

    workers = num_workers or min(8, (os.cpu_count() or 1) + 2)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(
            tqdm(
                pool.map(check, unique.values()),
                total=len(unique),
                desc="checking images",
                unit="image",
                disable=None if progress else True,
            )
        )
    return dict(zip(unique, results))


def _to_example(candidate: _Candidate, parsed: ParsedRow, source: str) -> PreferenceExample:
    return PreferenceExample(
        id=candidate.id,
        row=candidate.raw.row,
        source=source,
        images=[ref for _, ref in candidate.images],
        prompt=parsed.prompt,
        chosen=parsed.chosen,
        rejected=parsed.rejected,
        chosen_segments=parsed.chosen_segments,
        rejected_segments=parsed.rejected_segments,
        more_rejected=parsed.more_rejected,
        more_rejected_segments=parsed.more_rejected_segments,
        more_chosen_segments=parsed.more_chosen_segments,
        line=candidate.raw.line,
        shard=candidate.raw.shard,
    )
