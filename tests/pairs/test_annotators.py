"""Mention spans, the COCO and objects annotators, and the report's escaping."""

from __future__ import annotations

import json

import pytest

from chip.errors import DataError
from chip.evaluation.chair import COCO_VOCABULARY, official_coco_reader
from chip.markup import escape_markdown
from chip.pairs.annotators import coco_annotator, coco_image_id, objects_annotator, read_objects
from chip.pairs.mentions import MentionLocator
from chip.pairs.report import mark_spans
from chip.pairs.sources import folder_items, pick_prompt
from tests.pairs.conftest import PROMPT, TRUTH, image_name


def placed(text: str, reader) -> list[str] | None:
    spans = MentionLocator(reader).spans(text)
    return None if spans is None else [text[s:e] for s, e in spans]


@pytest.mark.parametrize(
    ("text", "official", "corrected"),
    [
        # plural, two-word phrase ("hot dog" is a class; "dogs" a dog)
        ("Two dogs and a hot dog.", ["dogs", "hot dog"], ["dogs", "hot dog"]),
        # the toilet-seat rule drops every "seat": "chair" alone is a span
        ("A toilet seat next to a chair seat.", ["toilet", "chair"], ["toilet", "chair"]),
        # official: singular "bus" is no object (Pattern makes it "bu"), "buses" is; corrected: both are
        ("A baby elephant, buses and a bus.", ["elephant", "buses"], ["elephant", "buses", "bus"]),
        # "people" is a person; a period Punkt keeps on its word hides "cat" from the official reading
        ("People on skis. The cat.A dog.", ["People", "skis", "dog"], ["People", "skis", "cat", "dog"]),
    ],
)
def test_mention_spans_by_hand(text: str, official: list[str], corrected: list[str]) -> None:
    assert placed(text, official_coco_reader()) == official
    assert placed(text, COCO_VOCABULARY) == corrected


def test_coco_annotator_counts_and_marks(coco) -> None:
    """Image 3 shows a car and a man (person). "Two cars, a truck and a cat near a truck." names
    car x2 (true), truck x2 and cat (hallucinated: 3, repeats count), coverage 1 (car)."""
    items, _ = folder_items(coco.images, [PROMPT], seed=0)
    annotator = coco_annotator(coco.annotations, items, "official")
    assert annotator.truth[image_name(3)] == TRUTH[3]
    text = "Two cars, a truck and a cat near a truck."
    found = annotator.annotate_text(text, TRUTH[3])
    assert (found.hallucinations, found.coverage) == (3, 1)
    assert [text[s:e] for s, e in found.spans] == ["truck", "cat", "truck"]
    assert found.hallucinated == ("truck", "cat", "truck")
    assert coco_image_id("COCO_val2014_000000391895.jpg") == 391895
    assert coco_image_id("000000000042.jpg") == 42 and coco_image_id("photo.jpg") is None


def test_objects_file_formats_and_errors(coco, tmp_path) -> None:
    items, _ = folder_items(coco.images, [PROMPT], seed=0)
    lines = tmp_path / "objects.jsonl"
    lines.write_text(
        "".join(
            json.dumps(
                {
                    "image": image_name(k),
                    "objects": ["dog", {"name": "Teddy  Bear", "synonyms": ["plush toy"]}],
                }
            )
            + "\n"
            for k in TRUTH
        )
    )
    per_image, synonyms = read_objects(lines)
    assert per_image[image_name(1)] == ["dog", "teddy bear"]
    assert synonyms == {"dog": "dog", "teddy bear": "teddy bear", "plush toy": "teddy bear"}
    annotator = objects_annotator(lines, items)
    found = annotator.annotate_text("Two plush toys and a cat.", frozenset({"dog"}))
    assert (found.hallucinations, found.hallucinated) == (
        1,
        ("teddy bear",),
    )  # "cat" is not in the vocabulary

    bad = {
        "has 3 words": {image_name(1): ["big red truck"]},
        "already names": {image_name(1): [{"name": "cup", "synonyms": ["mug"]}, {"name": "mug"}]},
    }
    for match, content in bad.items():
        path = tmp_path / "bad.json"
        path.write_text(json.dumps(content))
        with pytest.raises(DataError, match=match):
            read_objects(path)
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({image_name(1): ["dog"]}))
    with pytest.raises(DataError, match=r"no objects for 3 image\(s\)"):
        objects_annotator(partial, items)
    listed_twice = tmp_path / "twice.jsonl"
    listed_twice.write_text(
        json.dumps({"image": "a.jpg", "objects": []}) + "\n" + json.dumps({"image": "a.jpg", "objects": []})
    )
    with pytest.raises(DataError, match=r"twice.jsonl:2: image 'a.jpg' is listed twice"):
        read_objects(listed_twice)


def test_prompt_choice_is_per_item_not_per_order() -> None:
    prompts = ["p0", "p1", "p2", "p3"]
    chosen = {key: pick_prompt(prompts, key, seed=0) for key in ("a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg")}
    assert chosen == {key: pick_prompt(prompts, key, seed=0) for key in reversed(list(chosen))}
    assert len(set(chosen.values())) > 1
    assert any(pick_prompt(prompts, key, seed=1) != value for key, value in chosen.items())


def test_markdown_escaping_renders_text_as_text() -> None:
    """A <script> tag, a Markdown link and emphasis in a response show as their characters."""
    markdown_it = pytest.importorskip("markdown_it")
    text = 'A <script>alert("x")</script> and [a link](http://example.com) *loud* _x_ | `code`'
    html = (
        markdown_it.MarkdownIt("commonmark")
        .enable("table")
        .render(f"| a |\n|---|\n| {escape_markdown(text)} |\n\n- {mark_spans(text, [[2, 10]], 'b')}\n")
    )
    assert "<script>" not in html and "<a " not in html and "<em>" not in html and "<code>" not in html
    assert "&lt;script&gt;" in html and "[a link](http://example.com)" in html
    assert "<b>&lt;script&gt;</b>alert" in html
