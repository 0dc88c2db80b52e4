"""Row checks that need the model's processor: special-token text in prompts and prompt length.

`chip data check` knows no model, so these run when training starts (`chip train`,
`chip data precompute`), before any weights load, and add their bad rows to the same
`DataReport` as the model-free checks.
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import ExifTags

from chip.data.images import ImageRef
from chip.data.loading import check_lengths
from chip.data.report import BadRow, DataReport
from chip.data.rows import PreferenceExample

# EXIF orientations that rotate by 90° (`to_rgb` transposes them, so width and height swap)
_TRANSPOSED = {5, 6, 7, 8}


def displayed_size(ref: ImageRef) -> tuple[int, int]:
    """``(width, height)`` of an image as `ImageRef.load` returns it, from its header alone."""
    with ref.open() as image:
        width, height = image.size
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    return (height, width) if orientation in _TRANSPOSED else (width, height)


def check_with_processor(
    examples: Sequence[PreferenceExample], report: DataReport, adapter, max_length: int
) -> None:
    """Add to ``report`` every prompt holding special-token text and every prompt too long for ``max_length``.

    ``adapter`` is a `chip.modeling.VLMAdapter`; prompt lengths come from image headers
    (`VLMAdapter.prompt_length`), so no image is decoded here.
    """
    from chip.modeling.adapter import special_text_reason

    prompt_tokens: dict[int, int] = {}
    for example in examples:
        found = adapter.special_tokens_in(example.prompt)
        if found:
            reason = special_text_reason(found)
            report.bad_rows.append(
                BadRow(
                    example.source,
                    example.row,
                    "prompt",
                    "special_token_text",
                    reason,
                    example.line,
                    example.shard,
                )
            )
            continue
        sizes = [displayed_size(ref) for ref in example.images]
        prompt_tokens[example.row] = adapter.prompt_length(sizes, example.prompt)
    encodable = [example for example in examples if example.row in prompt_tokens]
    report.bad_rows.extend(check_lengths(encodable, lambda ex: prompt_tokens[ex.row], max_length))
