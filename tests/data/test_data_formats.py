"""The same rows stored as JSON Lines, parquet, a `datasets` folder or RLHF-V parquet load identically."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from chip.data import PreferenceExample, load_preference_rows
from chip.errors import DataError

ROWS: list[dict[str, Any]] = [
    {
        "id": "a",
        "images": ["img/red.png"],
        "prompt": "Describe the image.",
        "chosen": "A red square.",
        "rejected": "A blue square.",
        "chosen_segments": [[2, 5]],
        "rejected_segments": [[2, 6]],
    },
    {
        "id": "b",
        "images": ["img/cmyk.jpg"],
        "prompt": "What colour is it?",
        "chosen": "It is red.",
        "rejected": "It is green, with a dog.",
        "chosen_segments": None,
        "rejected_segments": None,
    },
    {  # no id: the row index becomes the id
        "id": None,
        "images": ["img/gray16.png"],
        "prompt": "Is it dark?",
        "chosen": "Mid grey.",
        "rejected": "Pure white.",
        "chosen_segments": [],
        "rejected_segments": [[0, 4]],
    },
]


def _inline(rows: list[dict[str, Any]], root: Path) -> list[dict[str, Any]]:
    """The rows with each image path replaced by {bytes, path}, as the Hub stores images."""
    return [
        {**row, "images": [{"bytes": (root / name).read_bytes(), "path": name} for name in row["images"]]}
        for row in rows
    ]


def _rlhfv(rows: list[dict[str, Any]], root: Path) -> list[dict[str, Any]]:
    """The RLHF-V layout: `text` is a JSON string, `image` is {bytes, path}, `idx` is the id."""
    out = []
    for row in rows:
        text = {"question": row["prompt"], "chosen": row["chosen"], "rejected": row["rejected"]}
        if row["chosen_segments"] is not None:
            text |= {"chosen_segments": row["chosen_segments"], "rejected_segments": row["rejected_segments"]}
        (name,) = row["images"]
        out.append(
            {
                "ds_name": "synthetic",
                "image": {"bytes": (root / name).read_bytes(), "path": name},
                "text": json.dumps(text),
                "origin_dataset": "test",
                "idx": row["id"],
            }
        )
    return out


def write_jsonl_rows(root: Path, rows: list[dict[str, Any]], name: str) -> Path:
    path = root / f"{name}.jsonl"
    path.write_text(
        "".join(json.dumps({k: v for k, v in row.items() if v is not None}) + "\n" for row in rows)
    )
    return path


def write_parquet(root: Path, rows: list[dict[str, Any]], name: str) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), root / f"{name}.parquet")
    return root / f"{name}.parquet"


def write_datasets_folder(root: Path, rows: list[dict[str, Any]], name: str) -> Path:
    datasets.Dataset.from_list(rows).save_to_disk(str(root / name))
    return root / name


def write_datasets_image_feature(root: Path, rows: list[dict[str, Any]], name: str) -> Path:
    """A `datasets` folder whose images column has the Image feature (bytes embedded)."""
    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "images": datasets.List(datasets.Image()),
            "prompt": datasets.Value("string"),
            "chosen": datasets.Value("string"),
            "rejected": datasets.Value("string"),
            "chosen_segments": datasets.List(datasets.List(datasets.Value("int64"))),
            "rejected_segments": datasets.List(datasets.List(datasets.Value("int64"))),
        }
    )
    datasets.Dataset.from_list(_inline(rows, root), features=features).save_to_disk(str(root / name))
    return root / name


# name -> writer of (data root, the rows in API.md's form, a file name) -> the path to load
WRITERS: dict[str, Callable[[Path, list[dict[str, Any]], str], Path]] = {
    "jsonl": write_jsonl_rows,
    "parquet": write_parquet,
    "parquet_inline_bytes": lambda root, rows, name: write_parquet(root, _inline(rows, root), name),
    "datasets_folder": write_datasets_folder,
    "datasets_image_feature": write_datasets_image_feature,
    "rlhfv_parquet": lambda root, rows, name: write_parquet(root, _rlhfv(rows, root), name),
}


def summary(example: PreferenceExample) -> tuple:
    """Everything a training step would see of an example, with images as decoded pixels."""
    return (
        example.id,
        example.row,
        example.prompt,
        example.chosen,
        example.rejected,
        example.chosen_segments,
        example.rejected_segments,
        [np.asarray(image).tobytes() for image in example.load_images()],
    )


@pytest.fixture(scope="module")
def expected(corpus_root: Path) -> list[tuple]:
    examples, _ = load_preference_rows(write_jsonl_rows(corpus_root, ROWS, "formats_reference"))
    return [summary(example) for example in examples]


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_every_format_loads_the_same_examples(fmt: str, corpus_root: Path, expected: list[tuple]) -> None:
    path = WRITERS[fmt](corpus_root, ROWS, f"formats_{fmt}")

    examples, report = load_preference_rows(path)

    assert report.ok and report.total_rows == 3
    assert [summary(example) for example in examples] == expected
    assert [example.id for example in examples] == ["a", "b", "2"]
    assert examples[0].chosen_segments == [(2, 5)] and examples[2].chosen_segments == []


def test_bad_rlhfv_text_is_named_by_its_stored_field(corpus_root: Path) -> None:
    rows = _rlhfv(ROWS[:2], corpus_root)
    rows[0]["text"] = "{not json"
    rows[1]["text"] = json.dumps({"question": "q?", "chosen": "yes"})
    path = write_parquet(corpus_root, rows, "rlhfv_bad")

    _, report = load_preference_rows(path, on_bad_row="skip")

    assert [(bad.location, bad.field, bad.kind) for bad in report.bad_rows] == [
        ("row 0", "text", "invalid_json"),
        ("row 1", "text.rejected", "missing_field"),
    ]


def test_datasets_dict_reads_train_or_the_chosen_split_and_refuses_a_guess(corpus_root: Path) -> None:
    one = corpus_root / "dict_one"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS)}).save_to_disk(str(one))
    two = corpus_root / "dict_two"
    split = datasets.Dataset.from_list(ROWS)
    datasets.DatasetDict({"train": split, "test": split.select([0])}).save_to_disk(str(two))
    no_train = corpus_root / "dict_no_train"
    datasets.DatasetDict({"dev": split, "test": split}).save_to_disk(str(no_train))

    examples, _ = load_preference_rows(one, image_root=corpus_root)
    assert len(examples) == 3
    examples, report = load_preference_rows(two, image_root=corpus_root)
    assert len(examples) == 3 and report.description == "split train"
    examples, _ = load_preference_rows(two, image_root=corpus_root, split="test")
    assert len(examples) == 1
    with pytest.raises(DataError, match=r"several splits \(dev, test\) and none is 'train'.*--split dev"):
        load_preference_rows(no_train)
    with pytest.raises(DataError, match=r"has no split 'val'; its splits are test, train"):
        load_preference_rows(two, split="val")


def test_jsonl_line_numbers_skip_blank_lines_and_bom(corpus_root: Path) -> None:
    good = json.dumps({k: v for k, v in ROWS[0].items() if v is not None})
    bad = json.dumps({**ROWS[1], "chosen": ""})
    path = corpus_root / "blank_lines.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + good.encode() + b"\n\n   \n" + bad.encode() + b"\r\n\n")

    examples, report = load_preference_rows(path, on_bad_row="skip")

    assert [example.id for example in examples] == ["a"]
    assert report.total_rows == 2
    assert [(bad.row, bad.line, bad.field) for bad in report.bad_rows] == [(1, 4, "chosen")]


def test_multiple_images_per_row(corpus_root: Path, write_jsonl: Callable, good_row: dict) -> None:
    row = {**good_row, "images": ["img/red.png", "img/gray.png", "img/red.png"]}
    path = write_jsonl(corpus_root / "multi.jsonl", [row])

    examples, _ = load_preference_rows(path)

    refs = examples[0].images
    assert len(refs) == 3 and refs[0].key == refs[2].key != refs[1].key
    assert [image.size for image in examples[0].load_images()] == [(24, 24)] * 3


def test_broken_inline_bytes_are_reported(corpus_root: Path) -> None:
    truncated = (corpus_root / "img" / "truncated.png").read_bytes()
    base = _inline(ROWS[:1], corpus_root)[0]
    rows = [
        {**base, "id": "empty", "images": [{"bytes": b"", "path": None}]},
        {**base, "id": "cut", "images": [{"bytes": truncated, "path": None}]},
        {**base, "id": "text", "images": [{"bytes": b"<html>not found</html>", "path": None}]},
    ]
    path = write_parquet(corpus_root, rows, "bad_inline")

    _, report = load_preference_rows(path, on_bad_row="skip")

    assert [(bad.location, bad.field, bad.kind) for bad in report.bad_rows] == [
        ("row 0", "images[0]", "image_empty"),
        ("row 1", "images[0]", "image_corrupt"),
        ("row 2", "images[0]", "image_not_an_image"),
    ]
    assert "inline bytes" in report.bad_rows[2].reason and "text file" in report.bad_rows[2].reason
