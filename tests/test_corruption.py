"""The corrupted image: the diffusion schedule by hand, determinism per example, size preservation."""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image
from torch.testing import assert_close

from chip import diffusion_noise
from chip.corruption import CORRUPTION_KINDS, corrupt_image, diffusion_alphas_cumprod, example_generator


def test_schedule_matches_the_sigmoid_definition():
    """β_t = sigmoid(−6 + 12 t/999)·(5e−3 − 1e−5) + 1e−5; ᾱ_k = Π_{t≤k}(1 − β_t), computed with math."""
    alpha_bar = 1.0
    expected = []
    for t in range(1000):
        x = -6.0 + 12.0 * t / 999
        beta = 1 / (1 + math.exp(-x)) * (5e-3 - 1e-5) + 1e-5
        alpha_bar *= 1 - beta
        expected.append(alpha_bar)
    assert_close(diffusion_alphas_cumprod(), torch.tensor(expected, dtype=torch.float64))
    assert abs(expected[500] - 0.745) < 1e-3


def test_diffusion_noise_formula_and_determinism():
    pixels = torch.linspace(-1, 1, 2 * 3 * 4 * 4).reshape(2, 3, 4, 4)
    noisy = diffusion_noise(pixels, step=500, generator=torch.Generator().manual_seed(7))
    eps = torch.randn(pixels.shape, generator=torch.Generator().manual_seed(7))
    a = diffusion_alphas_cumprod()[500].item()
    assert_close(noisy, math.sqrt(a) * pixels + math.sqrt(1 - a) * eps)
    again = diffusion_noise(pixels, step=500, generator=torch.Generator().manual_seed(7))
    assert torch.equal(noisy, again)
    assert diffusion_noise(pixels.to(torch.bfloat16), generator=torch.Generator()).dtype == torch.bfloat16
    with pytest.raises(ValueError):
        diffusion_noise(pixels, step=1000)


def test_example_generator_is_stable_per_example_and_differs_across_examples():
    def draw(seed, example_id):
        return torch.randn(4, generator=example_generator(seed, example_id))

    assert torch.equal(draw(0, "a"), draw(0, "a"))
    assert not torch.equal(draw(0, "a"), draw(0, "b"))
    assert not torch.equal(draw(0, "a"), draw(1, "a"))


@pytest.mark.parametrize("kind", [k for k in CORRUPTION_KINDS if k != "diffusion"])
def test_image_corruptions_keep_size_and_are_deterministic(kind):
    image = Image.linear_gradient("L").convert("RGB").resize((40, 30))
    pool = lambda g: Image.new("RGB", (10, 10), (255, 0, 0))  # noqa: E731
    first = corrupt_image(image, kind, example_generator(3, "x"), random_pool=pool)
    second = corrupt_image(image, kind, example_generator(3, "x"), random_pool=pool)
    assert first.size == image.size and first.mode == image.mode
    assert first.tobytes() == second.tobytes()
    assert first.tobytes() != image.tobytes()


def test_unknown_or_unsupported_kind():
    image = Image.new("RGB", (8, 8))
    with pytest.raises(ValueError, match="unknown"):
        corrupt_image(image, "diffusion", torch.Generator())
    with pytest.raises(ValueError, match="pool"):
        corrupt_image(image, "random", torch.Generator())
