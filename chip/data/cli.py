"""`chip data check`: validate a preference dataset before spending GPU hours on it.

    chip data check data/train.jsonl --image_root data/images
    chip data check data/rlaif-v                       # a folder of parquet shards, as downloaded
    chip data check openbmb/RLAIF-V-Dataset            # a hub id (needs network, or the HF cache)
    chip data check my.parquet --column_map query=prompt,img=image

Prints the recognised layout and column mapping, every bad row (line or row index, field, reason),
a count per reason and any warnings, then exits 0 when every row is usable and 1 otherwise, so it
can gate a pipeline.
"""

from __future__ import annotations

from chip.cli import OneLineParser
from chip.data.images import DEFAULT_MAX_PIXELS
from chip.data.loading import load_preference_rows


def check_main(argv: list[str]) -> int:
    """Validate a preference dataset and report every unusable row.

    DATASET is a .jsonl, .json or .parquet file, a folder of such shards (as downloaded from the
    Hugging Face hub), a folder written by save_to_disk, a hub id (owner/name), or load_dataset
    arguments (name=parquet,data_files=data/*.parquet,split=train). Columns are recognised from
    the published layouts (RLAIF-V, RLHF-V, TRL, LLaVA conversations...); the summary shows the
    mapping, and --column_map COLUMN=FIELD changes it. Each image is opened and fully decoded
    (use --image_check header on very large datasets to read headers only). Exit status: 0 when every row is usable, 1 when any row is bad; an
    unreadable file is reported on one line with status 1.
    """
    args = _parser().parse_args(argv)
    _, report = load_preference_rows(
        args.file,
        image_root=args.image_root,
        on_bad_row="skip",
        max_pixels=args.max_pixels,
        allow_outside_root=args.allow_outside_root,
        image_check=args.image_check,
        num_workers=args.workers,
        progress=True,
        column_map=args.column_map,
        split=args.split,
    )
    print(report)
    return 0 if report.ok else 1


def _parser() -> OneLineParser:
    parser = OneLineParser(prog="chip data check", description=check_main.__doc__)
    add_dataset_arguments(parser)
    return parser


def add_dataset_arguments(parser: OneLineParser, image_check: str = "decode") -> None:
    """DATASET and the options that say how to read it (shared with `chip data view`)."""
    parser.add_argument(
        "file",
        metavar="DATASET",
        help="a .jsonl/.json/.parquet file, a folder of them, a save_to_disk folder, a hub id, or a spec",
    )
    parser.add_argument(
        "--column_map",
        action="append",
        default=None,
        metavar="COLUMN=FIELD",
        help="read COLUMN as FIELD (prompt, chosen, rejected, images, image, id, *_segments); "
        "repeatable or comma-separated, e.g. --column_map question=prompt,img=image",
    )
    parser.add_argument(
        "--split",
        "--dataset_split",
        default=None,
        help="split of a DatasetDict, shard folder or hub dataset (default: train)",
    )
    parser.add_argument(
        "--image_root",
        default=None,
        help="folder image paths are relative to (default: the data file's folder)",
    )
    parser.add_argument(
        "--max_pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        help=f"reject images with more pixels than this (default {DEFAULT_MAX_PIXELS:,})",
    )
    parser.add_argument(
        "--allow_outside_root", action="store_true", help="allow image paths that leave the image root"
    )
    parser.add_argument(
        "--image_check",
        choices=("decode", "header"),
        default=image_check,
        help=f"decode every image or only read headers (faster, misses truncated files); default {image_check}",
    )
    parser.add_argument("--workers", type=int, default=None, help="threads for image checks")
