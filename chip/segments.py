"""Changed segments: which response tokens differ between the chosen and the rejected response.

CHiP up-weights the tokens that carry the preference (the hallucinated phrase in the rejected
response and its faithful counterpart in the chosen one). When a pair has no annotation, the
segments come from aligning the two token sequences; when it has character spans, they map to
tokens through the tokenizer's offsets.
"""

from __future__ import annotations

from collections.abc import Sequence
from difflib import SequenceMatcher


def changed_segments(
    chosen_ids: Sequence[int],
    rejected_ids: Sequence[int],
    min_match: int = 3,
    mark_insertions: bool = False,
) -> tuple[list[bool], list[bool]]:
    """Flag the tokens of each response that lie inside a changed segment.

    The two sequences are aligned with a longest-matching-block diff (``difflib``, autojunk off);
    only matching blocks of at least ``min_match`` tokens are kept as anchors, since short
    coincidental matches ("a", ".") would otherwise split one replacement into fragments. A gap
    between consecutive anchors (or before the first / after the last) that is non-empty on both
    sides is a replacement and is flagged on both sides. A gap empty on one side is a pure
    insertion or deletion, flagged only when ``mark_insertions``.

    Example: ``a red star . a moon .`` vs ``a red star . a ring .`` aligns ``a red star . a``
    (5 tokens) and ``.`` (1 token); with ``min_match=3`` only the first block anchors, so
    ``moon .`` and ``ring .`` form one replaced segment.
    """
    if min_match < 1:
        raise ValueError(f"min_match must be >= 1, got {min_match}")
    chosen_ids, rejected_ids = list(chosen_ids), list(rejected_ids)
    chosen_flags = [False] * len(chosen_ids)
    rejected_flags = [False] * len(rejected_ids)

    matcher = SequenceMatcher(None, chosen_ids, rejected_ids, autojunk=False)
    anchors = [block for block in matcher.get_matching_blocks() if block.size >= min_match]

    prev_a = prev_b = 0
    for a_start, b_start, size in [*anchors, (len(chosen_ids), len(rejected_ids), 0)]:
        gap_a, gap_b = range(prev_a, a_start), range(prev_b, b_start)
        is_replacement = len(gap_a) > 0 and len(gap_b) > 0
        if is_replacement or (mark_insertions and (gap_a or gap_b)):
            for i in gap_a:
                chosen_flags[i] = True
            for j in gap_b:
                rejected_flags[j] = True
        prev_a, prev_b = a_start + size, b_start + size
    return chosen_flags, rejected_flags


def spans_to_token_flags(
    offsets: Sequence[tuple[int, int]],
    spans: Sequence[Sequence[int]],
) -> list[bool]:
    """Flag each token whose character range ``[start, end)`` overlaps any span ``[s, e)``.

    ``offsets`` is the tokenizer's ``offset_mapping`` for the response text. Tokens with an empty
    range (special tokens) are never flagged.
    """
    flags = []
    for tok_start, tok_end in offsets:
        hit = tok_end > tok_start and any(tok_start < end and tok_end > start for start, end in spans)
        flags.append(hit)
    return flags


def validate_spans(spans: object, text_length: int) -> str | None:
    """Return why ``spans`` is not a list of in-range ``[start, end)`` pairs, or None if it is."""
    if not isinstance(spans, (list, tuple)):
        return f"expected a list of [start, end] pairs, got {type(spans).__name__}"
    for k, span in enumerate(spans):
        if not isinstance(span, (list, tuple)) or len(span) != 2:
            return f"span {k} is not a [start, end] pair: {span!r}"
        start, end = span
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (start, end)):
            return f"span {k} has non-integer bounds: {span!r}"
        if start < 0 or end > text_length:
            return f"span {k} {list(span)} is out of range for a text of {text_length} characters"
        if start >= end:
            return f"span {k} {list(span)} is empty or reversed"
    return None
