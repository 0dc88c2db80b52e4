"""`chip.data.prompt_checks`: image sizes from headers, as `ImageRef.load` would return them."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from chip.data.images import ImageRef
from chip.data.prompt_checks import displayed_size


@pytest.mark.parametrize(
    ("orientation", "expected"), [(1, (40, 20)), (3, (40, 20)), (6, (20, 40)), (8, (20, 40))]
)
def test_displayed_size_follows_exif_rotation_like_load(orientation, expected):
    image = Image.new("RGB", (40, 20), (10, 200, 30))
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif.tobytes())
    ref = ImageRef(data=buffer.getvalue())
    assert displayed_size(ref) == expected == ref.load().size
