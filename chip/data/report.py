"""The record of what is wrong with a dataset: one `BadRow` per problem, gathered in a `DataReport`.

Bad rows are never dropped silently: whether the caller refuses the dataset (`on_bad_row="error"`)
or skips them (`"skip"`), the same report says which rows, which field and why, so a user can fix
the data and a training log can show how much was left out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from chip.data.columns import ColumnMapping

OnBadRow = Literal["error", "skip"]

# How many problems a one-line error message quotes before it says "and N more".
MESSAGE_EXAMPLES = 3


@dataclass(frozen=True)
class BadRow:
    """One problem with one row.

    `row` is the 0-based index of the row among the dataset's records; `line` is the 1-based line
    of a JSON Lines file (None for parquet / `datasets`), which is what a user opens in an editor.
    `kind` is a short stable code (``image_missing``, ``invalid_json``...) used to count problems by
    reason; `reason` is the full human sentence.
    """

    source: str
    row: int
    field: str
    kind: str
    reason: str
    line: int | None = None
    shard: str | None = None  # in a folder of shards: ``data/train-00001.parquet row 2``

    @property
    def location(self) -> str:
        """Where the row is, as a user would look for it: ``line 7``, ``row 6``, or ``row 6 (shard)``."""
        if self.shard is not None:
            return f"row {self.row} ({self.shard})"
        return f"line {self.line}" if self.line is not None else f"row {self.row}"

    def __str__(self) -> str:
        return f"{self.location}, field {self.field!r}: {self.reason}"


@dataclass
class DataReport:
    """Everything `load_preference_rows` found: counts, every bad row, and warnings.

    A row with several problems appears once per problem in `bad_rows` but counts once in
    `num_bad_rows`. Warnings (e.g. a 1×1 image) do not make a row unusable.
    """

    source: str
    total_rows: int = 0
    bad_rows: list[BadRow] = field(default_factory=list)
    warnings: list[BadRow] = field(default_factory=list)
    description: str = ""  # what was read, for a folder or hub dataset: "split train, 4 .parquet file(s)"
    mapping: ColumnMapping | None = None  # which column feeds which field (chip.data.columns)

    def add(
        self, row: int, field: str, kind: str, reason: str, line: int | None = None, shard: str | None = None
    ) -> None:
        """Record one problem of one row of this report's source."""
        self.bad_rows.append(BadRow(self.source, row, field, kind, reason, line, shard))

    @property
    def bad_row_indices(self) -> set[int]:
        """The 0-based indices of the rows that cannot be used."""
        return {bad.row for bad in self.bad_rows}

    @property
    def num_bad_rows(self) -> int:
        return len(self.bad_row_indices)

    @property
    def num_usable_rows(self) -> int:
        return self.total_rows - self.num_bad_rows

    @property
    def ok(self) -> bool:
        """True when every row is usable."""
        return not self.bad_rows

    def counts(self) -> dict[str, int]:
        """Number of distinct bad rows per problem kind, most frequent first."""
        per_kind = Counter(kind for kind, _ in {(bad.kind, bad.row) for bad in self.bad_rows})
        return dict(per_kind.most_common())

    def summary(self) -> str:
        """One line: how many rows are bad, the first few problems, and what to do about it."""
        head = "; ".join(str(bad) for bad in self._sorted(self.bad_rows)[:MESSAGE_EXAMPLES])
        more = len(self.bad_rows) - MESSAGE_EXAMPLES
        tail = f"; and {more} more problem(s)" if more > 0 else ""
        return (
            f"{self.source}: {self.num_bad_rows} of {self.total_rows} rows are unusable: {head}{tail} "
            f"(run `chip data check {self.source}` for the full report, or skip bad rows with "
            f"on_bad_row='skip')"
        )

    def __str__(self) -> str:
        lines = [
            f"{self.source}: {self.total_rows} rows, {self.num_usable_rows} usable, {self.num_bad_rows} bad"
        ]
        if self.description:
            lines.append(f"read: {self.description}")
        if self.mapping is not None:
            lines.extend(self.mapping.describe_lines())
        if self.bad_rows:
            lines.append("bad rows:")
            lines.extend(f"  {bad}" for bad in self._sorted(self.bad_rows))
            lines.append("bad rows by reason:")
            lines.extend(f"  {kind}: {n}" for kind, n in self.counts().items())
        if self.warnings:
            lines.append(f"warnings ({len(self.warnings)}, rows still usable):")
            lines.extend(f"  {warning}" for warning in self._sorted(self.warnings))
        return "\n".join(lines)

    @staticmethod
    def _sorted(entries: Sequence[BadRow]) -> list[BadRow]:
        return sorted(entries, key=lambda bad: (bad.row, bad.field))
