"""The paired bootstrap of CHAIR_i differences, on counts small enough to work out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from chip.demo.stats import Difference, bootstrap_difference, describe, pooled_rate


def test_pooled_rate_is_a_ratio_of_sums():
    """Seeds [(1, 10), (0, 10)] and [(2, 10), (1, 10)]: 4 hallucinated of 40 mentions = 0.1."""
    assert pooled_rate(np.array([[[1, 10], [0, 10]], [[2, 10], [1, 10]]])) == pytest.approx(0.1)
    assert pooled_rate(np.zeros((1, 3, 2))) == 0.0


def test_constant_gap_gives_a_point_interval():
    """A: 1 of 10 mentions wrong on every scene and seed, B: 0 of 10. Every replicate gives
    0.1 − 0 = 0.1, so the interval is [0.1, 0.1] and A is distinguishably worse."""
    a = np.tile([1, 10], (3, 50, 1))
    b = np.tile([0, 10], (2, 50, 1))
    diff = bootstrap_difference(a, b, resamples=200)
    assert (diff.difference, diff.low, diff.high) == pytest.approx((0.1, 0.1, 0.1))
    assert diff.distinguishable and diff.relative is None  # B's rate is 0: no relative change
    assert describe("A", "B", diff).startswith("A hallucinated more than B (+10.0 points")


def test_two_scenes_that_disagree_span_zero():
    """One seed, two scenes, one mention each. A is wrong on scene 0, B on scene 1. A replicate
    draws {0,0} (p 1/4): 1 − 0 = +1; {1,1} (p 1/4): 0 − 1 = −1; one of each (p 1/2): 0.5 − 0.5 = 0.
    So the point difference is 0 and the 95% interval is [−1, +1]: not distinguishable."""
    a = np.array([[[1, 1], [0, 1]]])
    b = np.array([[[0, 1], [1, 1]]])
    diff = bootstrap_difference(a, b, resamples=4000)
    assert diff.difference == 0.0
    assert (diff.low, diff.high) == (-1.0, 1.0)
    assert not diff.distinguishable
    assert "not distinguishable" in describe("A", "B", diff)


def test_seeds_are_resampled_per_method():
    """A has two seeds on one scene: 0 of 1 and 1 of 1 wrong; B always 0. Resampling A's seeds
    gives A's rate 0, 0.5 or 1 (p 1/4, 1/2, 1/4), so the interval is [0, 1] although the scene is
    fixed: seed-to-seed variation widens the interval."""
    a = np.array([[[0, 1]], [[1, 1]]])
    b = np.array([[[0, 1]]])
    diff = bootstrap_difference(a, b, resamples=4000)
    assert diff.difference == pytest.approx(0.5)
    assert (diff.low, diff.high) == (0.0, 1.0)
    assert not diff.distinguishable


def test_relative_change_and_reproducibility():
    """A 1 of 10, B 2 of 10 on every scene: −0.1 points, relative −50% exactly, same on a rerun."""
    a, b = np.tile([1, 10], (2, 20, 1)), np.tile([2, 10], (2, 20, 1))
    diff = bootstrap_difference(a, b, resamples=100, seed=3)
    assert diff.relative == pytest.approx(-0.5)
    assert (diff.relative_low, diff.relative_high) == pytest.approx((-0.5, -0.5))
    rng = np.random.default_rng(0)
    noisy_a = np.stack([rng.integers(0, 3, (2, 30)), np.full((2, 30), 4)], axis=-1)
    noisy_b = np.stack([rng.integers(0, 3, (3, 30)), np.full((3, 30), 4)], axis=-1)
    assert bootstrap_difference(noisy_a, noisy_b, seed=7) == bootstrap_difference(noisy_a, noisy_b, seed=7)
    assert isinstance(diff, Difference) and diff.to_dict()["distinguishable"]


def test_scenes_must_match():
    with pytest.raises(ValueError, match="same scenes"):
        bootstrap_difference(np.zeros((1, 3, 2)), np.zeros((1, 4, 2)))
