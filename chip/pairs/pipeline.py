"""`make_pairs`: sample, judge, pair, write — the library entry point behind `chip pairs`.

    report = make_pairs("runs/base", items, annotator, "data/round1", SamplingSettings(samples=8))

Every step reads what the one before left on disk, so the same call after a kill goes on where
it stopped: sampling resumes from `samples.ndjson`, a judge from `judgments.ndjson`, and the
pairs, images and report are rebuilt from those (the same result as an uninterrupted run).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from chip.evaluation.io import write_json_atomic, write_text_atomic
from chip.pairs.annotators import Annotator
from chip.pairs.output import PAIRS_FILE, REPORT_JSON, REPORT_MD, SAMPLES_FILE, write_pairs
from chip.pairs.pairing import Candidate, Pair, PairingRules, balance_lengths, pair_item
from chip.pairs.report import PairsOutcome, build_report, render_markdown
from chip.pairs.sampling import SamplingSettings, read_samples, sample_responses, unit_key
from chip.pairs.sources import PromptItem, Skipped


def pair_all(
    items: Sequence[PromptItem], candidates: dict[str, list[Candidate]], rules: PairingRules
) -> tuple[list[Pair], Counter, int]:
    """(pairs of every item, prompts without a pair by reason, pairs dropped by the length balance)."""
    pairs: list[Pair] = []
    drops: Counter = Counter()
    for item in items:
        found, reason = pair_item(item.id, candidates[item.id], rules)
        pairs += found
        if reason is not None:
            drops[reason] += 1
    if not rules.length_balance:
        return pairs, drops, 0
    kept, dropped = balance_lengths(pairs)
    return kept, drops, dropped


def make_pairs(
    model_path: str | Path,
    items: Sequence[PromptItem],
    annotator: Annotator,
    output: str | Path,
    sampling: SamplingSettings | None = None,
    rules: PairingRules | None = None,
    adapter: str | Path | None = None,
    skipped: Skipped | None = None,
    source: dict[str, Any] | None = None,
    examples: int = 3,
    progress: bool = True,
) -> dict[str, Any]:
    """Sample `sampling.samples` responses per item, annotate them, pair them and write `output`.

    Returns the report (also written as `pairs_report.json` / `.md`); the pairs are in
    `output/pairs.jsonl`, their images under `output/images/`.
    """
    sampling = sampling or SamplingSettings()
    rules = rules or PairingRules()
    output = Path(output)
    by_id = {item.id: item for item in items}
    if len(by_id) != len(items):
        raise ValueError("item ids must be unique")
    identity = sample_responses(model_path, items, output / SAMPLES_FILE, sampling, adapter, progress)
    units = [unit_key(item.id, k) for item in items for k in range(sampling.samples)]
    samples = read_samples(output / SAMPLES_FILE, set(units))
    usable = [samples[u] for u in units if samples[u].finished and samples[u].response.strip()]
    annotations = dict(zip((s.unit for s in usable), annotator.annotate(usable, by_id)))

    candidates: dict[str, list[Candidate]] = {item.id: [] for item in items}
    for sample in usable:
        annotation = annotations[sample.unit]
        if annotation.problem is None:
            candidates[sample.id].append(Candidate(sample.sample, sample.response, annotation))
    pairs, drops, balanced_out = pair_all(items, candidates, rules)

    rows = write_pairs(output, pairs, by_id, rules.rejected_per_row)
    run = {
        "model": identity,
        "annotator": annotator.describe(),
        "sampling": {**sampling.decoding(), "samples": sampling.samples},
        "rules": asdict(rules),
        "source": source or {},
        "output": {"pairs": str(output / PAIRS_FILE)},
    }
    outcome = PairsOutcome(
        items, samples, annotations, pairs, rows, drops, balanced_out, skipped or Skipped(), run
    )
    report = build_report(outcome, examples)
    write_json_atomic(output / REPORT_JSON, report)
    write_text_atomic(output / REPORT_MD, render_markdown(report))
    return report
