"""Changed-segment detection and span mapping, on token sequences worked out by hand."""

from __future__ import annotations

import pytest

from chip import changed_segments
from chip.segments import spans_to_token_flags, validate_spans


def flags(text: str) -> list[bool]:
    """'..x.' -> [False, False, True, False]: one char per token, x = changed."""
    return [c == "x" for c in text]


def test_replacement_marks_both_sides():
    """[1 2 3 4 | 5 | 6 7 8] vs [1 2 3 4 | 9 9 | 6 7 8]: anchors of 4 and 3 tokens, 5 <-> 9 9 replaced."""
    chosen, rejected = [1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 3, 4, 9, 9, 6, 7, 8]
    assert changed_segments(chosen, rejected) == (flags("....x..."), flags("....xx..."))


def test_pure_insertion_and_deletion_need_mark_insertions():
    """[1 2 3 4 5 6] vs [1 2 3 7 4 5 6]: 7 is inserted (chosen side of the gap is empty)."""
    chosen, rejected = [1, 2, 3, 4, 5, 6], [1, 2, 3, 7, 4, 5, 6]
    assert changed_segments(chosen, rejected) == (flags("......"), flags("......."))
    assert changed_segments(chosen, rejected, mark_insertions=True) == (flags("......"), flags("...x..."))
    # the mirror image is a deletion from chosen
    assert changed_segments(rejected, chosen, mark_insertions=True) == (flags("...x..."), flags("......"))


def test_identical_and_disjoint():
    assert changed_segments([1, 2, 3, 4], [1, 2, 3, 4]) == (flags("...."), flags("...."))
    assert changed_segments([1, 2, 3], [4, 5]) == (flags("xxx"), flags("xx"))


def test_empty_side_is_an_insertion():
    assert changed_segments([], [1, 2]) == ([], flags(".."))
    assert changed_segments([], [1, 2], mark_insertions=True) == ([], flags("xx"))


def test_short_matches_below_min_match_do_not_anchor():
    """[1 2 3 | 9 4 9 | 6 7 8] vs [1 2 3 | 0 4 0 | 6 7 8]: '4' matches alone (size 1 < 3), so the
    whole middle is one replaced segment; with min_match=1 '4' anchors and only 9 <-> 0 change."""
    chosen, rejected = [1, 2, 3, 9, 4, 9, 6, 7, 8], [1, 2, 3, 0, 4, 0, 6, 7, 8]
    assert changed_segments(chosen, rejected) == (flags("...xxx..."), flags("...xxx..."))
    assert changed_segments(chosen, rejected, min_match=1) == (flags("...x.x..."), flags("...x.x..."))


def test_several_replacements_and_a_trailing_gap():
    """Two replacements separated by a 3-token anchor, then a replaced tail."""
    chosen = [1, 2, 3, 10, 4, 5, 6, 11, 12]
    rejected = [1, 2, 3, 20, 21, 4, 5, 6, 22]
    assert changed_segments(chosen, rejected) == (flags("...x...xx"), flags("...xx...x"))


def test_invalid_min_match():
    with pytest.raises(ValueError):
        changed_segments([1], [1], min_match=0)


def test_spans_to_token_flags_overlap_rules():
    """'a red cat .' tokens a[0,1) red[2,5) cat[6,9) .[10,11) eos[11,11); span [2, 7) touches red and cat."""
    offsets = [(0, 1), (2, 5), (6, 9), (10, 11), (11, 11)]
    assert spans_to_token_flags(offsets, [[2, 7]]) == flags(".xx..")
    assert spans_to_token_flags(offsets, [[5, 6]]) == flags(".....")  # only the space between tokens
    assert spans_to_token_flags(offsets, [[0, 11]]) == flags("xxxx.")  # empty special token never flagged
    assert spans_to_token_flags(offsets, []) == flags(".....")


@pytest.mark.parametrize(
    ("spans", "reason"),
    [
        ([[0, 3]], None),
        ([[3, 2]], "reversed"),
        ([[0, 99]], "out of range"),
        ([[-1, 2]], "out of range"),
        ([[0]], "pair"),
        ("0-3", "list"),
        ([[0.5, 2]], "non-integer"),
    ],
)
def test_validate_spans(spans, reason):
    result = validate_spans(spans, text_length=10)
    if reason is None:
        assert result is None
    else:
        assert reason in result
