"""The pairing rules and RLAIF-V's length balance, worked by hand."""

from __future__ import annotations

import pytest

from chip.errors import ConfigError
from chip.pairs.annotators import Annotation
from chip.pairs.pairing import Candidate, Pair, PairingRules, balance_lengths, pair_item


def candidate(sample: int, hallucinations: int, coverage: int, text: str | None = None) -> Candidate:
    annotation = Annotation(hallucinations, coverage, (), ("x",) * hallucinations)
    return Candidate(sample, text or f"sample {sample} says {hallucinations} {coverage}", annotation)


def pairs_of(candidates, **rules) -> list[tuple[int, int]]:
    found, reason = pair_item("p", candidates, PairingRules(**rules))
    assert reason is None
    return [(pair.chosen.sample, pair.rejected.sample) for pair in found]


def test_chosen_is_the_cleanest_with_enough_coverage() -> None:
    """Samples (hallucinations, coverage): 0 (0, 1), 1 (0, 3), 2 (2, 3), 3 (1, 2).
    Rejected 2 (2 halluc., coverage 3): cleaner with coverage >= 3 is only 1 (0, 3): gap 2.
    Rejected 3 (1, 2): cleaner with coverage >= 2 is 1 (0, 3): gap 1.
    Ranked by (chosen hallucinations, -gap): (1, 2) first, then (1, 3)."""
    samples = [candidate(0, 0, 1), candidate(1, 0, 3), candidate(2, 2, 3), candidate(3, 1, 2)]
    assert pairs_of(samples, pairs_per_prompt=2) == [(1, 2), (1, 3)]
    assert pairs_of(samples) == [(1, 2)]
    # A gap of 2 is needed: only rejected 2 qualifies.
    assert pairs_of(samples, min_gap=2, pairs_per_prompt=5) == [(1, 2)]


def test_coverage_rule() -> None:
    """Rejected 0 (1 hallucination, coverage 2). Sample 1 (0, 1) is the closer text (difflib ratio
    2*6/(9+6) = 0.8 against 2*3/(9+3) = 0.5 for sample 2) but covers less: chosen only when the
    coverage condition is dropped; otherwise sample 2 (0, 2)."""
    rejected = candidate(0, 1, 2, "a dog and a man and a cat .")
    closer = candidate(1, 0, 1, "a dog and a man .")
    covering = candidate(2, 0, 2, "a man .")
    assert pairs_of([rejected, closer, covering]) == [(2, 0)]
    assert pairs_of([rejected, closer, covering], coverage="ignore") == [(1, 0)]


def test_closest_text_wins_among_equally_clean() -> None:
    rejected = candidate(0, 1, 1, "a dog and a cat on a sofa .")
    near = candidate(1, 0, 1, "a dog on a sofa .")
    far = candidate(2, 0, 1, "there is one brown dog lying down .")
    assert pairs_of([rejected, far, near]) == [(1, 0)]


def test_drop_reasons() -> None:
    assert pair_item("p", [], PairingRules()) == ([], "no_usable_sample")
    assert pair_item("p", [candidate(0, 0, 2), candidate(1, 0, 1)], PairingRules()) == (
        [],
        "no_hallucination",
    )
    # the only cleaner sample covers less than the hallucinating one
    assert pair_item("p", [candidate(0, 1, 2), candidate(1, 0, 1)], PairingRules()) == ([], "no_clean_sample")
    # all hallucinate equally: nothing is cleaner
    assert pair_item("p", [candidate(0, 1, 1), candidate(1, 1, 1)], PairingRules()) == ([], "no_clean_sample")
    assert pair_item("p", [candidate(0, 2, 1), candidate(1, 1, 1)], PairingRules(min_gap=2)) == (
        [],
        "gap_too_small",
    )


def test_identical_texts_give_one_pair() -> None:
    same = [
        candidate(0, 0, 1, "a dog ."),
        candidate(1, 1, 1, "a dog and a cat ."),
        candidate(2, 1, 1, "a dog and a cat ."),
    ]
    assert pairs_of(same, pairs_per_prompt=3) == [(0, 1)]


def test_rules_are_checked() -> None:
    with pytest.raises(ConfigError, match="coverage"):
        PairingRules(coverage="most")
    with pytest.raises(ConfigError, match="at least 1"):
        PairingRules(min_gap=0)


def test_length_balance_by_hand() -> None:
    """Word differences chosen - rejected (NLTK words; "." is a word): +3, +1, -1, +2 -> mean 1.25.
    Drop the largest (+3): +1, -1, +2 -> 0.67; drop +2: +1, -1 -> 0 <= 0.5. Two kept, in order."""

    def pair(k: int, chosen: str, rejected: str) -> Pair:
        return Pair(f"p{k}", candidate(0, 0, 0, chosen), candidate(1, 1, 0, rejected))

    pairs = [
        pair(0, "a b c d e .", "a b ."),  # 6 - 3
        pair(1, "a b c .", "a b ."),  # 4 - 3
        pair(2, "a b .", "a b c ."),  # 3 - 4
        pair(3, "a b c d .", "a b ."),  # 5 - 3
    ]
    kept, dropped = balance_lengths(pairs)
    assert [p.item_id for p in kept] == ["p1", "p2"] and dropped == 2
    assert balance_lengths([]) == ([], 0)
