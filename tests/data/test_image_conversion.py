"""Valid but unusual images are converted to the RGB a viewer would see, never rejected."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from chip.data import ImageRef, load_preference_rows, to_rgb

# image name -> (pixel to look at (x, y), expected RGB); JPEG is lossy, hence the tolerance below
EXPECTED_PIXELS = {
    "cmyk.jpg": ((12, 12), (255, 0, 0)),  # CMYK (0, 255, 255, 0) is red
    "palette.png": ((12, 12), (255, 0, 0)),
    "palette_alpha.png": ((12, 12), (255, 255, 255)),  # the transparent index shows the white background
    "rgba.png": ((3, 12), (255, 0, 0)),  # opaque half
    "la.png": ((12, 12), (100, 100, 100)),
    "gray.png": ((12, 12), (77, 77, 77)),
    "gray16.png": ((12, 12), (128, 128, 128)),  # 128·257 scaled to 8 bits, not clipped to 255
    "tiny.png": ((0, 0), (10, 20, 30)),
}


@pytest.mark.parametrize("name", sorted(EXPECTED_PIXELS))
def test_unusual_image_loads_as_rgb(
    name: str, corpus_root: Path, write_jsonl: Callable, good_row: dict
) -> None:
    data = write_jsonl(corpus_root / f"unusual_{name}.jsonl", [{**good_row, "images": [f"img/{name}"]}])

    examples, report = load_preference_rows(data)

    assert report.ok
    (image,) = examples[0].load_images()
    assert image.mode == "RGB"
    (x, y), expected = EXPECTED_PIXELS[name]
    np.testing.assert_allclose(image.getpixel((x, y)), expected, atol=6)


def test_transparent_pixels_become_white(corpus_root: Path) -> None:
    image = ImageRef(path=corpus_root / "img" / "rgba.png").load()

    assert image.getpixel((20, 12)) == (255, 255, 255)  # transparent blue half


def test_exif_orientation_is_applied(corpus_root: Path) -> None:
    image = ImageRef(path=corpus_root / "img" / "exif_rotated.jpg").load()

    assert image.size == (20, 40)  # stored 40×20 with "rotate 90°" in EXIF


def test_inline_bytes_load_like_the_file(corpus_root: Path) -> None:
    path = corpus_root / "img" / "cmyk.jpg"

    from_bytes = ImageRef(data=path.read_bytes()).load()
    from_path = ImageRef(path=path).load()

    assert np.array_equal(np.asarray(from_bytes), np.asarray(from_path))
    assert ImageRef(data=path.read_bytes()).key == ImageRef(data=path.read_bytes()).key


def test_float_image_in_unit_range_is_scaled() -> None:
    image = Image.fromarray(np.full((4, 4), 0.5, dtype=np.float32), mode="F")

    assert to_rgb(image).getpixel((0, 0)) == (128, 128, 128)


def test_tiny_image_is_usable_but_warned(corpus_root: Path, write_jsonl: Callable, good_row: dict) -> None:
    data = write_jsonl(corpus_root / "tiny_warn.jsonl", [{**good_row, "images": ["img/tiny.png"]}])

    examples, report = load_preference_rows(data)

    assert report.ok and len(examples) == 1
    assert [(w.row, w.field, w.kind) for w in report.warnings] == [(0, "images[0]", "image_tiny")]


def test_images_are_not_decoded_until_asked(corpus_root: Path, write_jsonl: Callable, good_row: dict) -> None:
    """A 100k-row dataset must not hold its images in memory: examples keep references only."""
    data = write_jsonl(corpus_root / "lazy.jsonl", [good_row])

    examples, _ = load_preference_rows(data)

    (ref,) = examples[0].images
    assert isinstance(ref, ImageRef) and ref.data is None and ref.path is not None


def test_check_command_in_a_real_process_prints_no_warning_or_traceback(
    corpus_root: Path, write_jsonl: Callable, good_row: dict
) -> None:
    """Run as a user would: Pillow's decompression-bomb warning must not leak next to the report."""
    data = write_jsonl(
        corpus_root / "process.jsonl",
        [good_row, {**good_row, "id": "huge", "images": ["img/huge.png"]}],
    )

    done = subprocess.run(
        [sys.executable, "-m", "chip.cli", "data", "check", str(data)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "default"},
        timeout=120,
    )

    assert done.returncode == 1
    assert "line 2, field 'images[0]'" in done.stdout and "10000×10000" in done.stdout
    assert done.stderr == ""
