"""Image references: where a row's image lives, whether it is usable, and how it becomes RGB.

A dataset of 100k rows must not hold 100k decoded images, so a row only keeps an `ImageRef` (a
resolved path or the inline bytes) and decodes it when the collator asks. Validation decodes
each distinct image once up front (`check_image`) so that training never meets a broken file
hours into a run.

Decisions (also in docs/data.md):

- Huge images are *rejected*, not downscaled: above `max_pixels` (default 8192×8192) the row is
  reported. Downscaling silently would change what is trained on, and decoding a 10000×10000
  image costs 300 MB per worker; the user can raise `max_pixels` or resize the data once.
  The size comes from the header, so a huge image is refused without being decoded.
- Tiny images (a side under `TINY_IMAGE_SIDE` pixels, e.g. 1×1) are *accepted with a warning*:
  they are valid files the processor can resize, but they carry almost no visual evidence, so the
  visual preference term learns little from them.
- Unusual but valid images are converted, never rejected: CMYK, palette, grayscale → RGB;
  16-bit grayscale is scaled to 8 bits (Pillow's own conversion clips it to white); transparency
  is composited on white; EXIF orientation is applied, as a viewer would show the photo.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

# 8192×8192: larger than any vision tower's native resolution, small enough to decode safely.
DEFAULT_MAX_PIXELS = 8192 * 8192
# Images with a side shorter than this are accepted but reported as warnings.
TINY_IMAGE_SIDE = 16

ImageCheck = Literal["decode", "header"]

# Every image chip opens goes through `check_image`'s own max_pixels test, so Pillow's
# decompression-bomb *warning* (which fires at open, before that test) is only noise here.
# Pillow's hard error at twice its limit still applies and is reported as a bad row.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N"}
# Pillow raises these for truncated or corrupt data, depending on the format and the stage.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


class ImageProblem(Exception):
    """Why an image cannot be used; `kind` is the report's short code."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


@dataclass(frozen=True)
class ImageRef:
    """One image of one row, decoded only when `load()` is called.

    Exactly one of `path` (absolute, already checked against the image root) and `data` (inline
    encoded bytes, as parquet and RLHF-V store them) is set. `key` names the source (the resolved
    path, or a hash of the bytes), so rows sharing an image are checked once and a collator can
    preprocess it once.
    """

    path: Path | None = None
    data: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if (self.path is None) == (self.data is None):
            raise ValueError("an ImageRef needs exactly one of path and data")

    @property
    def key(self) -> str:
        if self.data is not None:
            return f"bytes:{hashlib.blake2b(self.data, digest_size=16).hexdigest()}"
        return f"path:{self.path}"

    def describe(self) -> str:
        return str(self.path) if self.path is not None else f"<{len(self.data or b'')} inline bytes>"

    def open(self) -> Image.Image:
        """Open the image lazily (header read only); raises `ImageProblem` if it is not one."""
        if self.path is not None:
            _check_file(self.path)
            source: Path | io.BytesIO = self.path
        else:
            if not self.data:
                raise ImageProblem("image_empty", "inline image bytes are empty")
            source = io.BytesIO(self.data)
        try:
            return Image.open(source)
        except Image.DecompressionBombError as err:  # over twice Pillow's own limit, caught at open
            raise ImageProblem("image_too_large", f"image {self.describe()} is too large: {err}") from None
        except UnidentifiedImageError:
            raise ImageProblem("image_not_an_image", _not_an_image_reason(self)) from None
        except _DECODE_ERRORS as err:
            raise ImageProblem(
                "image_corrupt", f"cannot read image header of {self.describe()}: {err}"
            ) from None

    def load(self) -> Image.Image:
        """Decode the image and return it in RGB (see the module docstring for the conversions)."""
        image = self.open()
        try:
            image.load()
            return to_rgb(image)
        except _DECODE_ERRORS as err:
            raise ImageProblem(
                "image_corrupt", f"image {self.describe()} cannot be decoded (truncated or corrupt): {err}"
            ) from None


class ImagePathResolver:
    """Turns a row's image path into an absolute path, refusing one that escapes the root.

    Relative paths are taken from the root. Symlinks are resolved before the test, so a link that
    points outside the root is refused too: a dataset file must not be able to make the loader read
    arbitrary files (issue 6, safety) unless the user allows it. The root is resolved once, not
    once per row: that walk stats every folder above it, and over 100,000 rows it was about half
    of the time spent resolving paths (bench/bench_view.py).
    """

    def __init__(self, root: Path, allow_outside_root: bool = False) -> None:
        self.root = Path(root).resolve()
        self.allow_outside_root = allow_outside_root

    def __call__(self, raw: str) -> Path:
        if not raw.strip():
            raise ImageProblem("image_bad_path", "image path is empty")
        if "\x00" in raw:
            raise ImageProblem("image_bad_path", f"image path contains a NUL byte: {raw!r}")
        resolved = (self.root / raw).resolve()  # an absolute `raw` replaces root in the join
        if not self.allow_outside_root and not resolved.is_relative_to(self.root):
            raise ImageProblem(
                "image_outside_root",
                f"image path {raw!r} resolves to {resolved}, outside the image root {self.root} "
                "(pass allow_outside_root / --allow_outside_root to permit it)",
            )
        return resolved


def check_image(
    ref: ImageRef, max_pixels: int = DEFAULT_MAX_PIXELS, mode: ImageCheck = "decode"
) -> tuple[int, int]:
    """Return the image's (width, height), or raise `ImageProblem` saying why it is unusable.

    `mode="decode"` decodes and converts the full image, which is the only way to find a truncated
    file; `"header"` reads only the header (existence, format, size) for very large datasets.
    """
    image = ref.open()
    with image:
        width, height = image.size
        if width * height > max_pixels:
            raise ImageProblem(
                "image_too_large",
                f"image {ref.describe()} is {width}×{height} = {width * height:,} pixels, above "
                f"max_pixels={max_pixels:,}; resize it or raise max_pixels",
            )
        if mode == "decode":
            try:
                image.load()
                to_rgb(image).close()
            except _DECODE_ERRORS as err:
                raise ImageProblem(
                    "image_corrupt", f"image {ref.describe()} cannot be decoded (truncated or corrupt): {err}"
                ) from None
    return width, height


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow image to 8-bit RGB without losing what a viewer would see."""
    if image.getexif().get(ExifTags.Base.Orientation, 1) != 1:
        image = ImageOps.exif_transpose(image)
    if image.mode in _SIXTEEN_BIT_MODES or image.mode in {"I", "F"}:
        image = _to_8bit_gray(image)
    if image.has_transparency_data:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image if image.mode == "RGB" else image.convert("RGB")


def _to_8bit_gray(image: Image.Image) -> Image.Image:
    """Scale 16-bit / 32-bit / float grayscale into 0..255 (Pillow's convert would clip it)."""
    values = np.asarray(image, dtype=np.float64)  # (H, W)
    if image.mode in _SIXTEEN_BIT_MODES or (image.mode == "I" and values.max(initial=0) > 255):
        values = values / 257.0  # 65535 -> 255
    elif image.mode == "F" and values.max(initial=0) <= 1.0:
        values = values * 255.0  # float images in [0, 1]
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), mode="L")


def _check_file(path: Path) -> None:
    if not path.exists():
        raise ImageProblem("image_missing", f"image file not found: {path}")
    if not path.is_file():
        raise ImageProblem("image_missing", f"image path is not a file: {path}")
    if path.stat().st_size == 0:
        raise ImageProblem("image_empty", f"image file is empty (0 bytes): {path}")


def _not_an_image_reason(ref: ImageRef) -> str:
    """Say what the file looks like, since "a text file named .jpg" is the usual scraping error."""
    if ref.data is not None:
        head = ref.data[:64]
    else:
        with open(str(ref.path), "rb") as handle:
            head = handle.read(64)
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as err:
        # a multi-byte character cut by the 64-byte window is still text
        text = head[: err.start].decode("utf-8") if err.start >= len(head) - 3 else ""
    if text and all(ch.isprintable() or ch.isspace() for ch in text):
        return f"{ref.describe()} is a text file, not an image (starts with {text[:32]!r})"
    return f"{ref.describe()} is not a recognised image format (starts with bytes {head[:8].hex(' ')})"
