"""The corrupted ("rejected") image ṽ of CHiP's visual preference.

The default is forward diffusion noise as in VCD (Leng et al., 2024) and the CHiP authors: DDPM
with T = 1000 steps and a sigmoid β schedule, applied at step k = 500 to the processor's
normalised pixel tensor. The other kinds act on the PIL image before preprocessing and keep its
size, so the number of image tokens never changes.

Every draw is deterministic per example: `example_generator(seed, example_id)` seeds it from the
run seed and the example id, so the reference pass, a precomputed reference cache and every
policy pass see the same ṽ.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from functools import lru_cache
from typing import Literal, get_args

import torch
from PIL import Image, ImageFilter
from torch import Tensor

CorruptionKind = Literal["diffusion", "crop", "black", "rotate", "blur", "random"]
CORRUPTION_KINDS: tuple[str, ...] = get_args(CorruptionKind)
NUM_DIFFUSION_STEPS = 1000
NOISE_STEP = 500  # the step k of ṽ in the authors' recipe (ᾱ ≈ 0.745)


@lru_cache(maxsize=1)
def diffusion_alphas_cumprod() -> Tensor:
    """ᾱ_t = Π_{s≤t} (1 − β_s), β_t = sigmoid(linspace(−6, 6, T))·(5e−3 − 1e−5) + 1e−5. Float64 ``[T]``."""
    betas = torch.sigmoid(torch.linspace(-6.0, 6.0, NUM_DIFFUSION_STEPS, dtype=torch.float64))
    betas = betas * (5e-3 - 1e-5) + 1e-5
    return torch.cumprod(1.0 - betas, dim=0)


def diffusion_noise(
    pixel_values: Tensor, step: int = NOISE_STEP, generator: torch.Generator | None = None
) -> Tensor:
    """ṽ = √ᾱ_k · v + √(1 − ᾱ_k) · ε with ε ~ N(0, I); same shape and dtype as ``pixel_values``.

    ``step`` is the 0-based index k into the schedule (k = 500 gives ᾱ ≈ 0.745).
    """
    if not 0 <= step < NUM_DIFFUSION_STEPS:
        raise ValueError(f"noise step must be in [0, {NUM_DIFFUSION_STEPS}), got {step}")
    alpha_bar = diffusion_alphas_cumprod()[step].item()
    noise = torch.randn(pixel_values.shape, generator=generator, dtype=torch.float32)
    noise = noise.to(device=pixel_values.device)
    noisy = alpha_bar**0.5 * pixel_values.float() + (1.0 - alpha_bar) ** 0.5 * noise
    return noisy.to(pixel_values.dtype)


def example_seed(seed: int, example_id: str | int, salt: str = "corrupt") -> int:
    """A stable 63-bit seed from the run seed and an example id (independent of PYTHONHASHSEED)."""
    digest = hashlib.blake2b(f"{salt}:{seed}:{example_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def example_generator(seed: int, example_id: str | int) -> torch.Generator:
    """A CPU generator seeded for one example, so every pass draws the same corruption."""
    return torch.Generator().manual_seed(example_seed(seed, example_id))


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * torch.rand((), generator=generator).item()


def crop_image(image: Image.Image, generator: torch.Generator) -> Image.Image:
    """Random resized crop keeping 1–20% of the area (mDPO), resized back to the original size."""
    width, height = image.size
    area = _uniform(generator, 0.01, 0.20) * width * height
    aspect = _uniform(generator, 3 / 4, 4 / 3)
    crop_w = max(1, min(width, round((area * aspect) ** 0.5)))
    crop_h = max(1, min(height, round((area / aspect) ** 0.5)))
    left = int(_uniform(generator, 0, width - crop_w + 1 - 1e-9))
    top = int(_uniform(generator, 0, height - crop_h + 1 - 1e-9))
    return image.crop((left, top, left + crop_w, top + crop_h)).resize((width, height), Image.BICUBIC)


def black_image(image: Image.Image, generator: torch.Generator) -> Image.Image:
    """An all-black image of the same size and mode."""
    return Image.new(image.mode, image.size)


def rotate_image(image: Image.Image, generator: torch.Generator) -> Image.Image:
    """Rotation by 10–80° in a random direction, same canvas size."""
    angle = _uniform(generator, 10.0, 80.0) * (1 if torch.rand((), generator=generator).item() < 0.5 else -1)
    return image.rotate(angle, resample=Image.BILINEAR, expand=False)


def blur_image(image: Image.Image, generator: torch.Generator) -> Image.Image:
    """Gaussian blur with a radius of 5–10% of the shorter side."""
    radius = _uniform(generator, 0.05, 0.10) * min(image.size)
    return image.filter(ImageFilter.GaussianBlur(radius=radius))


IMAGE_CORRUPTIONS: dict[str, Callable[[Image.Image, torch.Generator], Image.Image]] = {
    "crop": crop_image,
    "black": black_image,
    "rotate": rotate_image,
    "blur": blur_image,
}


def corrupt_image(
    image: Image.Image,
    kind: str,
    generator: torch.Generator,
    random_pool: Callable[[torch.Generator], Image.Image] | None = None,
) -> Image.Image:
    """Apply an image-space corruption; ``random`` draws another example's image from ``random_pool``.

    ``diffusion`` is not image-space: use `diffusion_noise` on the preprocessed pixels instead.
    """
    if kind == "random":
        if random_pool is None:
            raise ValueError("corruption 'random' needs a pool of other images")
        other = random_pool(generator)
        return other.convert(image.mode).resize(image.size, Image.BICUBIC)
    if kind not in IMAGE_CORRUPTIONS:
        raise ValueError(
            f"unknown image corruption {kind!r}; expected one of {sorted(IMAGE_CORRUPTIONS)} or 'random'"
        )
    return IMAGE_CORRUPTIONS[kind](image, generator)
