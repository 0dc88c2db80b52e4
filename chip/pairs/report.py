"""`pairs_report.json` and `pairs_report.md`: what was sampled, judged, paired and dropped, and why.

The JSON holds every number; the Markdown shows them with a few pairs, the hallucinated spans of
the rejected response in bold and the chosen response's changed words in italics. Text from the
dataset or the model is escaped, so a `<script>` tag or a Markdown link in a response shows as
the characters it is made of.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from chip.pairs.annotators import Annotation
from chip.pairs.pairing import DROP_REASONS, Pair, word_length
from chip.pairs.sampling import Sample
from chip.pairs.sources import PromptItem, Skipped

# Characters that Markdown or inline HTML would read as syntax, anywhere in a line.
_MARKDOWN_SYNTAX = re.compile(r"([\\`*_\[\]{}()<>&|!~#])")


def escape_markdown(text: str) -> str:
    """`text` as literal Markdown on one line: syntax characters backslash-escaped, line breaks spaced."""
    return _MARKDOWN_SYNTAX.sub(r"\\\1", re.sub(r"\s+", " ", text))


def mark_spans(text: str, spans: Sequence[Sequence[int]] | None, tag: str) -> str:
    """`text` escaped, with each span in an HTML `tag` (`b`, `i`): unlike `**`, a tag marks a span
    whatever characters surround it."""
    if not spans:
        return escape_markdown(text)
    pieces, at = [], 0
    for start, end in sorted((int(s), int(e)) for s, e in spans):
        pieces.append(escape_markdown(text[at:start]))
        pieces.append(f"<{tag}>{escape_markdown(text[start:end])}</{tag}>")
        at = end
    pieces.append(escape_markdown(text[at:]))
    return "".join(pieces)


@dataclass
class PairsOutcome:
    """Everything a run produced, for the report."""

    items: Sequence[PromptItem]
    samples: Mapping[str, Sample]  # unit -> sample, for this run's units
    annotations: Mapping[str, Annotation]  # unit -> annotation, for the usable samples
    pairs: Sequence[Pair]
    rows: Sequence[dict[str, Any]]  # the written rows, in the order of `pairs`
    drops: Counter  # prompt-level drop reason -> prompts
    balanced_out: int  # pairs dropped by the length balance
    skipped: Skipped
    run: dict[str, Any] = field(default_factory=dict)  # model, settings, rules, annotator, source


def _ratio(a: float, b: float) -> float:
    return a / b if b else 0.0


def build_report(outcome: PairsOutcome, examples: int = 3) -> dict[str, Any]:
    """The report's numbers (JSON-ready)."""
    samples, annotations = outcome.samples, outcome.annotations
    usable = {unit: a for unit, a in annotations.items() if a.problem is None}
    hallucinating = {unit for unit, a in usable.items() if a.hallucinations}
    by_item: dict[str, list[str]] = {}
    for unit in usable:
        by_item.setdefault(samples[unit].id, []).append(unit)
    pairs = outcome.pairs
    return {
        **outcome.run,
        "inputs": {
            "prompts": len(outcome.items),
            "skipped": outcome.skipped.counts,
            "skipped_examples": outcome.skipped.examples,
        },
        "samples": {
            "drawn": len(samples),
            "truncated": sum(not s.finished for s in samples.values()),
            "empty": sum(s.finished and not s.response.strip() for s in samples.values()),
            "unusable": dict(Counter(a.problem for a in annotations.values() if a.problem)),
            "judged": len(usable),
            "with_hallucination": len(hallucinating),
            "hallucination_rate": _ratio(len(hallucinating), len(usable)),
            "hallucinations_per_sample": _ratio(sum(a.hallucinations for a in usable.values()), len(usable)),
            "hallucinations_not_placed": sum(1 for u in hallucinating if usable[u].spans is None),
        },
        "prompts": {
            "with_judged_samples": len(by_item),
            "with_hallucination": sum(any(u in hallucinating for u in units) for units in by_item.values()),
            "hallucination_rate": _ratio(
                sum(any(u in hallucinating for u in units) for units in by_item.values()), len(by_item)
            ),
            "mean_share_of_samples_hallucinating": _ratio(
                sum(_ratio(sum(u in hallucinating for u in units), len(units)) for units in by_item.values()),
                len(by_item),
            ),
        },
        "pairs": {
            "kept": len(pairs),
            "prompts_with_pairs": len({p.item_id for p in pairs}),
            "chosen_hallucinations_mean": _ratio(
                sum(p.chosen.annotation.hallucinations for p in pairs), len(pairs)
            ),
            "rejected_hallucinations_mean": _ratio(
                sum(p.rejected.annotation.hallucinations for p in pairs), len(pairs)
            ),
            "chosen_words_mean": _ratio(sum(word_length(p.chosen.text) for p in pairs), len(pairs)),
            "rejected_words_mean": _ratio(sum(word_length(p.rejected.text) for p in pairs), len(pairs)),
            "without_segments": sum(p.rejected.annotation.spans is None for p in pairs),
        },
        "dropped": {
            "prompts": {reason: outcome.drops.get(reason, 0) for reason in DROP_REASONS},
            "pairs_by_length_balance": outcome.balanced_out,
        },
        "examples": [dict(row) for row in outcome.rows[:examples]],
    }


def _table(rows: Sequence[tuple[str, object]]) -> list[str]:
    lines = ["| | |", "|---|---:|"]
    for name, value in rows:
        shown = f"{value:.3f}" if isinstance(value, float) else str(value)
        lines.append(f"| {name} | {escape_markdown(shown)} |")
    return lines


def render_markdown(report: Mapping[str, Any]) -> str:
    """The Markdown report: the numbers as tables, then the example pairs with their spans marked."""
    samples, prompts, pairs, dropped = (
        report["samples"],
        report["prompts"],
        report["pairs"],
        report["dropped"],
    )
    model = report.get("model") or {}
    annotator = report.get("annotator") or {}
    lines = [
        "# chip pairs report",
        "",
        f"Model {escape_markdown(str(model.get('model', '?')))}; annotator "
        f"{escape_markdown(str(annotator.get('annotator', '?')))} "
        f"({escape_markdown(', '.join(f'{k} {v}' for k, v in annotator.items() if k != 'annotator'))}).",
        f"{pairs['kept']} pairs from {pairs['prompts_with_pairs']} of {report['inputs']['prompts']} prompts "
        f"({samples['drawn']} samples drawn).",
        "",
        "## Samples",
        "",
        *_table(
            [
                (name.replace("_", " "), value)
                for name, value in samples.items()
                if not isinstance(value, dict)
            ]
        ),
        *[f"- unusable, {escape_markdown(str(k))}: {v}" for k, v in samples["unusable"].items()],
        "",
        "## Prompts",
        "",
        *_table([(name.replace("_", " "), value) for name, value in prompts.items()]),
        *[f"- input skipped, {escape_markdown(k)}: {v}" for k, v in report["inputs"]["skipped"].items()],
        "",
        "## Pairs",
        "",
        *_table([(name.replace("_", " "), value) for name, value in pairs.items()]),
        "",
        "Prompts without a pair, by reason:",
        "",
        *_table([(reason.replace("_", " "), n) for reason, n in dropped["prompts"].items()]),
        "",
        f"Pairs dropped by the length balance: {dropped['pairs_by_length_balance']}.",
        "",
        "## Examples",
        "",
        "Rejected: hallucinated words in <b>bold</b>. Chosen: the words that differ in <i>italics</i>.",
    ]
    lines += _examples(report["examples"])
    return "\n".join(lines) + "\n"


def _examples(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Each example pair: prompt, chosen with its changed words in italics, rejected with its
    hallucinated spans in bold (each rejected response of a row that lists several)."""
    lines: list[str] = []
    for row in rows:
        prompt = row["prompt"] if isinstance(row["prompt"], str) else str(row["prompt"])
        lines += [
            "",
            f"### {escape_markdown(row['id'])}",
            "",
            f"- prompt: {escape_markdown(prompt)}",
            f"- chosen ({row['chosen_hallucinations']} hallucinated): "
            + mark_spans(row["chosen"], row.get("chosen_segments"), "i"),
        ]
        several = isinstance(row["rejected"], list)
        texts, counts, words = (
            row[key] if several else [row[key]]
            for key in ("rejected", "rejected_hallucinations", "hallucinated")
        )
        spans = (row.get("rejected_segments") if several else [row.get("rejected_segments")]) or [None] * len(
            texts
        )
        rejected = zip(texts, counts, words, spans)
        for text, count, hallucinated, text_spans in rejected:
            lines.append(
                f"- rejected ({count} hallucinated: {escape_markdown(', '.join(hallucinated))}): "
                + mark_spans(text, text_spans, "b")
            )
    return lines
