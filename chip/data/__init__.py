"""Preference data: loading, validation and the report of bad rows (docs/data.md).

from chip.data import load_preference_rows
examples, report = load_preference_rows("train.jsonl", on_bad_row="skip")
print(report)                     # the recognised layout / column mapping, then every bad row
"""

from chip.data.columns import ColumnMapping, parse_column_map
from chip.data.images import DEFAULT_MAX_PIXELS, TINY_IMAGE_SIDE, ImageProblem, ImageRef, to_rgb
from chip.data.loading import apply_on_bad_row, check_lengths, load_preference_rows
from chip.data.report import BadRow, DataReport, OnBadRow
from chip.data.rows import PreferenceExample

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "TINY_IMAGE_SIDE",
    "BadRow",
    "ColumnMapping",
    "DataReport",
    "ImageProblem",
    "ImageRef",
    "OnBadRow",
    "PreferenceExample",
    "apply_on_bad_row",
    "check_lengths",
    "load_preference_rows",
    "parse_column_map",
    "to_rgb",
]
