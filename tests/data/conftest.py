"""Fixtures for the data layer: every image made here with Pillow, nothing binary committed.

Layout built once per session (tests must not modify it):

    <tmp>/outside.jpg          a valid image outside the image root (path-escape cases)
    <tmp>/corpus/              the data root: rows are written here, paths are relative to it
    <tmp>/corpus/img/*.png|jpg valid, unusual and broken images (see `make_images`)
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

GOOD_ROW = {
    "id": "good",
    "images": ["img/rgb.jpg"],
    "prompt": "Describe the image.",
    "chosen": "A red square on grey.",
    "rejected": "A blue circle on grey.",
}


def _noise(size: tuple[int, int], seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


def _encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def make_images(folder: Path) -> None:
    """Write the valid, unusual and broken images the tests refer to by name."""
    folder.mkdir(parents=True)
    _noise((32, 32)).save(folder / "rgb.jpg")
    Image.new("RGB", (24, 24), (200, 30, 40)).save(folder / "red.png")
    Image.new("CMYK", (24, 24), (0, 255, 255, 0)).save(folder / "cmyk.jpg", quality=95)  # red in CMYK

    palette = Image.new("P", (24, 24), 1)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)  # index 1 = red
    palette.save(folder / "palette.png")
    palette.save(folder / "palette_alpha.png", transparency=1)  # index 1 fully transparent

    rgba = Image.new("RGBA", (24, 24), (0, 0, 255, 0))  # transparent blue
    rgba.paste((255, 0, 0, 255), (0, 0, 12, 24))  # opaque red left half
    rgba.save(folder / "rgba.png")
    Image.new("LA", (24, 24), (100, 255)).save(folder / "la.png")
    Image.new("L", (24, 24), 77).save(folder / "gray.png")
    Image.fromarray(np.full((24, 24), 128 * 257, dtype=np.uint16)).save(folder / "gray16.png")

    rotated = Image.new("RGB", (40, 20), (0, 128, 0))
    exif = rotated.getexif()
    exif[0x0112] = 6  # EXIF orientation: rotate 90° clockwise to display
    rotated.save(folder / "exif_rotated.jpg", exif=exif.tobytes())

    Image.new("RGB", (1, 1), (10, 20, 30)).save(folder / "tiny.png")
    Image.new("1", (10000, 10000)).save(folder / "huge.png")  # 12 kB file, 10^8 pixels

    jpeg, png = _encoded(_noise((64, 64), 1), "JPEG"), _encoded(_noise((64, 64), 2), "PNG")
    (folder / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (folder / "truncated.png").write_bytes(png[: len(png) // 2])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("this is a caption, not an image\n")
    (folder / "link_outside.jpg").symlink_to(folder.parent.parent / "outside.jpg")


@pytest.fixture(scope="session")
def corpus_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The data root holding `img/` (see the module docstring); shared, read-only."""
    base = tmp_path_factory.mktemp("data")
    _noise((16, 16), 3).save(base / "outside.jpg")
    make_images(base / "corpus" / "img")
    return base / "corpus"


def _encode_row(row: dict[str, Any] | bytes) -> bytes:
    if isinstance(row, bytes):
        return row
    try:
        return json.dumps(row, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate can only be written as a JSON escape
        return json.dumps(row).encode("ascii")


def _write_jsonl(path: Path, rows: Iterable[dict[str, Any] | bytes]) -> Path:
    path.write_bytes(b"".join(_encode_row(row) + b"\n" for row in rows))
    return path


@pytest.fixture(scope="session")
def write_jsonl() -> Callable[[Path, Iterable[dict[str, Any] | bytes]], Path]:
    """Write rows as JSON Lines; a `bytes` row is written verbatim (for broken lines)."""
    return _write_jsonl


@pytest.fixture
def good_row() -> dict[str, Any]:
    """A usable row whose image exists under `corpus_root`."""
    return dict(GOOD_ROW)
