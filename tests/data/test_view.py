"""`chip data view`: every row on the page with its problems, pictures as training sees them.

The page itself is checked in a real headless Chromium (`tests/data/chromium.py`): the highlighted
spans, the corrupted image's pixels against the training collator's, dataset text shown as text,
paging and the problem filter. Where no Chromium is installed (``apt-get install -y chromium``,
or ``CHIP_CHROMIUM=/path/to/chrome``) those tests skip and say so; the test command does not
install it, since an apt install costs minutes in every CI run.
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from chip.cli import main as chip_main
from chip.data import load_preference_rows
from chip.data.view import MODEL_DEFAULTS, parse_pages, write_view
from chip.data.view_images import CorruptionSettings, flagged_spans, pixel_tiles
from chip.errors import ConfigError
from tests.data.chromium import Chromium, find_chromium

CHROMIUM = find_chromium()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium found (apt-get install -y chromium, or set CHIP_CHROMIUM); the test command "
    "does not install one because an apt install costs minutes",
)

SCRIPT_PROMPT = 'Describe <script>window.__xss = 1</script> and <img src=x onerror="window.__xss = 2">.'
ROWS = [
    # 0: spans given; an emoji (one code point, two UTF-16 units) before them
    {
        "id": "given",
        "images": ["img/0.png"],
        "prompt": "Describe the image.",
        "chosen": "A \U0001f408 red cat sits.",
        "rejected": "A \U0001f408 blue dog sits.",
        "chosen_segments": [[4, 7]],
        "rejected_segments": [[4, 8], [9, 12]],
    },
    # 1: no spans: the collator derives them from the token diff
    {
        "id": "derived",
        "images": ["img/1.png"],
        "prompt": "What is on the mat?",
        "chosen": "There is a cat on the mat today.",
        "rejected": "There is a dog on the mat today.",
    },
    # 2: markup in every text field
    {
        "id": "markup",
        "images": ["img/2.png"],
        "prompt": SCRIPT_PROMPT,
        "chosen": "<b>bold</b> & <script>window.__xss = 3</script>",
        "rejected": "plain words only here",
    },
    {"id": "missing", "images": ["img/missing.png"], "prompt": "Q", "chosen": "one", "rejected": "two"},
    {"id": "same", "images": ["img/3.png"], "prompt": "Q", "chosen": "same", "rejected": "same"},
    {
        "id": "none-changed",
        "images": ["img/3.png"],
        "prompt": "Q",
        "chosen": "yes a",
        "rejected": "yes b",
        "chosen_segments": [],
        "rejected_segments": [],
    },
    {"id": "last", "images": ["img/4.png"], "prompt": "Q", "chosen": "left side", "rejected": "right side"},
    {
        "id": "chat",
        "images": ["img/4.png"],
        "chosen": "a cat",
        "rejected": "a dog",
        "prompt": [
            {"role": "system", "content": "Be <i>brief</i>."},
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]},
        ],
    },
]


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    (tmp_path / "img").mkdir()
    for k in range(5):
        pixels = np.random.default_rng(k).integers(0, 256, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / "img" / f"{k}.png")
    path = tmp_path / "train.jsonl"
    lines = [json.dumps(row) for row in ROWS[:3]] + ["{not json"] + [json.dumps(row) for row in ROWS[3:]]
    path.write_text("\n".join(lines) + "\n")
    return path


def read_chunks(page: Path) -> list[dict]:
    """Every row the page's chunk files hold, in order."""
    rows = []
    for chunk in sorted((page.parent / f"{page.stem}_files" / "rows").glob("*.js")):
        body = re.fullmatch(r"chipView\.chunk\(\d+, (.*)\);\n", chunk.read_text(), re.S)
        rows.extend(json.loads(body.group(1)))
    return rows


def test_every_row_is_on_the_page_with_the_problems_chip_data_check_finds(dataset, tmp_path):
    page = tmp_path / "out" / "view.html"
    result = write_view(dataset, page, page_size=3, pages="1")
    rows = read_chunks(page)
    _, report = load_preference_rows(dataset, on_bad_row="skip", image_check="header")
    assert [row["row"] for row in rows] == list(range(report.total_rows)) == list(range(9))
    for row in rows:
        expected = sorted((bad.field, bad.kind) for bad in report.bad_rows if bad.row == row["row"])
        assert sorted((field, kind) for field, kind, _ in row["issues"]) == expected, row["row"]
    assert [kind for _, kind, _ in rows[3]["issues"]] == ["invalid_json"]
    missing = rows[4]  # bad only for its image: its text is still shown
    assert (missing["chosen"], missing["rejected"], missing["issues"][0][1]) == (
        "one",
        "two",
        "image_missing",
    )
    assert rows[0]["spans"] == {"chosen": [[4, 7]], "rejected": [[4, 8], [9, 12]]}
    assert rows[1]["spans"] == {"chosen": None, "rejected": None} and "pass --model" in rows[1]["seg_note"]
    # pictures: page 1 (rows 0-2) and the first page of rows with problems (3, 4, 5); not rows 6-8
    assert result.pictured_rows == 6
    assert rows[0]["images"][0]["thumb"].startswith("view_files/thumbs/")
    assert rows[0]["images"][0]["full"] == "../img/0.png"
    assert rows[7]["images"][0] == {"thumb": None, "full": "../img/4.png", "note": None}
    assert rows[8]["prompt"] == [
        {"role": "system", "text": "Be <i>brief</i>."},
        {"role": "user", "text": "[image]What is it?"},
    ]
    assert all(row["corrupt"] is None for row in rows)
    index = (page.parent / "view_files" / "index.js").read_text()
    filters = json.loads(index.removeprefix("window.CHIP_VIEW = ").removesuffix(";\n"))["filters"]
    assert {f["key"]: f["rows"] for f in filters}["issues"] == [3, 4, 5]


def test_rewriting_a_page_drops_old_chunks_and_keeps_thumbnails(dataset, tmp_path):
    page = tmp_path / "view.html"
    write_view(dataset, page, page_size=2, pages="all")
    thumbs = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "view_files" / "thumbs").iterdir()}
    write_view(dataset, page, page_size=9, pages="all")
    assert [p.name for p in (tmp_path / "view_files" / "rows").iterdir()] == ["000000.js"]
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "view_files" / "thumbs").iterdir()} == thumbs


def test_inline_images_and_column_map_through_the_command(tmp_path, capsys):
    """Parquet with image bytes (no file to link): thumbnails on --pages only, a note elsewhere."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    images = []
    for k in range(3):
        buffer = io.BytesIO()
        Image.new("RGB", (40, 30), (60 * k, 100, 200)).save(buffer, "PNG")
        images.append({"bytes": buffer.getvalue(), "path": None})
    table = pa.table(
        {
            "query": [f"question {k}" for k in range(3)],
            "chosen": ["a b", "c d", "e f"],
            "rejected": ["a x", "c y", "e z"],
            "image": images,
        }
    )
    pq.write_table(table, tmp_path / "train.parquet")
    page = tmp_path / "view.html"
    argv = [
        "data",
        "view",
        str(tmp_path / "train.parquet"),
        "--column_map",
        "query=prompt",
        "--output",
        str(page),
        "--page-size",
        "1",
        "--pages",
        "2",
    ]
    assert chip_main(argv) == 0
    assert capsys.readouterr().out.startswith(f"wrote {page}: 3 rows on 3 pages, pictures for 1 rows")
    rows = read_chunks(page)
    assert [row["prompt"] for row in rows] == ["question 0", "question 1", "question 2"]
    assert rows[0]["images"] == [
        {
            "thumb": None,
            "full": None,
            "note": "inline image: its thumbnail is written for the rows of --pages",
        }
    ]
    thumb = rows[1]["images"][0]["thumb"]
    assert rows[1]["images"][0]["full"] is None
    with Image.open(tmp_path / thumb) as shown:  # the 40×30 image, not enlarged
        assert shown.size == (40, 30) and shown.getpixel((20, 15))[2] > 150


def test_pages_option():
    assert parse_pages("1-3,7", 10) == {0, 1, 2, 6}
    assert parse_pages("all", 4) == {0, 1, 2, 3}
    assert parse_pages("2-99", 4) == {1, 2, 3}
    for bad in ("x", "3-1", "0"):
        with pytest.raises(ConfigError, match="--pages"):
            parse_pages(bad, 4)


def test_training_settings_need_a_model_and_default_to_chip_trains(dataset, tmp_path, capsys):
    from chip.training.config import ChipConfig

    defaults = {f.name: f.default for f in dataclasses.fields(ChipConfig) if f.name in MODEL_DEFAULTS}
    assert defaults == MODEL_DEFAULTS
    code = chip_main(
        ["data", "view", str(dataset), "--output", str(tmp_path / "v.html"), "--noise-step", "9"]
    )
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "chip: error: --corruption, --noise_step, --seed, --max_length and the segment options need --model"
    ]
    code = chip_main(
        ["data", "view", str(dataset), "--output", "v.html", "--model", "m", "--noise_step", "1000"]
    )
    assert code == 2
    assert capsys.readouterr().err.strip() == "chip: error: --noise_step must be in 0..999, got 1000"


def test_flagged_spans_join_runs_of_flagged_tokens():
    """Tokens "a", " red", " cat", EOS over "a red cat": flags (0, 1, 1, 1) cover characters 1..9."""
    offsets = [(0, 1), (1, 5), (5, 9), (9, 9)]
    assert flagged_spans(offsets, [False, True, True, True]) == [[1, 9]]
    assert flagged_spans(offsets, [True, False, True, False]) == [[0, 1], [5, 9]]


@pytest.mark.parametrize(
    ("family", "size"),
    [("llava", (32, 32)), ("llava_next", (32, 32)), ("qwen2_vl", (64, 16)), ("qwen2_5_vl", (32, 32))],
)
def test_pixel_tiles_undo_the_processor(tiny_model, family, size):
    """An image already at the processor's size comes back unchanged from its normalised tensor.

    (LLaVA resizes the short side to 32 and crops 32×32; Qwen-VL keeps 1024 pixels in 16-pixel
    multiples, so 64×16 is kept, and its flat patches must be put back in place; LLaVA-NeXT's first
    tile is the whole image at the base resolution.)
    """
    from chip.modeling import VLMAdapter

    image = Image.fromarray(np.random.default_rng(5).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    adapter = VLMAdapter.from_pretrained(tiny_model(family))
    inputs = adapter.encode_prompt([image], "Describe.").image_inputs
    tiles = pixel_tiles(inputs, adapter.pixel_key, adapter.processor.image_processor)
    np.testing.assert_array_equal(tiles[0][1], np.asarray(image))
    if family.startswith("qwen"):  # both temporal copies of the still image
        np.testing.assert_array_equal(tiles[1][1], np.asarray(image))


# ---- in the browser ----------------------------------------------------------------------------

COLLECT_ROWS = """(async () => {
  const spansOf = (box) => {
    const spans = []; let position = 0;
    for (const node of box.childNodes) {
      const length = Array.from(node.textContent).length;  // code points, as Python counts
      if (node.nodeName === "MARK") spans.push([position, position + length]);
      position += length;
    }
    return spans;
  };
  const pixels = async (img) => {
    img.loading = "eager";
    await img.decode();
    const canvas = document.createElement("canvas");
    canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
    const context = canvas.getContext("2d");
    context.drawImage(img, 0, 0);
    return {width: canvas.width, height: canvas.height,
            rgba: Array.from(context.getImageData(0, 0, canvas.width, canvas.height).data)};
  };
  const rows = [];
  for (const card of document.querySelectorAll("#rows article")) {
    const row = {row: Number(card.dataset.row), prompt: card.querySelector(".prompt")?.textContent ?? null,
                 issues: [...card.querySelectorAll(".issues li code")].map((c) => c.textContent),
                 note: card.querySelector(".corrupt .note")?.textContent ?? null, corrupt: []};
    for (const side of ["chosen", "rejected"]) {
      const box = card.querySelector(`.response.${side}`);
      row[side] = box ? {text: box.textContent, spans: spansOf(box)} : null;
    }
    for (const img of card.querySelectorAll(".corrupt img")) row.corrupt.push(await pixels(img));
    rows.push(row);
  }
  const main = document.getElementById("rows");
  return {page: main.dataset.page, filter: main.dataset.filter, rows, xss: window.__xss ?? null,
          count: document.getElementById("page-count").textContent,
          scripts: [...document.scripts].map((s) => s.getAttribute("src"))};
})()"""
READY = "document.getElementById('rows')?.dataset.state === 'ready'"


def expected_training_view(model: Path, dataset: Path, seed: int) -> dict[str, dict]:
    """Per usable row id: the collator's corrupted pixels as 8-bit RGB and, for a row without
    segments, the characters of the tokens it flags as changed.

    De-normalising is the processor's rescale-and-normalise run backwards, ``(x·std + mean) /
    rescale_factor`` per channel, rounded and clipped to 0..255. The tiny tokenizer is byte-level, so
    response token i is character i of an ASCII text (the last token is EOS).
    """
    from chip.modeling import VLMAdapter
    from chip.training.collate import ChipCollator

    examples, _ = load_preference_rows(dataset, on_bad_row="skip")
    adapter = VLMAdapter.from_pretrained(model)
    processor = adapter.processor.image_processor
    collator = ChipCollator(adapter, corruption="diffusion", noise_step=500, seed=seed, max_length=2048)
    expected = {}
    for example in examples:
        batch = collator([example])
        pixels = batch["corrupt"]["pixel_values"].double().numpy()[0]  # (3, H, W)
        mean, std = (
            np.asarray(v, dtype=np.float64)[:, None, None]
            for v in (processor.image_mean, processor.image_std)
        )
        rgb = np.clip(np.rint((pixels * std + mean) / processor.rescale_factor), 0, 255).astype(np.uint8)
        changed = {}
        for k, side in enumerate(("chosen", "rejected") if example.chosen_segments is None else ()):
            text = getattr(example, side)
            assert len(adapter.encode_response(text)) == len(text) + 1  # byte-level: one token per character
            flags = batch["real_segment"][k].tolist()
            changed[side] = {i for i in range(len(text)) if flags[i]}
        expected[example.id] = {"rgb": rgb.transpose(1, 2, 0), "changed": changed}
    return expected


def characters(spans: list[list[int]]) -> set[int]:
    return {i for start, end in spans for i in range(start, end)}


@needs_chromium
def test_the_page_in_a_browser(dataset, tmp_path, tiny_model):
    """Spans, corrupted pixels, escaping, paging and the problem filter, as Chromium shows them."""
    model = tiny_model("llava")
    page = tmp_path / "out" / "view.html"
    settings = CorruptionSettings(model=str(model), seed=7)
    write_view(dataset, page, settings=settings, page_size=3, pages="1-2")
    expected = expected_training_view(model, dataset, seed=7)

    browser = Chromium(CHROMIUM, tmp_path / "profile", allow_file_access=True)
    try:
        browser.navigate(page.as_uri())
        browser.wait_for(READY)
        first = browser.evaluate(COLLECT_ROWS)
        browser.evaluate("document.getElementById('next').click()")
        browser.wait_for(f"{READY} && document.getElementById('rows').dataset.page === '2'")
        second = browser.evaluate(COLLECT_ROWS)
        browser.evaluate(
            "document.getElementById('page').value = '3'; document.getElementById('page').dispatchEvent(new Event('change'))"
        )
        browser.wait_for(f"{READY} && document.getElementById('rows').dataset.page === '3'")
        third = browser.evaluate(COLLECT_ROWS)
        browser.evaluate(
            "const s = document.getElementById('filter'); s.value = 'issues'; s.dispatchEvent(new Event('change'))"
        )
        browser.wait_for(f"{READY} && document.getElementById('rows').dataset.filter === 'issues'")
        problems = browser.evaluate(COLLECT_ROWS)
    finally:
        browser.close()

    # paging: 9 rows, 3 per page
    assert [r["row"] for r in first["rows"]] == [0, 1, 2] and first["count"] == "of 3"
    assert [r["row"] for r in second["rows"]] == [3, 4, 5] and second["page"] == "2"
    assert [r["row"] for r in third["rows"]] == [6, 7, 8]
    assert third["rows"][2]["prompt"] == "systemBe <i>brief</i>.user[image]What is it?"
    assert [r["row"] for r in problems["rows"]] == [3, 4, 5] and problems["page"] == "1"
    given, derived, markup = first["rows"]

    # highlighted spans: exactly the row's segments, given or derived by the collator
    assert given["chosen"]["spans"] == ROWS[0]["chosen_segments"]
    assert given["rejected"]["spans"] == ROWS[0]["rejected_segments"]
    for row, row_id in ((derived, "derived"), (markup, "markup")):
        for side in ("chosen", "rejected"):
            assert characters(row[side]["spans"]) == expected[row_id]["changed"][side], (row_id, side)
    assert expected["derived"]["changed"]["chosen"]  # the diff found "cat" vs "dog"
    assert third["rows"][0]["chosen"]["spans"] == [] and third["rows"][0]["rejected"]["spans"] == []

    # the corrupted image shown is the collator's, pixel for pixel
    for row, row_id in ((given, "given"), (derived, "derived"), (markup, "markup")):
        (shown,) = row["corrupt"]
        rgb = np.asarray(shown["rgba"], dtype=np.uint8).reshape(shown["height"], shown["width"], 4)[..., :3]
        np.testing.assert_array_equal(rgb, expected[row_id]["rgb"])

    # dataset text is text: shown verbatim, nothing it holds runs
    assert markup["prompt"] == SCRIPT_PROMPT
    assert markup["chosen"]["text"] == ROWS[2]["chosen"]
    assert first["xss"] is None and problems["xss"] is None
    assert all(src and src.startswith("view_files/") for src in problems["scripts"])

    # rows not on --pages say how to get their pictures; bad rows have none
    assert third["rows"][1]["corrupt"] == [] and "add this row's page to --pages" in third["rows"][1]["note"]
    assert (
        second["rows"][1]["issues"] == ["images[0]"] and "training does not use" in second["rows"][1]["note"]
    )


@needs_chromium
def test_the_page_opens_from_disk_without_browser_flags(dataset, tmp_path):
    """What a user gets by opening the file: the rows load (scripts beside the page, no server)."""
    page = tmp_path / "view.html"
    write_view(dataset, page, page_size=4)
    browser = Chromium(CHROMIUM, tmp_path / "profile")
    try:
        browser.navigate(f"{page.as_uri()}#filter=all&page=2")
        browser.wait_for(READY)
        rows = browser.evaluate("[...document.querySelectorAll('#rows article')].map((a) => a.dataset.row)")
        widths = browser.evaluate(
            "Promise.all([...document.querySelectorAll('#rows img')].map((img) => "
            "(img.loading = 'eager', img.decode().then(() => img.naturalWidth, () => -1))))"
        )
    finally:
        browser.close()
    assert rows == ["4", "5", "6", "7"]
    # row 4's image is missing (no <img>); rows 5-7 show their 32×32 images' thumbnails
    assert widths == [32, 32, 32]
