"""What a benchmark entry of `chip eval` is made of: its questions to generate for, and its glue.

`benchmarks.BENCHMARKS` lists the entries; the hallucination benchmarks' glue lives in
`benchmarks.py`, the general-ability benchmarks' (MME, MMBench, ScienceQA) in `general.py`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from chip.errors import ConfigError
from chip.evaluation.judge import JudgeClient


@dataclass(frozen=True)
class Question:
    """One prompt to generate an answer for: `image` is a path relative to --image-root, or None.

    `image_data` holds a base64-encoded image for benchmarks that ship images inside their
    question file (MMBench's TSV); it is used instead of reading `image`, which then only names it.
    """

    id: Hashable
    prompt: str
    image: str | None
    image_data: str | None = None


@dataclass(frozen=True)
class Benchmark:
    name: str
    id_field: str  # the field of an answer row that names its question / image
    needs: tuple[str, ...]  # CLI options that must be given ("annotations", "questions")
    # (args, answers by id, judge or None) -> metrics, including "scorer"
    score: Callable[[argparse.Namespace, dict[Hashable, str], JudgeClient | None], dict]
    # args -> the questions to answer when generating with --model
    questions: Callable[[argparse.Namespace], list[Question]]
    id_type: type = str
    # optional: an id built from the whole row (None when the row lacks what it needs)
    row_id: Callable[[dict], Hashable | None] | None = None
    # True when the benchmark has no rule-based scorer (a judge is required)
    needs_judge: bool = False
    # what it measures; `--compare` groups the rows of a table by it
    kind: Literal["hallucination", "general"] = "hallucination"
    # answers given in the benchmark's own results layout (answers by id), or None for other paths
    read_native: Callable[[Path], dict[Hashable, str] | None] | None = None
    # True when only the reference's reading exists (`--reading corrected` is refused)
    official_only: bool = False


def single_path(args: argparse.Namespace, option: str) -> Path:
    """The one file given to `--option` (which may be a list option), as a Path."""
    value = getattr(args, option)
    if isinstance(value, list):
        if len(value) != 1:
            raise ConfigError(f"--bench {args.bench} takes one --{option} file")
        value = value[0]
    return Path(value)
