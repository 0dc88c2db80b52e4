"""Rows held in memory (a list of dicts, a `datasets.Dataset`) are read as the same rows on disk are."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from chip.data import load_preference_rows
from tests.train_helpers import write_pairs


def test_list_rows_with_pil_images_match_the_file(tmp_path):
    """A PIL image in a row becomes lossless bytes: the decoded pixels equal the file's."""
    data = write_pairs(tmp_path / "data", n=4)
    from_file, _ = load_preference_rows(data)
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    for row in rows:
        row["images"] = [Image.open(data.parent / row["images"][0])]
    in_memory, report = load_preference_rows(rows)
    assert report.source == "list of 4 rows" and report.ok
    assert [ex.chosen for ex in in_memory] == [ex.chosen for ex in from_file]
    for ours, theirs in zip(in_memory, from_file, strict=True):
        assert np.array_equal(np.asarray(ours.load_images()[0]), np.asarray(theirs.load_images()[0]))


def test_a_row_that_is_not_a_dict_is_reported_with_its_index(tmp_path):
    rows = [json.loads(line) for line in write_pairs(tmp_path / "data", n=2).read_text().splitlines()]
    examples, report = load_preference_rows(
        [*rows, "not a row"], image_root=tmp_path / "data", on_bad_row="skip"
    )
    assert len(examples) == 2
    assert [(bad.row, bad.kind) for bad in report.bad_rows] == [(2, "not_an_object")]
    assert "expected a dict per row, got str" in report.bad_rows[0].reason
