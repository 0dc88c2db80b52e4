"""The pairing rules: which of a prompt's judged samples become (chosen, rejected) pairs.

For each prompt, among its usable samples (finished, non-empty, judged):

    rejected  a sample with at least one hallucination
    chosen    for that rejected sample, one with the fewest hallucinations among those with fewer
              than it and a coverage of the truth not below its own (`coverage="ignore"` drops
              that condition); of equals, the one closest to the rejected in words, so the pair
              differs mainly where the hallucination is
    gap       rejected hallucinations - chosen hallucinations >= `min_gap`

Each rejected sample gives at most one pair; of these, the `pairs_per_prompt` with the cleanest
chosen, then the widest gap, then the closest texts are kept. A prompt without a pair is counted
under one reason: `no_usable_sample`, `no_hallucination` (no sample hallucinates), `no_clean_sample`
(none has fewer hallucinations with enough coverage), `gap_too_small`.

`balance_lengths` is RLAIF-V's length balance: chosen responses that are longer than their
rejected ones teach a preference for length, so the pairs whose chosen is the most longer are
dropped until the mean difference chosen - rejected is at most half a word (NLTK words).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Literal, get_args

from chip.errors import ConfigError, check_choices
from chip.evaluation.official_text import word_tokenize
from chip.pairs.annotators import Annotation

Coverage = Literal["at_least", "ignore"]
DROP_REASONS = ("no_usable_sample", "no_hallucination", "no_clean_sample", "gap_too_small")
# The mean (chosen - rejected) length in words that `balance_lengths` brings pairs under.
LENGTH_BALANCE_WORDS = 0.5


@dataclass(frozen=True)
class PairingRules:
    """How pairs are chosen among one prompt's samples."""

    min_gap: int = 1  # the rejected response holds at least this many more hallucinations
    pairs_per_prompt: int = 1  # at most this many pairs per prompt (P)
    coverage: Coverage = "at_least"  # chosen must name at least as many true objects as rejected
    length_balance: bool = False  # RLAIF-V's length balance over all pairs
    rejected_per_row: int = 1  # pairs sharing a prompt and chosen sample: up to this many per written row

    def __post_init__(self) -> None:
        if self.min_gap < 1 or self.pairs_per_prompt < 1 or self.rejected_per_row < 1:
            raise ConfigError("--min_gap, --pairs_per_prompt and --rejected_per_row must be at least 1")
        check_choices(self)


COVERAGE_CHOICES: tuple[str, ...] = get_args(Coverage)


@dataclass(frozen=True)
class Candidate:
    """A usable sample of one prompt, with its annotation."""

    sample: int  # sample index k
    text: str
    annotation: Annotation


@dataclass(frozen=True)
class Pair:
    item_id: str
    chosen: Candidate
    rejected: Candidate


def similarity(a: str, b: str) -> float:
    """Word-level similarity of two responses (difflib's ratio, 1 = the same words)."""
    return SequenceMatcher(None, a.split(), b.split(), autojunk=False).ratio()


def pair_item(
    item_id: str, candidates: Sequence[Candidate], rules: PairingRules
) -> tuple[list[Pair], str | None]:
    """The pairs of one prompt, or none and the reason (one of `DROP_REASONS`)."""
    if not candidates:
        return [], "no_usable_sample"
    count = {c.sample: c.annotation.hallucinations for c in candidates}
    if not any(count.values()):
        return [], "no_hallucination"
    options = []
    found_cleaner = False
    for rejected in candidates:
        cleaner = [
            c
            for c in candidates
            if count[c.sample] < count[rejected.sample]
            and (rules.coverage == "ignore" or c.annotation.coverage >= rejected.annotation.coverage)
        ]
        if not cleaner:
            continue
        found_cleaner = True
        fewest = min(count[c.sample] for c in cleaner)
        gap = count[rejected.sample] - fewest
        if gap < rules.min_gap:
            continue
        closeness = {
            c.sample: similarity(c.text, rejected.text) for c in cleaner if count[c.sample] == fewest
        }
        chosen = max(
            (c for c in cleaner if c.sample in closeness), key=lambda c: (closeness[c.sample], -c.sample)
        )
        options.append(
            ((fewest, -gap, -closeness[chosen.sample], rejected.sample), Pair(item_id, chosen, rejected))
        )
    if not options:
        return [], "gap_too_small" if found_cleaner else "no_clean_sample"
    pairs, seen = [], set()
    for _, pair in sorted(options, key=lambda option: option[0]):
        texts = (pair.chosen.text, pair.rejected.text)
        if texts not in seen and len(pairs) < rules.pairs_per_prompt:
            seen.add(texts)
            pairs.append(pair)
    return pairs, None


def word_length(text: str) -> int:
    """Length in NLTK words, as RLAIF-V's length filter counts it."""
    return len(word_tokenize(text))


def balance_lengths(pairs: Sequence[Pair]) -> tuple[list[Pair], int]:
    """(the pairs kept, in their order; how many were dropped) after RLAIF-V's length balance."""
    differences = [word_length(p.chosen.text) - word_length(p.rejected.text) for p in pairs]
    order = sorted(range(len(pairs)), key=lambda k: (differences[k], k))  # most longer chosen last
    total = sum(differences)
    while order and total / len(order) > LENGTH_BALANCE_WORDS:
        total -= differences[order.pop()]
    kept = set(order)
    return [pair for k, pair in enumerate(pairs) if k in kept], len(pairs) - len(kept)
