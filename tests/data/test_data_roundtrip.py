"""Property: any valid row survives being written as JSON Lines and loaded back, field for field."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from chip.data import load_preference_rows

VALID_IMAGES = ["img/rgb.jpg", "img/red.png", "img/cmyk.jpg", "img/palette_alpha.png", "img/gray16.png"]

TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=30)  # any Unicode but lone surrogates
NONBLANK = TEXT.filter(lambda text: text.strip() != "")


@st.composite
def spans(draw: st.DrawFn, text: str) -> list[list[int]]:
    bounds = st.tuples(st.integers(0, len(text)), st.integers(0, len(text))).filter(lambda p: p[0] < p[1])
    return [list(pair) for pair in draw(st.lists(bounds, max_size=3))]


@st.composite
def prompts(draw: st.DrawFn, n_images: int) -> str | list[dict[str, Any]]:
    """A plain string, or chat messages already in the normalised shape (so equality is exact)."""
    if draw(st.booleans()):
        return draw(TEXT)
    placeholders = [{"type": "image"}] * draw(st.sampled_from([0, n_images]))
    user = {"role": "user", "content": [*placeholders, {"type": "text", "text": draw(TEXT)}]}
    system = {"role": "system", "content": [{"type": "text", "text": draw(TEXT)}]}
    return [system, user] if draw(st.booleans()) else [user]


@st.composite
def valid_rows(draw: st.DrawFn) -> dict[str, Any]:
    images = draw(st.lists(st.sampled_from(VALID_IMAGES), min_size=1, max_size=2))
    chosen = draw(NONBLANK)
    rejected = draw(NONBLANK.filter(lambda text: text.strip() != chosen.strip()))
    row: dict[str, Any] = {"prompt": draw(prompts(len(images))), "chosen": chosen, "rejected": rejected}
    if len(images) == 1 and draw(st.booleans()):
        row["image"] = images[0]
    else:
        row["images"] = images
    optional = {
        "id": st.one_of(NONBLANK, st.integers(0, 10**9)),
        "chosen_segments": spans(chosen),
        "rejected_segments": spans(rejected),
    }
    for key, strategy in optional.items():
        if draw(st.booleans()):
            row[key] = draw(strategy)
    return row


def expected_id(row: dict[str, Any], index: int) -> str:
    return str(row.get("id", index))


def expected_spans(row: dict[str, Any], key: str) -> list[tuple[int, int]] | None:
    return [tuple(span) for span in row[key]] if key in row else None


@settings(max_examples=40, deadline=None)
@given(rows=st.lists(valid_rows(), min_size=1, max_size=4))
def test_valid_rows_round_trip_through_jsonl(
    rows: list[dict[str, Any]], corpus_root: Path, write_jsonl: Callable
) -> None:
    ids = [expected_id(row, k) for k, row in enumerate(rows)]
    assume(len(set(ids)) == len(ids))
    path = write_jsonl(corpus_root / "roundtrip.jsonl", rows)

    examples, report = load_preference_rows(path)

    assert report.ok and report.total_rows == len(rows)
    for k, (row, example) in enumerate(zip(rows, examples, strict=True)):
        assert (example.id, example.row, example.line) == (ids[k], k, k + 1)
        assert example.prompt == row["prompt"]
        assert (example.chosen, example.rejected) == (row["chosen"], row["rejected"])
        assert example.chosen_segments == expected_spans(row, "chosen_segments")
        assert example.rejected_segments == expected_spans(row, "rejected_segments")
        images = row.get("images", [row.get("image")])
        assert [ref.path for ref in example.images] == [(corpus_root / name).resolve() for name in images]
