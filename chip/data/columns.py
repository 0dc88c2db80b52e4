"""Which stored column feeds which preference field: recognising published layouts as they are.

    mapping = detect_mapping(columns, sample, overrides={"query": "prompt"}, image_works=exists)
    record = mapping.apply(stored_record)        # standard field names, ready for `parse_row`
    print(mapping.describe())                    # shown in `chip data check`'s summary

A dataset is described by its column names and a sample of its first records. The standard names
(`prompt`, `chosen`, `rejected`, `images`/`image`, `id`, `*_segments`) are used where present;
a missing one is taken from the first alias present (`ALIASES`: RLAIF-V's `question`, `idx`...).
Of several image columns the first that works on the sample wins (inline bytes, or a path that
exists), so RLAIF-V's `image` bytes are used and its `image_path` (a path on the authors' disk)
is not. LLaVA-style `conversations` give the prompt (and, as in vision-feedback-mix, the pair);
LLaVA-RLHF's `output_1`/`output_2` with a `preference` of 1 or 2 give the pair.
RLHF-V's `text` JSON and TRL's implicit-prompt rows are expanded later by `chip.data.rows`.

A user override (`--column_map question=prompt`) always wins. A schema where a required field
has no column, while some column is left unread, is refused with one line listing the columns
found and the option to map them (with every column read, each row reports the missing field).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from chip.data.messages import conversation_fields
from chip.errors import DataError

Problem = tuple[str, str, str]  # (stored field, kind, reason), as chip.data.rows reports them

# The fields a preference row is read from (chip.data.rows), in the order the summary shows them.
FIELDS = ("prompt", "chosen", "rejected", "images", "image", "id", "chosen_segments", "rejected_segments")

# field -> stored column names used when the field's own column is absent, most common first.
ALIASES: dict[str, tuple[str, ...]] = {
    "prompt": ("question", "query", "instruction", "input", "prompt_text"),
    "chosen": ("chosen_response", "response_chosen", "preferred", "preferred_response", "chosen_answer"),
    "rejected": (
        "rejected_response",
        "response_rejected",
        "dispreferred",
        "dispreferred_response",
        "rejected_answer",
    ),
    "id": ("idx", "sample_id", "uid"),
}
# Columns that may hold a row's image(s), in order of preference when several work.
IMAGE_COLUMNS = ("images", "image", "image_path", "img_path", "image_file", "img", "image_bytes")
# LLaVA-RLHF: two answers and which one (1 or 2) people preferred.
RANKED_OUTPUTS = ("output_1", "output_2", "preference")
# A stored column that derives fields -> those fields: a problem with it explains their absence.
DERIVED_FIELDS = {"conversations": ("prompt",), "preference": ("chosen", "rejected")}
# LLaVA's speaker names -> chat roles.
MAP_HINT = "map columns with --column_map COLUMN=FIELD (e.g. --column_map question=prompt)"


@dataclass(frozen=True)
class ColumnMapping:
    """How stored records become rows with the standard field names.

    `renames` is (stored column, field) for every column read under another name; `dropped` are
    stored columns with a standard name that another column replaces; `conversations` says the
    prompt (and maybe the pair) comes from a LLaVA `conversations` column; `ranked_outputs` says the
    pair comes from `output_1`/`output_2` ordered by `preference`.
    """

    layout: str
    columns: tuple[str, ...]  # every column found, in stored order
    renames: tuple[tuple[str, str], ...] = ()
    dropped: tuple[str, ...] = ()
    conversations: bool = False
    ranked_outputs: bool = False
    rlhfv: bool = False  # `text` holds RLHF-V's JSON, expanded by chip.data.rows
    image_note: str = ""  # how the image column was chosen, e.g. "inline bytes"

    @property
    def used(self) -> tuple[str, ...]:
        """The stored columns that feed a field."""
        renamed = {stored for stored, _ in self.renames}
        direct = {name for name in self.columns if name in FIELDS and name not in self.dropped}
        extra = {"conversations"} if self.conversations else set()
        if self.ranked_outputs:
            extra |= set(RANKED_OUTPUTS)
        if self.rlhfv:
            extra.add("text")
        return tuple(name for name in self.columns if name in renamed | direct | extra)

    def apply(self, record: dict[str, Any]) -> tuple[dict[str, Any], list[Problem]]:
        """(the record under the standard field names, problems of the derived fields).

        Other columns are kept, and ignored later.
        """
        if not self.renames and not self.dropped and not self.conversations and not self.ranked_outputs:
            return record, []
        problems: list[Problem] = []
        out = {name: value for name, value in record.items() if name not in self.dropped}
        for stored, _ in self.renames:
            out.pop(stored, None)
        for stored, target in self.renames:
            out[target] = record.get(stored)
        if self.conversations:
            fields = conversation_fields(record.get("conversations"))
            if fields is None:
                reason = "expected a list of {from, value} turns (LLaVA conversations)"
                problems.append(("conversations", "wrong_type", reason))
                fields = {}
            for name, value in fields.items():
                if out.get(name) is None:
                    out[name] = value
        if self.ranked_outputs:
            try:
                out["chosen"], out["rejected"] = ranked_pair(record)
            except ValueError as err:
                problems.append(("preference", "bad_preference", str(err)))
        return out, problems

    def stored_name(self, field_name: str) -> str:
        """The stored name of a reported field (`images[2]` -> `image_path[2]`), for messages."""
        base, bracket, rest = field_name.partition("[")
        for stored, target in self.renames:
            if target == base:
                return f"{stored}{bracket}{rest}"
        if self.conversations and base == "prompt" and "prompt" not in self.columns:
            return "conversations"
        if self.ranked_outputs and base in ("chosen", "rejected"):
            return "output_1/output_2"
        return field_name

    def describe(self) -> str:
        """One line: the layout, each field's column, and the stored columns left unused."""
        return "; ".join(self.describe_lines())

    def describe_lines(self) -> list[str]:
        """`layout: ...` and `columns: ...` (in field order, then the unused ones) for a report."""
        renamed = dict(self.renames)
        order = {name: k for k, name in enumerate(FIELDS)}
        order |= {"text": 0, "conversations": 0, "output_1": 1, "output_2": 1, "preference": 1}
        used = sorted(self.used, key=lambda name: order.get(renamed.get(name, name), len(FIELDS)))
        parts = []
        for name in used:
            part = f"{name}→{renamed[name]}" if name in renamed else name
            if renamed.get(name, name) in ("images", "image") and self.image_note:
                part += f" ({self.image_note})"
            parts.append(part)
        columns = f"columns: {', '.join(parts) or '(none)'}"
        unused = [name for name in self.columns if name not in self.used]
        if unused:
            columns += f"; unused: {', '.join(unused)}"
        return [f"layout: {self.layout}", columns + " (change with --column_map COLUMN=FIELD)"]


def parse_column_map(value: str | Sequence[str] | Mapping[str, str] | None) -> dict[str, str]:
    """`"question=prompt,img=image"`, `["question=prompt", ...]` or a dict -> {stored column: field}.

    Raises `DataError` (one line) for an entry that is not COLUMN=FIELD or names an unknown field.
    """
    if value is None:
        return {}
    if isinstance(value, Mapping):
        pairs = [(str(k), str(v)) for k, v in value.items()]
    else:
        entries = [value] if isinstance(value, str) else list(value)
        pairs = []
        for entry in (piece for item in entries for piece in str(item).split(",")):
            if not entry.strip():
                continue
            stored, sep, target = entry.partition("=")
            if not sep or not stored.strip() or not target.strip():
                raise DataError(f"--column_map entry {entry!r} is not COLUMN=FIELD (e.g. question=prompt)")
            pairs.append((stored.strip(), target.strip()))
    mapping: dict[str, str] = {}
    for stored, target in pairs:
        if target not in FIELDS:
            raise DataError(
                f"--column_map {stored}={target}: unknown field {target!r}; fields are {', '.join(FIELDS)}"
            )
        mapping[stored] = target
    targets = list(mapping.values())
    doubled = sorted({t for t in targets if targets.count(t) > 1})
    if doubled:
        raise DataError(
            f"--column_map maps several columns to {', '.join(doubled)}; give one column per field"
        )
    return mapping


def detect_mapping(
    source: str,
    columns: Sequence[str],
    sample: Iterable[dict[str, Any]],
    overrides: Mapping[str, str] | None = None,
    image_works: Callable[[str], bool] = lambda path: True,
    prompts_only: bool = False,
) -> ColumnMapping:
    """Find the column of each field from the column names and the first records.

    `image_works(path)` says whether a stored image path resolves to an existing file, so that of
    several image columns one that works is chosen. Raises `DataError` (one line) when an override
    names a column the dataset lacks, or when a required field has no column at all (with
    `prompts_only`, only the prompt and images are required).
    """
    sample = list(sample)
    overrides = dict(overrides or {})
    missing = [name for name in overrides if name not in columns]
    if missing:
        raise DataError(
            f"{source}: --column_map names {', '.join(map(repr, missing))}, which is not a column; "
            f"columns found: {', '.join(columns) or '(none)'}"
        )
    renames = dict(overrides)
    fields = {target for target in renames.values()}
    if fields & {"images", "image"}:  # one image column, whichever of the two names it gets
        fields |= {"images", "image"}
    dropped = [name for name in columns if name in FIELDS and name in fields and name not in renames]

    def has(field_name: str) -> bool:
        return field_name in fields or (field_name in columns and field_name not in dropped)

    for field_name, aliases in ALIASES.items():
        if has(field_name):
            continue
        alias = next((name for name in aliases if name in columns and name not in renames), None)
        if alias is not None:
            renames[alias] = field_name
            fields.add(field_name)

    image_note = _resolve_image_column(columns, sample, overrides, renames, fields, dropped, has, image_works)

    rlhfv = "text" in columns and not any(has(f) for f in ("prompt", "chosen", "rejected"))
    conversations = not has("prompt") and not rlhfv and "conversations" in columns
    ranked_outputs = not (has("chosen") or has("rejected")) and set(RANKED_OUTPUTS) <= set(columns)
    mapping = ColumnMapping(
        layout="",
        columns=tuple(columns),
        renames=tuple(renames.items()),
        dropped=tuple(dropped),
        conversations=conversations,
        ranked_outputs=ranked_outputs,
        rlhfv=rlhfv,
        image_note=image_note,
    )
    mapping = replace(mapping, layout=_layout_name(mapping, sample, bool(overrides)))
    if sample:
        _refuse_unmappable(source, mapping, sample, prompts_only)
    return mapping


def _resolve_image_column(
    columns: Sequence[str],
    sample: list[dict[str, Any]],
    overrides: Mapping[str, str],
    renames: dict[str, str],
    fields: set[str],
    dropped: list[str],
    has: Callable[[str], bool],
    image_works: Callable[[str], bool],
) -> str:
    """Pick the column that feeds the images (adding to ``renames``/``fields``/``dropped`` in place);
    returns the note the summary shows about it."""
    overridden_image = next(
        (name for name, target in overrides.items() if target in ("images", "image")), None
    )
    if overridden_image is not None:
        return _image_kind(_first_value(sample, overridden_image), image_works)
    if not (has("images") or has("image")) or _image_column_is_broken(columns, sample, image_works, has):
        choice = _choose_image_column(columns, sample, image_works, exclude=set(renames))
        if choice is None:
            return ""
        column, target, image_note = choice
        dropped += [n for n in ("images", "image") if n in columns and n != column and n not in dropped]
        if column != target:
            renames[column] = target
        fields.add(target)
        return image_note
    if has("images") != has("image"):
        column = "images" if has("images") else "image"
        image_note = _image_kind(_first_value(sample, column), image_works)
        others = [
            name for name in IMAGE_COLUMNS if name in columns and name != column and name not in renames
        ]
        if others and column in columns:
            image_note += f"; chosen over {', '.join(others)}"
        return image_note
    return ""


def ranked_pair(record: dict[str, Any]) -> tuple[Any, Any]:
    """(chosen, rejected) from `output_1`/`output_2` ({from, value} or text) and `preference` (1 or 2)."""
    preference = record.get("preference")
    if isinstance(preference, str) and preference.strip() in ("1", "2"):
        preference = int(preference)
    if isinstance(preference, bool) or preference not in (1, 2):
        raise ValueError(f"expected 1 or 2 (the preferred output), got {preference!r}")
    outputs = []
    for name in ("output_1", "output_2"):
        output = record.get(name)
        outputs.append(output.get("value") if isinstance(output, dict) else output)
    return (outputs[0], outputs[1]) if preference == 1 else (outputs[1], outputs[0])


def _first_value(sample: list[dict[str, Any]], column: str) -> Any:
    return next((record[column] for record in sample if record.get(column) is not None), None)


def _image_kind(value: Any, image_works: Callable[[str], bool]) -> str:
    """'inline bytes', 'paths' or 'paths, not found' for the first image of a column."""
    if isinstance(value, list):
        value = value[0] if value else None
    if isinstance(value, dict):
        value = value.get("bytes") if value.get("bytes") is not None else value.get("path")
    if isinstance(value, bytes):
        return "inline bytes"
    if isinstance(value, str):
        return "paths" if image_works(value) else "paths, not found"
    return ""


def _image_column_is_broken(
    columns: Sequence[str],
    sample: list[dict[str, Any]],
    image_works: Callable[[str], bool],
    has: Callable[[str], bool],
) -> bool:
    """True when the one standard image column holds paths that do not exist (try the others)."""
    if has("images") == has("image"):
        return False
    column = "images" if has("images") else "image"
    return column in columns and _image_kind(_first_value(sample, column), image_works) == "paths, not found"


def _choose_image_column(
    columns: Sequence[str],
    sample: list[dict[str, Any]],
    image_works: Callable[[str], bool],
    exclude: set[str],
) -> tuple[str, str, str] | None:
    """(column, "images" or "image", how it was chosen) for the first image column that works."""
    candidates = [name for name in IMAGE_COLUMNS if name in columns and name not in exclude]
    if not candidates:
        return None
    kinds = {name: _image_kind(_first_value(sample, name), image_works) for name in candidates}
    working = [name for name in candidates if kinds[name] in ("inline bytes", "paths")]
    column = working[0] if working else candidates[0]
    note = kinds[column]
    others = [name for name in candidates if name != column]
    if others:
        note += f"; chosen over {', '.join(others)}"
    target = "images" if isinstance(_first_value(sample, column), list) else "image"
    return column, target, note


def _layout_name(mapping: ColumnMapping, sample: list[dict[str, Any]], overridden: bool) -> str:
    renames = dict(mapping.renames)
    if overridden:
        return "custom (--column_map)"
    if mapping.rlhfv:
        return "RLHF-V (text = JSON question/chosen/rejected)"
    if mapping.ranked_outputs:
        return "LLaVA-RLHF (output_1/output_2 ranked by preference)"
    if mapping.conversations:
        return "LLaVA conversations"
    if renames.get("question") == "prompt" and {"chosen", "rejected"} <= set(mapping.columns):
        return "RLAIF-V (question, chosen, rejected, image)"
    if isinstance(_first_value(sample, "prompt"), list) or isinstance(_first_value(sample, "chosen"), list):
        return "TRL conversational (chat messages)"
    if renames:
        return "standard fields under other names"
    return "chip / TRL standard (prompt, chosen, rejected, images)"


def _refuse_unmappable(
    source: str, mapping: ColumnMapping, sample: list[dict[str, Any]], prompts_only: bool
) -> None:
    fields = {target for _, target in mapping.renames} | {
        name for name in mapping.columns if name in FIELDS and name not in mapping.dropped
    }
    implicit_prompt = isinstance(_first_value(sample, "chosen"), list)
    pair_from_conversations = mapping.ranked_outputs or (
        mapping.conversations and "chosen" in (conversation_fields(sample[0].get("conversations")) or {})
    )
    needed = {
        "prompt": mapping.rlhfv or mapping.conversations or implicit_prompt or "prompt" in fields,
        "chosen": mapping.rlhfv or pair_from_conversations or "chosen" in fields,
        "rejected": mapping.rlhfv or pair_from_conversations or "rejected" in fields,
        "images": bool(fields & {"images", "image"}),
    }
    missing = [name for name, found in needed.items() if not found]
    if prompts_only:
        missing = [name for name in missing if name not in ("chosen", "rejected")]
    # Only a column chip does not read can hold the missing field; without one, the rows report it.
    if missing and set(mapping.columns) - set(mapping.used):
        raise DataError(
            f"{source}: no column for {', '.join(missing)}; columns found: "
            f"{', '.join(mapping.columns) or '(none)'}; {MAP_HINT}"
        )
