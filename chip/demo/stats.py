"""Paired bootstrap confidence intervals for differences in CHAIR_i between two methods.

    from chip.demo.stats import bootstrap_difference
    diff = bootstrap_difference(chip_counts, dpo_counts)   # counts: (seeds, scenes, 2) arrays
    diff.difference, diff.low, diff.high, diff.distinguishable

CHAIR_i is a ratio of sums (hallucinated mentions / all mentions), so each run keeps, per test
scene, the two counts (``chip.demo.measure.scene_counts``). Two sources of noise matter: which
scenes were drawn and which training seed ran. Every bootstrap replicate therefore resamples the
test scenes with replacement -- the *same* scenes for both methods, since both captioned the same
scenes (paired) -- and, independently for each method, its seeds with replacement (different
seeds are different training runs). The replicate's statistic is the pooled CHAIR_i of method A
minus that of method B; the interval is the percentile interval of the replicates. A difference
is called distinguishable only when that interval excludes 0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Difference:
    """Pooled CHAIR_i of A minus that of B, with a percentile bootstrap interval."""

    difference: float  # CHAIR_i(A) − CHAIR_i(B) on every scene and seed (negative: A hallucinates less)
    low: float  # lower end of the interval
    high: float  # upper end of the interval
    relative: float | None  # difference / CHAIR_i(B), the paper's "relative reduction" with its sign flipped
    relative_low: float | None
    relative_high: float | None
    level: float  # confidence level, e.g. 0.95
    resamples: int  # bootstrap replicates

    @property
    def distinguishable(self) -> bool:
        """True when the interval excludes 0."""
        return self.low > 0 or self.high < 0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "distinguishable": self.distinguishable}


def pooled_rate(counts: np.ndarray) -> float:
    """CHAIR_i of ``counts`` (..., 2) = (hallucinated, mentions): the ratio of the two sums."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts[..., 1].sum()
    return float(counts[..., 0].sum() / total) if total else 0.0


def bootstrap_difference(
    counts_a: np.ndarray, counts_b: np.ndarray, resamples: int = 2000, level: float = 0.95, seed: int = 0
) -> Difference:
    """Paired (over scenes) bootstrap of CHAIR_i(A) − CHAIR_i(B), seeds resampled per method.

    ``counts_a`` (S_a, N, 2) and ``counts_b`` (S_b, N, 2) hold per seed and per test scene the
    hallucinated and total object mentions; scene n must be the same scene in both. The replicates
    come from a ``numpy`` generator seeded with ``seed``, so the interval is reproducible.
    """
    a = np.asarray(counts_a, dtype=np.float64)  # (S_a, N, 2)
    b = np.asarray(counts_b, dtype=np.float64)  # (S_b, N, 2)
    if a.ndim != 3 or b.ndim != 3 or a.shape[1:] != b.shape[1:] or a.shape[2] != 2:
        raise ValueError(
            f"counts must be (seeds, scenes, 2) over the same scenes, got {a.shape} and {b.shape}"
        )
    rng = np.random.default_rng(seed)
    n_scenes = a.shape[1]
    # how often each scene / seed is drawn in each replicate
    scene_weights = rng.multinomial(n_scenes, np.full(n_scenes, 1 / n_scenes), size=resamples)  # (R, N)
    seeds_a = rng.multinomial(a.shape[0], np.full(a.shape[0], 1 / a.shape[0]), size=resamples)  # (R, S_a)
    seeds_b = rng.multinomial(b.shape[0], np.full(b.shape[0], 1 / b.shape[0]), size=resamples)  # (R, S_b)

    def rates(counts: np.ndarray, seed_weights: np.ndarray) -> np.ndarray:
        sums = np.einsum("rs,snc,rn->rc", seed_weights, counts, scene_weights)  # (R, 2)
        return np.divide(sums[:, 0], sums[:, 1], out=np.zeros(resamples), where=sums[:, 1] > 0)  # (R,)

    rate_a, rate_b = rates(a, seeds_a), rates(b, seeds_b)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(rate_a - rate_b, [tail, 100 - tail])
    point_a, point_b = pooled_rate(a), pooled_rate(b)
    relative = relative_low = relative_high = None
    if point_b > 0 and (rate_b > 0).all():
        relative = (point_a - point_b) / point_b
        relative_low, relative_high = np.percentile((rate_a - rate_b) / rate_b, [tail, 100 - tail])
    return Difference(
        difference=point_a - point_b,
        low=float(low),
        high=float(high),
        relative=relative,
        relative_low=None if relative_low is None else float(relative_low),
        relative_high=None if relative_high is None else float(relative_high),
        level=level,
        resamples=resamples,
    )


def describe(name_a: str, name_b: str, diff: Difference) -> str:
    """One sentence, in points of CHAIR_i, that follows the interval (never the error bars)."""
    interval = f"{100 * diff.difference:+.1f} points, {100 * diff.level:.0f}% CI {100 * diff.low:+.1f} to {100 * diff.high:+.1f}"
    if not diff.distinguishable:
        return f"{name_a} and {name_b} are not distinguishable ({interval}: the interval spans 0)"
    side = "less" if diff.difference < 0 else "more"
    return f"{name_a} hallucinated {side} than {name_b} ({interval})"
