"""Rows that list several rejected responses: chip's form, TRL's conversational and implicit-prompt
forms, spans per response, and the one-line problems of a bad list."""

from __future__ import annotations

import json

from PIL import Image

from chip.data import load_preference_rows


def load(tmp_path, rows):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({"images": ["a.png"], **row}) + "\n" for row in rows))
    return load_preference_rows(path, on_bad_row="skip")


def turn(role, text):
    return {"role": role, "content": text}


def test_chip_form_with_spans_per_response(tmp_path):
    examples, report = load(
        tmp_path,
        [
            {
                "prompt": "q",
                "chosen": "a cat",
                "rejected": ["a dog", "two birds"],
                "rejected_segments": [[[2, 5]], None],
            }
        ],
    )
    assert report.ok
    (example,) = examples
    assert (example.rejected, example.rejected_segments) == ("a dog", [(2, 5)])
    assert (example.more_rejected, example.more_rejected_segments) == (("two birds",), (None,))
    assert example.all_rejected() == [("a dog", [(2, 5)]), ("two birds", None)]
    assert example.all_rejected(1) == [("a dog", [(2, 5)])]


def test_chosen_spans_per_rejected_response(tmp_path):
    """ "a cat sat" against "a dog sat" changes "cat" (2-5); against "a cat ran" it changes "sat"
    (6-9): one chosen span list per rejected response, the first kept as `chosen_segments`."""
    row = {"prompt": "q", "chosen": "a cat sat", "rejected": ["a dog sat", "a cat ran"]}
    examples, report = load(
        tmp_path,
        [
            {**row, "chosen_segments": [[[2, 5]], [[6, 9]]], "rejected_segments": [[[2, 5]], [[6, 9]]]},
            {**row, "chosen_segments": [[2, 5]]},  # one list: the same spans in every pair
        ],
    )
    assert report.ok
    each, shared = examples
    assert (each.chosen_segments, each.more_chosen_segments) == ([(2, 5)], ([(6, 9)],))
    assert [each.chosen_segments_against(k) for k in (0, 1)] == [[(2, 5)], [(6, 9)]]
    assert (shared.chosen_segments, shared.more_chosen_segments) == ([(2, 5)], ())
    assert [shared.chosen_segments_against(k) for k in (0, 1)] == [[(2, 5)], [(2, 5)]]


def test_trl_forms(tmp_path):
    conversational = {
        "prompt": [turn("user", "q")],
        "chosen": [turn("assistant", "yes")],
        "rejected": [[turn("assistant", "no")], [turn("assistant", "never")]],
    }
    implicit = {
        "chosen": [turn("user", "q"), turn("assistant", "yes")],
        "rejected": [
            [turn("user", "q"), turn("assistant", "no")],
            [turn("user", "q"), turn("assistant", "never")],
        ],
    }
    examples, report = load(tmp_path, [conversational, implicit])
    assert report.ok
    for example in examples:
        assert (example.chosen, example.rejected, example.more_rejected) == ("yes", "no", ("never",))
    # one message list is still one response
    (single,), _ = load(tmp_path, [{"prompt": "q", "chosen": "yes", "rejected": [turn("assistant", "no")]}])
    assert (single.rejected, single.more_rejected) == ("no", ())


def test_bad_lists_are_one_line_each(tmp_path):
    _, report = load(
        tmp_path,
        [
            {"prompt": "q", "chosen": "x", "rejected": ["y", "x"]},
            {"prompt": "q", "chosen": "x", "rejected": ["y", "z"], "rejected_segments": [[0, 1]]},
            {"prompt": "q", "chosen": "x", "rejected": ["y", "  "]},
            {
                "prompt": "q",
                "chosen": "x",
                "rejected": ["y", "zz"],
                "rejected_segments": [[[0, 1]], [[0, 9]]],
            },
            {
                "chosen": [turn("user", "q"), turn("assistant", "yes")],
                "rejected": [
                    [turn("user", "q"), turn("assistant", "no")],
                    [turn("user", "other"), turn("assistant", "n")],
                ],
            },
            {"prompt": "q", "chosen": "xx", "rejected": ["y", "z"], "chosen_segments": [[[0, 1]]]},
            {"prompt": "q", "chosen": "xx", "rejected": ["y", "z"], "chosen_segments": [[[0, 1]], [[0, 3]]]},
        ],
    )
    problems = sorted((bad.row, bad.field, bad.reason) for bad in report.bad_rows)
    assert [(row, field) for row, field, _ in problems] == [
        (0, "rejected"),
        (1, "rejected_segments"),
        (2, "rejected"),
        (3, "rejected_segments"),
        (4, "prompt"),
        (5, "chosen_segments"),
        (6, "chosen_segments"),
    ]
    assert "item 1 is identical to chosen" in problems[0][2]
    assert "1 span list(s) for 2 rejected responses" in problems[1][2]
    assert problems[2][2].startswith("item 1: ")
    assert problems[3][2].startswith("item 1: ")
    assert "1 span list(s) for 2 rejected responses" in problems[5][2]
    assert problems[6][2].startswith("item 1: ")
