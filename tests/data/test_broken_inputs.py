"""The corpus of broken inputs (issue 6): each one is named by row, field and reason, never a traceback.

Every case writes a two-line JSON Lines file, a good row on line 1 and the broken one on line 2,
and checks three views of the same problem: the `DataReport` entry (row, field, kind), the
`DataError` raised with `on_bad_row="error"`, and what `chip data check` prints.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from chip.cli import main as chip_main
from chip.data import BadRow, DataReport, apply_on_bad_row, check_lengths, load_preference_rows
from chip.errors import DataError

# chip.data silences Pillow's decompression-bomb warning at import (it applies its own max_pixels,
# see chip/data/images.py), but pytest resets warning filters per test; the real-process behaviour
# is checked in test_image_conversion.py.
pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")

RowMaker = Callable[[Path, dict[str, Any]], "dict[str, Any] | bytes"]


def with_changes(**changes: Any) -> RowMaker:
    """The good row with fields replaced (a value of `...` removes the field)."""

    def build(root: Path, good: dict[str, Any]) -> dict[str, Any]:
        row = {**good, "id": "broken"}
        for key, value in changes.items():
            if value is ...:
                row.pop(key, None)
            else:
                row[key] = value
        return row

    return build


@dataclass(frozen=True)
class Case:
    name: str
    row: RowMaker  # (data root, the good row) -> the broken row
    field: str
    kind: str
    fragment: str  # must appear in the reason


CASES = [
    Case(
        "missing_image_file", with_changes(images=["img/nope.jpg"]), "images[0]", "image_missing", "not found"
    ),
    Case("zero_byte_jpeg", with_changes(images=["img/empty.jpg"]), "images[0]", "image_empty", "0 bytes"),
    Case(
        "truncated_jpeg",
        with_changes(images=["img/truncated.jpg"]),
        "images[0]",
        "image_corrupt",
        "truncated",
    ),
    Case(
        "truncated_png", with_changes(images=["img/truncated.png"]), "images[0]", "image_corrupt", "truncated"
    ),
    Case(
        "text_named_jpg",
        with_changes(images=["img/text.jpg"]),
        "images[0]",
        "image_not_an_image",
        "text file",
    ),
    Case(
        "huge_image",
        with_changes(image="img/huge.png", images=...),
        "image",
        "image_too_large",
        "10000×10000",
    ),
    Case(
        "second_image_broken",
        with_changes(images=["img/rgb.jpg", "img/empty.jpg"]),
        "images[1]",
        "image_empty",
        "0 bytes",
    ),
    Case(
        "path_escapes_root",
        with_changes(images=["../outside.jpg"]),
        "images[0]",
        "image_outside_root",
        "outside",
    ),
    Case(
        "absolute_path_outside_root",
        lambda root, good: {**good, "id": "broken", "images": [str(root.parent / "outside.jpg")]},
        "images[0]",
        "image_outside_root",
        "outside",
    ),
    Case(
        "symlink_out_of_root",
        with_changes(images=["img/link_outside.jpg"]),
        "images[0]",
        "image_outside_root",
        "outside",
    ),
    Case("empty_image_path", with_changes(images=[""]), "images[0]", "image_bad_path", "empty"),
    Case(
        "nul_in_image_path",
        with_changes(images=["img/rgb.jpg\x00.png"]),
        "images[0]",
        "image_bad_path",
        "NUL",
    ),
    Case("image_path_is_a_folder", with_changes(images=["img"]), "images[0]", "image_missing", "not a file"),
    Case("empty_id", with_changes(id=" "), "id", "empty_text", "empty"),
    Case(
        "invalid_json_line",
        lambda root, good: b'{"id": "x", "prompt": ',
        "row",
        "invalid_json",
        "invalid JSON",
    ),
    Case(
        "non_utf8_bytes",
        lambda root, good: b'{"id": "x", "prompt": "caf\xe9", "chosen": "a", "rejected": "b"}',
        "row",
        "invalid_utf8",
        "0xe9",
    ),
    Case("line_not_an_object", lambda root, good: b'["a", "b"]', "row", "not_an_object", "JSON object"),
    Case("missing_chosen", with_changes(chosen=...), "chosen", "missing_field", "missing"),
    Case("missing_prompt", with_changes(prompt=...), "prompt", "missing_field", "missing"),
    Case("missing_images", with_changes(images=...), "images", "missing_field", "missing"),
    Case("empty_image_list", with_changes(images=[]), "images", "missing_field", "at least one image"),
    Case("chosen_wrong_type", with_changes(chosen=42), "chosen", "wrong_type", "got int"),
    Case("images_wrong_type", with_changes(images="img/rgb.jpg"), "images", "wrong_type", "got str"),
    Case("image_entry_wrong_type", with_changes(images=[3]), "images[0]", "wrong_type", "got int"),
    Case("id_wrong_type", with_changes(id=1.5), "id", "wrong_type", "got float"),
    Case("empty_chosen", with_changes(chosen=""), "chosen", "empty_text", "empty"),
    Case("blank_rejected", with_changes(rejected="  \n"), "rejected", "empty_text", "empty"),
    Case(
        "chosen_identical_to_rejected",
        lambda root, good: {**good, "id": "broken", "rejected": good["chosen"]},
        "rejected",
        "identical_responses",
        "identical",
    ),
    Case("lone_surrogate", with_changes(chosen="bad \ud800 text"), "chosen", "invalid_text", "surrogate"),
    Case(
        "segment_out_of_range",
        with_changes(chosen_segments=[[0, 999]]),
        "chosen_segments",
        "bad_segments",
        "out of range",
    ),
    Case(
        "segment_reversed",
        with_changes(rejected_segments=[[5, 2]]),
        "rejected_segments",
        "bad_segments",
        "reversed",
    ),
    Case(
        "segment_not_pairs",
        with_changes(chosen_segments=[[1, 2, 3]]),
        "chosen_segments",
        "bad_segments",
        "pair",
    ),
    Case("duplicate_id", lambda root, good: dict(good), "id", "duplicate_id", "already used by line 1"),
    Case("image_and_images", with_changes(image="img/rgb.jpg"), "images", "conflicting_fields", "both"),
    Case(
        "placeholders_mismatch",
        with_changes(prompt=[{"role": "user", "content": [{"type": "image"}, {"type": "image"}]}]),
        "prompt",
        "image_count_mismatch",
        "2 image placeholder",
    ),
    Case(
        "response_not_assistant",
        with_changes(chosen=[{"role": "user", "content": "hello"}]),
        "chosen",
        "bad_message",
        "one assistant message",
    ),
    Case(
        "message_bad_role",
        with_changes(prompt=[{"role": "robot", "content": "hi"}]),
        "prompt",
        "bad_message",
        "role 'robot'",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_broken_input_is_named_by_row_field_and_reason(
    case: Case,
    corpus_root: Path,
    tmp_path: Path,
    write_jsonl: Callable,
    good_row: dict,
    capsys: pytest.CaptureFixture,
) -> None:
    data = write_jsonl(corpus_root / f"{case.name}.jsonl", [good_row, case.row(corpus_root, good_row)])

    examples, report = load_preference_rows(data, on_bad_row="skip")
    assert [example.id for example in examples] == ["good"]
    assert report.total_rows == 2 and report.num_bad_rows == 1
    assert (case.field, case.kind) in {(bad.field, bad.kind) for bad in report.bad_rows}
    bad = next(bad for bad in report.bad_rows if bad.kind == case.kind)
    assert (bad.row, bad.line) == (1, 2)
    assert case.fragment in bad.reason

    with pytest.raises(DataError) as raised:
        load_preference_rows(data)
    message = str(raised.value)
    assert f"line 2, field {case.field!r}" in message and case.fragment in message

    assert chip_main(["data", "check", str(data)]) == 1
    out, err = capsys.readouterr()
    assert f"line 2, field {case.field!r}: " in out and case.fragment in out
    assert f"{case.kind}: 1" in out
    assert "Traceback" not in out + err


def test_all_broken_rows_together_are_each_reported_and_skipped(
    corpus_root: Path, write_jsonl: Callable, good_row: dict
) -> None:
    broken = [
        {**row, "id": f"broken-{k}"} if isinstance(row, dict) and row["id"] == "broken" else row
        for k, row in enumerate(
            case.row(corpus_root, good_row) for case in CASES if case.name != "duplicate_id"
        )
    ]
    data = write_jsonl(corpus_root / "all_broken.jsonl", [good_row, *broken, {**good_row, "id": "good2"}])

    examples, report = load_preference_rows(data, on_bad_row="skip")

    assert [example.id for example in examples] == ["good", "good2"]
    assert report.num_bad_rows == len(broken)
    assert report.bad_row_indices == set(range(1, len(broken) + 1))
    expected_kinds = {case.kind for case in CASES if case.name != "duplicate_id"}
    assert set(report.counts()) == expected_kinds
    assert sum(report.counts().values()) == len(broken)  # one problem per broken row
    with pytest.raises(DataError, match=rf"{len(broken)} of {len(broken) + 2} rows are unusable"):
        load_preference_rows(data, on_bad_row="error")


def test_allow_outside_root_accepts_escaping_paths(
    corpus_root: Path, write_jsonl: Callable, good_row: dict
) -> None:
    data = write_jsonl(corpus_root / "escape_allowed.jsonl", [{**good_row, "images": ["../outside.jpg"]}])

    examples, report = load_preference_rows(data, allow_outside_root=True)

    assert report.ok
    assert examples[0].load_images()[0].size == (16, 16)


def test_image_root_other_than_data_folder(corpus_root: Path, write_jsonl: Callable, good_row: dict) -> None:
    data = write_jsonl(corpus_root / "rooted.jsonl", [{**good_row, "images": ["rgb.jpg"]}])

    examples, report = load_preference_rows(data, image_root=corpus_root / "img")
    assert report.ok and examples[0].images[0].path == (corpus_root / "img" / "rgb.jpg").resolve()

    escaping = write_jsonl(
        corpus_root / "rooted_escape.jsonl", [good_row]
    )  # img/rgb.jpg from img/ is missing
    _, report = load_preference_rows(escaping, image_root=corpus_root / "img", on_bad_row="skip")
    assert [bad.kind for bad in report.bad_rows] == ["image_missing"]


def test_huge_image_limit_is_configurable_and_header_only(
    corpus_root: Path, write_jsonl: Callable, good_row: dict
) -> None:
    data = write_jsonl(corpus_root / "huge_allowed.jsonl", [{**good_row, "images": ["img/huge.png"]}])

    _, report = load_preference_rows(data, max_pixels=10**8, image_check="header")

    assert report.ok


def test_header_check_misses_truncation_that_decode_finds(
    corpus_root: Path, write_jsonl: Callable, good_row: dict
) -> None:
    """The fast path reads headers only: it is documented to miss a truncated body."""
    data = write_jsonl(corpus_root / "trunc_header.jsonl", [{**good_row, "images": ["img/truncated.png"]}])

    _, header_report = load_preference_rows(data, image_check="header", on_bad_row="skip")
    _, decode_report = load_preference_rows(data, image_check="decode", on_bad_row="skip")

    assert header_report.ok
    assert [bad.kind for bad in decode_report.bad_rows] == ["image_corrupt"]


def test_prompt_longer_than_max_length_is_reported_then_refused_or_skipped(
    corpus_root: Path, write_jsonl: Callable, good_row: dict
) -> None:
    long_row = {**good_row, "id": "long", "prompt": "word " * 50}
    data = write_jsonl(corpus_root / "long_prompt.jsonl", [good_row, long_row])
    examples, report = load_preference_rows(data)

    def count_words(example: Any) -> int:  # stands in for the processor: 1 token per word + 4 per image
        return len(example.prompt.split()) + 4 * len(example.images)

    too_long = check_lengths(examples, count_words, max_length=32)
    assert too_long == [
        BadRow(
            str(data),
            1,
            "prompt",
            "prompt_too_long",
            "the prompt takes 54 tokens (images included), leaving no room for a response within max_length=32",
            2,
        )
    ]
    report.bad_rows.extend(too_long)
    with pytest.raises(DataError, match=r"line 2, field 'prompt': the prompt takes 54 tokens"):
        apply_on_bad_row(examples, report, "error")
    kept = apply_on_bad_row(examples, report, "skip")
    assert [example.id for example in kept] == ["good"]
    assert report.counts() == {"prompt_too_long": 1}


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda root: root / "absent.jsonl", "dataset not found"),
        (lambda root: _write(root / "rows.csv", b"a,b\n"), "unsupported dataset format '.csv'"),
        (
            lambda root: _write(root / "garbage.parquet", b"not a parquet file at all"),
            "cannot read parquet file",
        ),
        (lambda root: root / "img", "not a `datasets` folder"),
    ],
    ids=["missing_file", "unknown_extension", "corrupt_parquet", "plain_folder"],
)
def test_unreadable_dataset_is_one_line_error(
    make: Callable[[Path], Path], fragment: str, corpus_root: Path, capsys: pytest.CaptureFixture
) -> None:
    path = make(corpus_root)

    with pytest.raises(DataError, match=fragment):
        load_preference_rows(path)
    assert chip_main(["data", "check", str(path)]) == 1
    out, err = capsys.readouterr()
    assert err.startswith("chip: error: ") and fragment in err
    assert err.count("\n") == 1 and "Traceback" not in out + err


def test_report_text_lists_counts_and_warnings(
    corpus_root: Path, write_jsonl: Callable, good_row: dict
) -> None:
    data = write_jsonl(
        corpus_root / "report.jsonl",
        [
            good_row,
            {**good_row, "id": "t", "images": ["img/tiny.png"]},
            {**good_row, "id": "e", "chosen": ""},
        ],
    )
    _, report = load_preference_rows(data, on_bad_row="skip")

    text = str(report)
    assert text.splitlines()[0] == f"{data}: 3 rows, 2 usable, 1 bad"
    assert "line 3, field 'chosen': is empty" in text
    assert "empty_text: 1" in text
    assert "line 2, field 'images[0]'" in text and "1×1 pixels" in text
    assert isinstance(report, DataReport) and [w.kind for w in report.warnings] == ["image_tiny"]


def _write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def test_image_beyond_pillows_own_limit_is_too_large_even_if_max_pixels_allows(
    tmp_path: Path, write_jsonl: Callable, good_row: dict
) -> None:
    """Above twice Image.MAX_IMAGE_PIXELS Pillow refuses at open; that is still 'too large'."""
    (tmp_path / "img").mkdir()
    Image.new("1", (15000, 15000)).save(tmp_path / "img" / "bomb.png")
    data = write_jsonl(tmp_path / "bomb.jsonl", [{**good_row, "images": ["img/bomb.png"]}])

    _, report = load_preference_rows(data, max_pixels=10**9, on_bad_row="skip")

    assert [(bad.field, bad.kind) for bad in report.bad_rows] == [("images[0]", "image_too_large")]
    assert "bomb.png is too large" in report.bad_rows[0].reason
