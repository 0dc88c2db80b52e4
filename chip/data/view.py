"""`chip data view`: a static page (no server) to look at preference data, pair by pair.

    chip data view data/train.jsonl --output view.html
    chip data view data/rlaif-v --model llava-hf/llava-v1.6-vicuna-7b-hf --output view.html --pages 1-20

The page shows every row in stored order, bad rows with the problems `chip data check` finds. It
is `view.html` plus a folder `view_files/` beside it: the page's script and style, an index (the
rows with problems, by kind), one script file per page of rows loaded when that page is shown, the
thumbnails and the corrupted images. Text, problems and the spans the data gives are written for
every row; pictures (thumbnails, the corrupted image, segments derived from the token diff) only
for the rows of `--pages` and the first page of rows with problems, so that a dataset of 100k rows
is written in seconds. Other pages show the original image files (lazily, at full size) and say
how to write their pictures.
"""

from __future__ import annotations

import gc
import html
import json
import math
import os
import shlex
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

from chip.cli import OneLineParser
from chip.corruption import CORRUPTION_KINDS, NUM_DIFFUSION_STEPS
from chip.data.cli import add_dataset_arguments
from chip.data.images import DEFAULT_MAX_PIXELS
from chip.data.loading import load_preference_rows
from chip.data.prompt_checks import check_with_processor
from chip.data.report import DataReport
from chip.data.view_images import CorruptionSettings, TrainingView, add_pictures
from chip.data.view_rows import ViewRow, view_rows
from chip.errors import ConfigError
from chip.files import write_text_atomic

PAGE_SIZE = 50
DEFAULT_PAGES = "1-5"


@dataclass
class ViewResult:
    """What `write_view` wrote: the page, how many rows, and how many got pictures."""

    page: Path
    rows: int
    pages: int
    pictured_rows: int
    seconds: float


def view_main(argv: list[str]) -> int:
    """Write a static HTML page showing a preference dataset pair by pair.

    DATASET is anything `chip data check` reads (a .jsonl/.json/.parquet file, a folder of shards,
    a save_to_disk folder, a hub id or load_dataset arguments), with the same column mapping
    options. Each pair shows its image, the prompt, chosen and rejected with the changed segments
    highlighted, and the problems `chip data check` finds for the row (bad rows are shown with their
    reasons, not dropped). With --model (and chip train's --corruption, --noise_step, --seed), it
    also shows the corrupted image exactly as the training collator makes it (the processor's
    pixels after corruption, de-normalised), the segments derived from the token diff where the
    row gives none, and the processor's own checks (special-token text, prompts too long for
    --max_length). Without --model there is no corrupted image: the processor decides the pixels.
    Pictures are written for --pages (default 1-5; `all` for every page) and the first page of rows
    with problems; other pages show the original image files. The page needs no server: open it.
    """
    args = _parser().parse_args(argv)
    settings = None
    if not 0 <= args.noise_step < NUM_DIFFUSION_STEPS:
        raise ConfigError(f"--noise_step must be in 0..{NUM_DIFFUSION_STEPS - 1}, got {args.noise_step}")
    if min(args.max_length, args.segment_min_match) < 1:
        raise ConfigError("--max_length and --segment_min_match must be at least 1")
    if args.model is not None:
        settings = CorruptionSettings(
            model=args.model,
            corruption=args.corruption,
            noise_step=args.noise_step,
            seed=args.seed,
            max_length=args.max_length,
            segment_min_match=args.segment_min_match,
            mark_insertions=args.mark_insertions,
        )
    elif any(getattr(args, name) != default for name, default in MODEL_DEFAULTS.items()):
        raise ConfigError(
            "--corruption, --noise_step, --seed, --max_length and the segment options need --model"
        )
    result = write_view(
        args.file,
        args.output,
        image_root=args.image_root,
        column_map=args.column_map,
        split=args.split,
        max_pixels=args.max_pixels,
        allow_outside_root=args.allow_outside_root,
        image_check=args.image_check,
        workers=args.workers,
        settings=settings,
        page_size=args.page_size,
        pages=args.pages,
        progress=True,
        command=shlex.join(["chip", "data", "view", *argv]),
    )
    print(
        f"wrote {result.page}: {result.rows:,} rows on {result.pages:,} pages, pictures for "
        f"{result.pictured_rows:,} rows, in {result.seconds:.1f} s; open {result.page.resolve().as_uri()}"
    )
    return 0


def write_view(
    dataset: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    image_root: str | os.PathLike[str] | None = None,
    column_map: Any = None,
    split: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    allow_outside_root: bool = False,
    image_check: str = "header",
    workers: int | None = None,
    settings: CorruptionSettings | None = None,
    page_size: int = PAGE_SIZE,
    pages: str = DEFAULT_PAGES,
    progress: bool = False,
    command: str | None = None,
) -> ViewResult:
    """Write the page `output` (and its folder ``<stem>_files``) for ``dataset``; see `view_main`."""
    started = time.perf_counter()
    if page_size < 1:
        raise ConfigError(f"--page_size must be at least 1, got {page_size}")
    page = Path(output)
    if page.is_dir():
        raise ConfigError(f"--output {page} is a folder: name the page to write, e.g. {page / 'view.html'}")
    if settings is not None:  # before the rows are read: a wrong path is one line at once
        from chip.modeling.checks import check_model_path  # imports transformers: only with --model

        check_model_path(settings.model)
    with _no_cycle_collection():
        examples, report = load_preference_rows(
            dataset,
            image_root=image_root,
            on_bad_row="skip",
            max_pixels=max_pixels,
            allow_outside_root=allow_outside_root,
            image_check=image_check,
            num_workers=workers,
            progress=progress,
            column_map=column_map,
            split=split,
        )
        root = Path(image_root) if image_root is not None else None
        rows = view_rows(examples, report, dataset, split, root, allow_outside_root)
        files = page.with_name(f"{page.stem}_files")
        n_pages = max(1, math.ceil(len(rows) / page_size))
        pictured = _pictured_rows(rows, page_size, parse_pages(pages, n_pages))
        training = None
        if settings is not None:
            training = TrainingView(settings, examples)
            _check_with_processor([rows[row] for row in sorted(pictured)], report.source, training, settings)
        _prepare_folder(files)
        add_pictures(rows, pictured, files, page.parent, training, workers, progress)
        _add_notes(rows, training, pages)
        _write_chunks(rows, files, page_size)
        index = _index(report, rows, page_size, files.name, settings, pages, command)
        write_text_atomic(files / "index.js", f"window.CHIP_VIEW = {_json(index)};\n")
        for name in ("view.js", "view.css"):
            write_text_atomic(files / name, _asset(name))
        write_text_atomic(page, _asset("view.html").replace("@FILES@", html.escape(quote(files.name))))
        return ViewResult(page, len(rows), n_pages, len(pictured), time.perf_counter() - started)


@contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """Pause Python's cycle collector: rows, examples and page entries hold no reference cycles, and
    with 100k rows each full collection walks millions of live objects, which costs seconds."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def parse_pages(spec: str, n_pages: int) -> set[int]:
    """``"all"`` or ``"1-5,9"`` -> 0-based page numbers that exist; a malformed spec is a `ConfigError`."""
    if spec.strip() == "all":
        return set(range(n_pages))
    chosen: set[int] = set()
    for part in spec.split(","):
        first, _, last = part.strip().partition("-")
        try:
            low, high = int(first), int(last or first)
        except ValueError:
            raise ConfigError(f"--pages {spec!r}: expected page numbers such as 1-5,9 or `all`") from None
        if low < 1 or high < low:
            raise ConfigError(f"--pages {spec!r}: pages count from 1 and ranges go up (1-5)")
        chosen.update(range(low - 1, min(high, n_pages)))
    return chosen


def _pictured_rows(rows: list[ViewRow], page_size: int, pages: set[int]) -> set[int]:
    """Rows of the chosen pages, and the first page of rows with problems (the filter's first page)."""
    chosen = {row.row for row in rows if row.row // page_size in pages}
    with_issues = [row.row for row in rows if row.fields["issues"]]
    return chosen | set(with_issues[:page_size])


def _check_with_processor(
    rows: list[ViewRow], source: str, training: TrainingView, settings: CorruptionSettings
) -> None:
    """`chip train`'s start-up checks that need the processor (special-token text, prompt length), on
    the rows with pictures only: on every row they would cost minutes for 100k rows."""
    found = DataReport(source)
    check_with_processor(
        [row.example for row in rows if row.example], found, training.adapter, settings.max_length
    )
    by_row = {row.row: row for row in rows}
    for bad in found.bad_rows:
        by_row[bad.row].fields["issues"].append([bad.field, bad.kind, bad.reason])
        by_row[bad.row].example = None


def _prepare_folder(files: Path) -> None:
    """Make ``<stem>_files``; old row chunks and corrupted images go, cached thumbnails stay."""
    for sub in ("rows", "corrupt", "thumbs"):
        (files / sub).mkdir(parents=True, exist_ok=True)
    for stale in [*(files / "rows").glob("*.js"), *(files / "corrupt").glob("*.png")]:
        stale.unlink()


def _add_notes(rows: list[ViewRow], training: TrainingView | None, pages: str) -> None:
    """Say on each row what the highlights are and why a picture is missing."""
    later = f"this view wrote them for --pages {pages}; add this row's page to --pages"
    for row in rows:
        fields = row.fields
        usable = row.example is not None
        given = fields["spans"]["chosen"] is not None or fields["spans"]["rejected"] is not None
        derived = fields.pop("derived", False)
        if derived and (fields["spans"]["chosen"] or fields["spans"]["rejected"]):
            note = "highlighted: the response tokens training flags as changed (token diff of the pair)"
        elif derived:
            note = (
                "training flags no token as changed: the token diff finds no replaced run "
                "(a pure insertion or deletion counts only with --mark_insertions)"
            )
        elif given:
            note = "highlighted: the changed segments the row gives"
        elif not usable:
            note = "no segments: training does not use this row"
        elif training is None:
            note = "the row gives no segments: training derives them from the token diff; pass --model to see them"
        else:
            note = f"segments derived from the token diff are not written for this page: {later}"
        fields["seg_note"] = " · ".join(filter(None, [note, fields.pop("cut_note", None)]))
        if fields["corrupt"] is None and "corrupt_note" not in fields:
            if not usable:
                fields["corrupt_note"] = "none: training does not use this row"
            elif training is None:
                fields["corrupt_note"] = (
                    "pass --model (and chip train's --corruption, --noise_step, --seed) to see it: "
                    "the model's processor decides the pixels training corrupts"
                )
            else:
                fields["corrupt_note"] = f"not written for this page: {later}"
        fields.setdefault("corrupt_note", None)


def _write_chunks(rows: list[ViewRow], files: Path, page_size: int) -> None:
    for number in range(max(1, math.ceil(len(rows) / page_size))):
        chunk = [
            {"row": row.row, **row.fields} for row in rows[number * page_size : (number + 1) * page_size]
        ]
        text = f"chipView.chunk({number}, {_json(chunk)});\n"
        write_text_atomic(files / "rows" / f"{number:06d}.js", text)


def _index(
    report: DataReport,
    rows: list[ViewRow],
    page_size: int,
    files_name: str,
    settings: CorruptionSettings | None,
    pages: str,
    command: str | None,
) -> dict[str, Any]:
    """The page's table of contents: summary lines and the row lists of each filter."""
    bad = [row.row for row in rows if row.fields["issues"]]
    warned = [row.row for row in rows if row.fields["warnings"]]
    by_kind: dict[str, list[int]] = {}
    for row in rows:
        for kind in dict.fromkeys(entry[1] for entry in row.fields["issues"] + row.fields["warnings"]):
            by_kind.setdefault(kind, []).append(row.row)
    filters = [
        {"key": "all", "label": "all rows", "rows": None},
        {"key": "issues", "label": "rows with problems", "rows": bad},
        {"key": "warnings", "label": "rows with warnings", "rows": warned},
    ] + [{"key": f"kind:{kind}", "label": kind, "rows": by_kind[kind]} for kind in sorted(by_kind)]
    summary = [f"{len(rows):,} rows, {len(rows) - len(bad):,} usable, {len(bad):,} with problems"]
    summary += [report.description] if report.description else []
    summary += report.mapping.describe_lines() if report.mapping is not None else []
    if settings is None:
        summary.append("no --model: no corrupted image, and rows without segments are not highlighted")
    else:
        summary.append(
            f"corrupted image and derived segments from the training collator: model {settings.model}, "
            f"--corruption {settings.corruption} --noise_step {settings.noise_step} --seed {settings.seed} "
            f"--max_length {settings.max_length} --segment_min_match {settings.segment_min_match}"
            + (" --mark_insertions" if settings.mark_insertions else "")
            + "; the processor's checks (special-token text, prompt length) ran on the rows with pictures"
        )
    summary.append(f"pictures written for --pages {pages} and the first {page_size} rows with problems")
    if command:
        summary.append(f"written by: {command}")
    return {
        "source": report.source,
        "summary": summary,
        "total": len(rows),
        "page_size": page_size,
        "files": quote(files_name),
        "filters": filters,
    }


def _json(value: Any) -> str:
    # ASCII escapes keep the files valid UTF-8 even for text holding lone surrogates.
    return json.dumps(value, ensure_ascii=True, separators=(",", ":"))


def _asset(name: str) -> str:
    return resources.files("chip.data").joinpath("view_page", name).read_text(encoding="utf-8")


# chip train's defaults for the settings the page shows with --model (a test ties them to ChipConfig;
# importing the training config here would load transformers before the page needs it).
MODEL_DEFAULTS = {
    "corruption": "diffusion",
    "noise_step": 500,
    "seed": 42,
    "max_length": 2048,
    "segment_min_match": 3,
    "mark_insertions": False,
}


def _parser() -> OneLineParser:
    parser = OneLineParser(prog="chip data view", description=view_main.__doc__)
    add_dataset_arguments(parser, image_check="header")
    parser.add_argument("--output", required=True, help="the page to write, e.g. view.html")
    parser.add_argument(
        "--page_size", type=int, default=PAGE_SIZE, help=f"rows per page (default {PAGE_SIZE})"
    )
    parser.add_argument(
        "--pages",
        default=DEFAULT_PAGES,
        help=f"pages whose pictures are written: 1-5,9 or all (default {DEFAULT_PAGES})",
    )
    group = parser.add_argument_group("as training sees it (chip train's settings and defaults)")
    group.add_argument("--model", default=None, help="model folder or hub id: its processor and tokenizer")
    helps = {
        "corruption": "the corrupted image ṽ",
        "noise_step": "diffusion step k of the noised image (0..999)",
        "seed": "run seed; with the row's id it fixes the corruption",
        "max_length": "longest prompt + response in tokens (training cuts responses beyond it)",
        "segment_min_match": "shortest matching token run that anchors the chosen/rejected alignment",
    }
    for name, help_text in helps.items():
        group.add_argument(
            f"--{name}",
            type=type(MODEL_DEFAULTS[name]),
            default=MODEL_DEFAULTS[name],
            choices=CORRUPTION_KINDS if name == "corruption" else None,
            help=f"{help_text} (default {MODEL_DEFAULTS[name]})",
        )
    group.add_argument(
        "--mark_insertions", action="store_true", help="also flag pure insertions/deletions as changed"
    )
    return parser
