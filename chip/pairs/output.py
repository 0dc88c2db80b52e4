"""The training folder `chip pairs` writes: `pairs.jsonl` and the images its rows name.

    data/round1/
      pairs.jsonl          the rows `chip train --dataset data/round1` reads
      images/...           every image a row names (hard links where possible, else copies)
      pairs_report.md/json what was sampled, judged, paired and dropped
      samples.ndjson       every sample (the sampling state; a restart resumes from it)
      judgments.ndjson     with --judge: every judgment (the judging state)

The state files end in `.ndjson`, so a folder read as a dataset reads `pairs.jsonl` alone. A row:

    {"id": "<item id>#pair0", "images": ["images/..."], "prompt": ..., "chosen": ..., "rejected": ...,
     "chosen_segments": [[s, e], ...], "rejected_segments": [[s, e], ...], "source_id": <item id>,
     "chosen_sample": k, "rejected_sample": k', "chosen_hallucinations": n, "rejected_hallucinations": n',
     "hallucinated": [...]}

`rejected_segments` are the hallucinated words (or claims) of the rejected response; `chosen_segments`
the chosen response's words where the two differ (`chip.segments.changed_spans`). When a
hallucination could not be placed in the text, both are left out and training derives the segments
from the token diff, as for any pair without spans.

With ``--rejected_per_row N`` the pairs of a prompt that share their chosen sample become one row
with up to N rejected responses: ``rejected``, ``rejected_sample``, ``rejected_hallucinations`` and
``hallucinated`` are then lists (one entry per rejected response), ``rejected_segments`` one span list
(or null) per rejected response, and ``chosen_segments`` one span list (or null) per rejected
response too: the chosen response's changed words depend on the rejected one.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from chip.data import ImageRef
from chip.files import write_atomic, write_bytes_atomic, write_text_atomic
from chip.pairs.pairing import Pair
from chip.pairs.sources import PromptItem
from chip.segments import changed_spans

PAIRS_FILE = "pairs.jsonl"
IMAGES_DIR = "images"
SAMPLES_FILE = "samples.ndjson"
JUDGMENTS_FILE = "judgments.ndjson"
REPORT_JSON = "pairs_report.json"
REPORT_MD = "pairs_report.md"


def pair_row(pair: Pair, number: int, item: PromptItem) -> dict[str, Any]:
    """The dataset row of one pair (the `number`-th of its prompt)."""
    chosen, rejected = pair.chosen, pair.rejected
    spans = rejected.annotation.spans
    row: dict[str, Any] = {
        "id": f"{item.id}#pair{number}",
        "images": [f"{IMAGES_DIR}/{name}" for name in item.image_names],
        "prompt": item.prompt,
        "chosen": chosen.text,
        "rejected": rejected.text,
    }
    if spans is not None:
        chosen_spans, _ = changed_spans(chosen.text, rejected.text)
        row["chosen_segments"] = [span for span in chosen_spans if span[1] > span[0]]
        row["rejected_segments"] = [list(span) for span in spans]
    return {
        **row,
        "source_id": item.id,
        "chosen_sample": chosen.sample,
        "rejected_sample": rejected.sample,
        "chosen_hallucinations": chosen.annotation.hallucinations,
        "rejected_hallucinations": rejected.annotation.hallucinations,
        "hallucinated": list(rejected.annotation.hallucinated),
    }


def group_row(pairs: Sequence[Pair], number: int, item: PromptItem) -> dict[str, Any]:
    """The dataset row of pairs sharing their prompt and chosen sample: several rejected responses."""
    if len(pairs) == 1:
        return pair_row(pairs[0], number, item)
    row = pair_row(pairs[0], number, item)
    rejected = [pair.rejected for pair in pairs]
    singles = [pair_row(pair, number, item) for pair in pairs]
    for field in ("chosen_segments", "rejected_segments"):
        if all(field not in single for single in singles):
            row.pop(field, None)
        else:
            row[field] = [single.get(field) for single in singles]
    return {
        **row,
        "rejected": [candidate.text for candidate in rejected],
        "rejected_sample": [candidate.sample for candidate in rejected],
        "rejected_hallucinations": [candidate.annotation.hallucinations for candidate in rejected],
        "hallucinated": [list(candidate.annotation.hallucinated) for candidate in rejected],
    }


def group_pairs(pairs: Sequence[Pair], rejected_per_row: int) -> list[list[Pair]]:
    """Pairs in rows: those of one prompt with the same chosen sample together, up to N per row, in order."""
    rows: list[list[Pair]] = []
    open_rows: dict[tuple[str, int], list[Pair]] = {}
    for pair in pairs:
        key = (pair.item_id, pair.chosen.sample)
        row = open_rows.get(key)
        if row is None or len(row) >= rejected_per_row:
            row = open_rows[key] = []
            rows.append(row)
        row.append(pair)
    return rows


def _place_image(ref: ImageRef, target: Path) -> None:
    """Put one image at `target`: a hard link to the source file where the file system allows it."""
    if target.exists():
        return
    if ref.data is not None:
        write_bytes_atomic(target, ref.data)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(str(ref.path), target)  # atomic: the name appears with the whole file behind it
    except OSError:  # another device, or a file system without hard links
        write_atomic(target, lambda tmp: shutil.copyfile(str(ref.path), tmp), ref.path.stat().st_size)


def write_pairs(
    output: Path, pairs: Sequence[Pair], items: Mapping[str, PromptItem], rejected_per_row: int = 1
) -> list[dict[str, Any]]:
    """Write the images the pairs need, then `pairs.jsonl` (atomically); returns its rows."""
    rows, numbers = [], {}
    for group in group_pairs(pairs, rejected_per_row):
        item = items[group[0].item_id]
        number = numbers[item.id] = numbers.get(item.id, -1) + 1
        for ref, name in zip(item.images, item.image_names):
            _place_image(ref, output / IMAGES_DIR / name)
        rows.append(group_row(group, number, item))
    write_text_atomic(
        output / PAIRS_FILE, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    )
    return rows
