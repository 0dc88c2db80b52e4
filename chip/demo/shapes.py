"""Drawing the world's ten shape classes with PIL.

Each shape is drawn as a grey-level *mask* (255 = fully covered) on a canvas supersampled
``SUPERSAMPLE`` times, so faint objects are a scaled mask and occlusion is just drawing order;
the scene renderer pastes a colour through each mask and shrinks the canvas with a box filter,
which anti-aliases the small shapes. Sizes are in output pixels, positions are object centres.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from PIL import Image, ImageDraw

SUPERSAMPLE = 4  # canvas pixels per output pixel; 4 keeps 3-px shapes recognisable after shrinking

Point = tuple[float, float]


def _regular(cx: float, cy: float, r: float, n: int, phase: float) -> list[Point]:
    return [
        (cx + r * math.cos(phase + 2 * math.pi * k / n), cy + r * math.sin(phase + 2 * math.pi * k / n))
        for k in range(n)
    ]


def _circle(draw: ImageDraw.ImageDraw, cx: float, cy: float, r: float, fill: int) -> None:
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)


def _square(draw: ImageDraw.ImageDraw, cx: float, cy: float, r: float, fill: int) -> None:
    h = 0.82 * r  # same visual area as the circle of radius r, roughly
    draw.rectangle((cx - h, cy - h, cx + h, cy + h), fill=fill)


def _triangle(draw: ImageDraw.ImageDraw, cx: float, cy: float, r: float, fill: int) -> None:
    draw.polygon(_regular(cx, cy + 0.15 * r, 1.1 * r, 3, -math.pi / 2), fill=fill)


def _diamond(draw: ImageDraw.ImageDraw, cx: float, cy: float, r: float, fill: int) -> None:
    draw.polygon([(cx, cy - r), (cx + 0.7 * r, cy), (cx, cy + r), (cx - 0.7 * r, cy)], fill=fill)


def _star(draw: ImageDraw.ImageDraw, cx: float, cy: float, r: float, fill: int) -> None:
    outer = _regular(cx, cy, 1.1 * r, 5, -math.pi / 2)
    inner = _regular(cx, cy, 0.45 * r, 5, -math.pi / 2 + math.pi / 5)
    draw.polygon([p for pair in zip(outer, inner) for p in pair], fill=fill)


def _moon(draw: ImageDraw.ImageDraw, cx: float, cy: float, r: float, fill: int) -> None:
    _circle(draw, cx, cy, r, fill)
    _circle(draw, cx + 0.5 * r, cy - 0.25 * r, 0.85 * r, 0)  # bite out of the mask only


def _cross(draw: ImageDraw.ImageDraw, cx: float, cy: float, r: float, fill: int) -> None:
    w = 0.33 * r
    draw.rectangle((cx - r, cy - w, cx + r, cy + w), fill=fill)
    draw.rectangle((cx - w, cy - r, cx + w, cy + r), fill=fill)


def _ring(draw: ImageDraw.ImageDraw, cx: float, cy: float, r: float, fill: int) -> None:
    _circle(draw, cx, cy, r, fill)
    _circle(draw, cx, cy, 0.55 * r, 0)


def _heart(draw: ImageDraw.ImageDraw, cx: float, cy: float, r: float, fill: int) -> None:
    lobe = 0.5 * r
    _circle(draw, cx - lobe, cy - 0.3 * r, lobe, fill)
    _circle(draw, cx + lobe, cy - 0.3 * r, lobe, fill)
    draw.polygon([(cx - r, cy - 0.15 * r), (cx + r, cy - 0.15 * r), (cx, cy + r)], fill=fill)


def _arrow(draw: ImageDraw.ImageDraw, cx: float, cy: float, r: float, fill: int) -> None:
    draw.rectangle((cx - r, cy - 0.2 * r, cx + 0.1 * r, cy + 0.2 * r), fill=fill)
    draw.polygon([(cx, cy - 0.7 * r), (cx + r, cy), (cx, cy + 0.7 * r)], fill=fill)


# canonical class name -> function drawing its mask; the order fixes the class list of the world
SHAPES: dict[str, Callable[[ImageDraw.ImageDraw, float, float, float, int], None]] = {
    "circle": _circle,
    "square": _square,
    "triangle": _triangle,
    "diamond": _diamond,
    "star": _star,
    "moon": _moon,
    "cross": _cross,
    "ring": _ring,
    "heart": _heart,
    "arrow": _arrow,
}


def shape_mask(shape: str, size: int, cx: float, cy: float, r: float, alpha: float = 1.0) -> Image.Image:
    """A supersampled ``L`` mask of one shape; ``alpha`` < 1 makes the object faint."""
    s = SUPERSAMPLE
    mask = Image.new("L", (size * s, size * s), 0)
    SHAPES[shape](ImageDraw.Draw(mask), cx * s, cy * s, r * s, round(255 * alpha))
    return mask
