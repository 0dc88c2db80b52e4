"""`prompts_only` loading: the prompts and images of any layout, without responses (for `chip pairs`)."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from chip.data import load_preference_rows
from chip.errors import DataError


@pytest.fixture
def folder(tmp_path):
    Image.new("RGB", (32, 32), (200, 30, 30)).save(tmp_path / "a.png")
    return tmp_path


def write(path, rows) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def test_prompt_rows_with_any_extra_column(folder) -> None:
    """RLAIF-V's `question` as the prompt, an unread `topic` column, one row without an image: the
    image-less row is reported, the others load with empty responses."""
    rows = [
        {"idx": 7, "question": "Describe it.", "image": "a.png", "topic": "x"},
        {"idx": 8, "question": "What colour?", "image": "a.png", "topic": "y"},
        {"idx": 9, "question": "No image here.", "image": None, "topic": "z"},
    ]
    examples, report = load_preference_rows(
        write(folder / "p.jsonl", rows), on_bad_row="skip", prompts_only=True
    )
    assert [(e.id, e.prompt, e.chosen, e.rejected) for e in examples] == [
        ("7", "Describe it.", "", ""),
        ("8", "What colour?", "", ""),
    ]
    assert [(bad.row, bad.field, bad.kind) for bad in report.bad_rows] == [(2, "images", "missing_field")]
    # The same file is not a preference dataset.
    with pytest.raises(DataError, match="no column for chosen, rejected"):
        load_preference_rows(folder / "p.jsonl", prompts_only=False)


def test_a_preference_dataset_gives_its_prompts(folder) -> None:
    """Responses, even identical or with bad spans, are not read in prompts_only mode."""
    row = {
        "id": "x",
        "prompt": "Describe it.",
        "images": ["a.png"],
        "chosen": "same",
        "rejected": "same",
        "rejected_segments": [[0, 99]],
    }
    path = write(folder / "pairs.jsonl", [row])
    with pytest.raises(DataError, match="identical"):
        load_preference_rows(path)
    examples, report = load_preference_rows(path, prompts_only=True)
    assert report.ok and examples[0].prompt == "Describe it." and examples[0].rejected_segments is None
