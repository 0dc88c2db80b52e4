"""What the variable-length presets of `bench/workload.py` draw per example: response lengths and image sizes.

Preference data for vision-language models is not of one length. RLHF-V and RLAIF-V answers run
from a few words ("Yes, there is a dog.") to detailed descriptions of several hundred tokens, and
the rejected answer of a pair is often shorter or longer than the chosen one. Images come in every
size, and the families that tile or resize them by their size (LLaVA-NeXT's "anyres", Qwen-VL's
dynamic resolution) turn that into a different number of image tokens per example. So a batch of
such data is padded, and how much depends on the layout: what `bench/padding.py` measures.

The distributions below are shaped after those datasets' descriptions (a long tail of long
answers, bounded), not fitted to them: no dataset is read here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ResponseLengths:
    """Long-tailed response lengths: a log-normal number of words, truncated, as tokens.

    The chosen answer has ``exp(N(log median_words, sigma²))`` words, redrawn until it lies in
    ``[min_words, max_words]``; the rejected one has the chosen count times ``exp(N(0,
    rejected_sigma²))``, bounded the same way, so it is often shorter or longer but correlated
    with it (both answer the same question about the same image). Words become tokens at
    ``tokens_per_word`` (~1.3 for English with a LLaMA-style tokenizer); the token count includes
    the end-of-sequence token.
    """

    median_words: float = 50.0  # median length of a chosen answer
    sigma: float = 0.8  # spread of log(words) of the chosen answer: ~1 in 5 is over twice the median
    rejected_sigma: float = 0.5  # spread of log(rejected / chosen words)
    min_words: int = 10
    max_words: int = 240
    tokens_per_word: float = 1.3

    def draw(self, rng: np.random.Generator) -> tuple[int, int]:
        """Tokens of the chosen and of the rejected response, EOS included."""
        chosen = self._bounded(lambda: math.exp(rng.normal(math.log(self.median_words), self.sigma)))
        rejected = self._bounded(lambda: chosen * math.exp(rng.normal(0.0, self.rejected_sigma)))
        return self.tokens(chosen), self.tokens(rejected)

    def tokens(self, words: float) -> int:
        return max(2, round(words * self.tokens_per_word))

    def _bounded(self, draw) -> float:
        while True:
            words = draw()
            if self.min_words <= words <= self.max_words:
                return words


@dataclass(frozen=True)
class ImageSizes:
    """Image sizes in pixels: a log-uniform area and an aspect ratio from a list of common ones.

    ``multiple`` rounds both sides to a multiple of that many pixels: Qwen-VL makes one image
    token of each 28 x 28 pixels (14 px patches merged 2 x 2), so sides that are multiples of 28
    and an area inside the processor's pixel range reach the model unchanged, one token per
    ``multiple²`` pixels.
    """

    min_pixels: int
    max_pixels: int
    # width / height: square, 4:3, 3:2, 16:9 and 2:1, either way round
    aspect_ratios: tuple[float, ...] = (1.0, 4 / 3, 3 / 4, 3 / 2, 2 / 3, 16 / 9, 9 / 16, 2.0, 1 / 2)
    multiple: int = 1

    def draw(self, rng: np.random.Generator) -> tuple[int, int]:
        """``(width, height)`` of one image."""
        area = math.exp(rng.uniform(math.log(self.min_pixels), math.log(self.max_pixels)))
        aspect = float(rng.choice(self.aspect_ratios))
        width = math.sqrt(area * aspect)
        return self._round(width), self._round(area / width)

    def _round(self, side: float) -> int:
        return max(self.multiple, round(side / self.multiple) * self.multiple)
