"""Shared fixtures: tiny models of every supported family, built once per test session.

Use ``tiny_model("qwen2_vl")`` (any family of ``chip.testing.ALL_FAMILIES``, built on first use) or
the ``tiny_model_dir`` fixture, which runs a test once per family of ``chip.testing.FAMILIES``;
narrow it with ``@pytest.mark.parametrize("tiny_model_dir", ["llava"], indirect=True)``.
``family_params(families)`` parametrizes over any families, skipping (with the reason) those
whose stock processor needs torchvision when it is not installed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from chip.testing import FAMILIES, build_tiny_model, missing_packages


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``tiny_model(family, **size_overrides) -> Path``: a saved tiny model, built once per session.

    Treat the folder as read-only: other tests reuse it.
    """
    built: dict[tuple, Path] = {}

    def get(family: str, **size_overrides: Any) -> Path:
        key = (family, tuple(sorted(size_overrides.items())))
        if key not in built:
            built[key] = build_tiny_model(family, tmp_path_factory.mktemp(f"tiny_{family}"), **size_overrides)
        return built[key]

    return get


@pytest.fixture(params=FAMILIES)
def tiny_model_dir(request: pytest.FixtureRequest, tiny_model: Callable[..., Path]) -> Path:
    """A tiny model folder per family; narrow with ``parametrize("tiny_model_dir", [...], indirect=True)``."""
    return tiny_model(request.param)


def family_params(families) -> list:
    """``pytest.param`` per family; one whose stock processor needs a package not installed here
    (torchvision for most, num2words for SmolVLM; the test command installs them) is skipped with
    that reason."""
    params = []
    for family in families:
        missing = missing_packages(family)
        reason = f"the stock {family} processor needs {', '.join(missing)}"
        params.append(pytest.param(family, marks=pytest.mark.skipif(bool(missing), reason=reason)))
    return params


def random_image(seed: int, width: int = 32, height: int = 32) -> Image.Image:
    """A reproducible RGB noise image."""
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


@pytest.fixture
def make_image() -> Callable[..., Image.Image]:
    """``make_image(seed, width=32, height=32)``: a reproducible RGB noise image."""
    return random_image
