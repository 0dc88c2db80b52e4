"""Chat-message rows (TRL's convention) normalise to one shape, whatever the storage."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from chip.data import load_preference_rows

USER_WITH_IMAGE = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is shown?"}]}
NORMALISED_PROMPT = [
    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is shown?"}]}
]


def chat_row(**changes: Any) -> dict[str, Any]:
    row = {
        "id": "chat",
        "images": ["img/red.png"],
        "prompt": [USER_WITH_IMAGE],
        "chosen": [{"role": "assistant", "content": [{"type": "text", "text": "A red square."}]}],
        "rejected": [
            {
                "role": "assistant",
                "content": [{"type": "text", "text": "A red "}, {"type": "text", "text": "cat."}],
            }
        ],
    }
    return {**row, **changes}


def test_messages_become_prompt_list_and_assistant_text(corpus_root: Path, write_jsonl: Callable) -> None:
    path = write_jsonl(corpus_root / "chat.jsonl", [chat_row()])

    (example,), report = load_preference_rows(path)

    assert report.ok
    assert example.prompt == NORMALISED_PROMPT
    assert (example.chosen, example.rejected) == ("A red square.", "A red cat.")


def test_string_content_and_system_turn_are_normalised(corpus_root: Path, write_jsonl: Callable) -> None:
    row = chat_row(
        prompt=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Describe."}],
        chosen=[{"role": "assistant", "content": "Red."}],
    )
    path = write_jsonl(corpus_root / "chat_strings.jsonl", [row])

    (example,), _ = load_preference_rows(path)

    assert example.prompt == [
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": [{"type": "text", "text": "Describe."}]},
    ]
    assert example.chosen == "Red."


@pytest.mark.parametrize("storage", ["parquet", "datasets"])
def test_messages_from_columnar_storage_match_jsonl(
    storage: str, corpus_root: Path, write_jsonl: Callable
) -> None:
    """Parquet structs carry every key of the union type ({"type": "image", "text": None})."""
    rows = [chat_row(), chat_row(id="chat2", images=["img/gray.png"])]
    reference, _ = load_preference_rows(write_jsonl(corpus_root / "chat_ref.jsonl", rows))
    if storage == "parquet":
        path = corpus_root / "chat.parquet"
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        path = corpus_root / "chat_ds"
        datasets.Dataset.from_list(rows).save_to_disk(str(path))

    examples, report = load_preference_rows(path)

    assert report.ok
    assert [(e.id, e.prompt, e.chosen, e.rejected) for e in examples] == [
        (e.id, e.prompt, e.chosen, e.rejected) for e in reference
    ]


def test_implicit_prompt_is_split_from_whole_conversations(corpus_root: Path, write_jsonl: Callable) -> None:
    row = {
        "id": "implicit",
        "images": ["img/red.png"],
        "chosen": [USER_WITH_IMAGE, {"role": "assistant", "content": "A red square."}],
        "rejected": [USER_WITH_IMAGE, {"role": "assistant", "content": "A red cat."}],
    }
    mismatched = {
        **row,
        "id": "mismatched",
        "rejected": [{"role": "user", "content": "Other?"}, {"role": "assistant", "content": "A cat."}],
    }
    path = write_jsonl(corpus_root / "implicit.jsonl", [row, mismatched])

    examples, report = load_preference_rows(path, on_bad_row="skip")

    assert [(e.prompt, e.chosen, e.rejected) for e in examples] == [
        (NORMALISED_PROMPT, "A red square.", "A red cat.")
    ]
    assert [(bad.line, bad.field, bad.kind) for bad in report.bad_rows] == [(2, "prompt", "missing_field")]
    assert "differ before their last turn" in report.bad_rows[0].reason


@pytest.mark.parametrize(
    ("changes", "field", "fragment"),
    [
        ({"prompt": [{"role": "assistant", "content": "Hi"}]}, "prompt", "must be 'user'"),
        ({"prompt": []}, "prompt", "empty list of messages"),
        ({"prompt": [{"role": "user", "content": [{"type": "video"}]}]}, "prompt", "part 0"),
        ({"prompt": [{"role": "user", "content": 7}]}, "prompt", "content is int"),
        ({"prompt": ["hello"]}, "prompt", "message 0 is str"),
        ({"chosen": [{"role": "assistant", "content": [{"type": "image"}]}]}, "chosen", "image parts"),
        ({"rejected": [{"role": "assistant", "content": "  "}]}, "rejected", "is empty"),
    ],
    ids=[
        "ends_with_assistant",
        "no_messages",
        "unknown_part",
        "content_int",
        "message_str",
        "image_in_response",
        "blank",
    ],
)
def test_malformed_messages_are_reported(
    changes: dict, field: str, fragment: str, corpus_root: Path, write_jsonl: Callable
) -> None:
    path = write_jsonl(corpus_root / "chat_bad.jsonl", [chat_row(**changes)])

    _, report = load_preference_rows(path, on_bad_row="skip")

    assert [bad.field for bad in report.bad_rows] == [field]
    assert fragment in report.bad_rows[0].reason


def test_placeholders_for_several_images(corpus_root: Path, write_jsonl: Callable) -> None:
    prompt = [
        {"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Same?"}]}
    ]
    path = write_jsonl(
        corpus_root / "two_images.jsonl", [chat_row(prompt=prompt, images=["img/red.png", "img/gray.png"])]
    )

    (example,), report = load_preference_rows(path)

    assert report.ok and len(example.images) == 2
