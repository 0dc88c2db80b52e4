"""Changed segments: which response tokens differ between the chosen and the rejected response.

CHiP up-weights the tokens that carry the preference (the hallucinated phrase in the rejected
response and its faithful counterpart in the chosen one). When a pair has no annotation, the
segments come from aligning the two token sequences; when it has character spans, they map to
tokens through the tokenizer's offsets. `changed_spans` finds the same kind of regions between two
texts, word by word, as character spans to store with a pair (the demo's pairs, `chip pairs`).
"""

from __future__ import annotations

from collections.abc import Sequence
from difflib import SequenceMatcher

Span = list[int]  # a character range [start, end) of a response


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


def changed_spans(chosen: str, rejected: str, single_edit: bool = False) -> tuple[list[Span], list[Span]]:
    """Character spans ``[start, end)`` of the word regions where two responses differ.

    By default every differing region (word-level ``difflib``, autojunk off); with ``single_edit``
    the one region left after the longest common word prefix and suffix, which is what a
    single-edit pair changed (difflib can split it where a word repeats). A region empty on one
    side (a pure insertion) is widened by the preceding word (the next one at the start), so the
    chosen response also carries a segment ("star" vs "star with a moon").
    """
    a, b = chosen.split(" "), rejected.split(" ")
    if a == b:
        return [], []
    if single_edit:
        regions = [_between_common_ends(a, b)]
    else:
        opcodes = SequenceMatcher(None, a, b, autojunk=False).get_opcodes()
        regions = [(i1, i2, j1, j2) for tag, i1, i2, j1, j2 in opcodes if tag != "equal"]
    a_starts = [sum(len(w) + 1 for w in a[:i]) for i in range(len(a) + 1)]
    b_starts = [sum(len(w) + 1 for w in b[:i]) for i in range(len(b) + 1)]
    chosen_spans: list[Span] = []
    rejected_spans: list[Span] = []
    for i1, i2, j1, j2 in regions:
        if i1 == i2 or j1 == j2:
            if i1 > 0 and j1 > 0:
                i1, j1 = i1 - 1, j1 - 1
            else:
                i2, j2 = i2 + 1, j2 + 1
        chosen_spans.append([a_starts[i1], a_starts[i2] - 1])
        rejected_spans.append([b_starts[j1], b_starts[j2] - 1])
    return _merge(chosen_spans), _merge(rejected_spans)


def _merge(spans: list[Span]) -> list[Span]:
    merged: list[Span] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return merged


def _between_common_ends(a: list[str], b: list[str]) -> tuple[int, int, int, int]:
    """Word region ``(i1, i2, j1, j2)`` left after the longest common prefix and suffix."""
    prefix = 0
    while prefix < min(len(a), len(b)) and a[prefix] == b[prefix]:
        prefix += 1
    suffix = 0
    while suffix < min(len(a), len(b)) - prefix and a[-1 - suffix] == b[-1 - suffix]:
        suffix += 1
    return prefix, len(a) - suffix, prefix, len(b) - suffix
