"""One preference row: the checks a stored record must pass, and the example it becomes.

Checks are tables, so adding a rule is one line: `FIELD_RULES` parses and validates each field on
its own; `CROSS_CHECKS` then looks at fields together (identical responses, segment spans against
the response text, image placeholders against the images). A record collects every problem it
has, so one pass over a dataset reports all of them.

Normalisation (what `PreferenceExample` holds, whatever the stored form):

- `prompt`: a plain string is kept verbatim (the collator puts the images before it in a user
  turn); chat messages are kept as a list in the normalised shape of `chip.data.messages`.
- `chosen` / `rejected`: always the assistant's text. A response given as messages must be a
  single assistant message; its text parts are joined.
- TRL's implicit-prompt form (no `prompt`; `chosen` and `rejected` are whole conversations with
  the same earlier turns) is split into the shared prompt and the two last turns.
- RLHF-V rows (`text` = JSON with question/chosen/rejected, `image` = {bytes, path}) become
  `prompt` = question; their `idx` is the id when there is no `id`. Problems are reported under
  the stored names (`text.question`...).
- `rejected` may list several rejected responses (each a string or a message list; in TRL's
  implicit-prompt form each a whole conversation): the first is `rejected`, the others
  `more_rejected`. `rejected_segments` then lists one span list (or null) per rejected response,
  and `chosen_segments` may too (the chosen response's changed spans against each rejected one,
  `more_chosen_segments` after the first); a single span list holds against every one.
- `chosen_segments` / `rejected_segments` are character spans `[start, end)` into that assistant
  text; None means "not annotated" (segments are then derived from a token diff), `[]` means
  "annotated: nothing changed".
- `id` is a string; an integer id is converted; a missing id becomes the 0-based row index.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

from chip.data.images import ImageRef
from chip.data.messages import (
    FieldProblem,
    Message,
    check_text,
    count_image_parts,
    normalise_messages,
    response_text,
    split_implicit_prompt,
)
from chip.segments import validate_spans

Span = tuple[int, int]
Problem = tuple[str, str, str]  # (field, kind, reason)
ImageSource = str | bytes  # a path as written in the row, or inline encoded bytes


@dataclass
class PreferenceExample:
    """A usable preference pair. Images are `ImageRef`s, decoded only by `load_images()`."""

    id: str
    row: int  # 0-based index among the dataset's records
    source: str  # the dataset path it was read from
    images: list[ImageRef]
    prompt: str | list[Message]
    chosen: str
    rejected: str
    chosen_segments: list[Span] | None = None
    rejected_segments: list[Span] | None = None
    more_rejected: tuple[str, ...] = ()  # the row's other rejected responses, in order
    more_rejected_segments: tuple[list[Span] | None, ...] = ()  # their spans, one entry each
    # chosen's spans against each of them when the row gives one span list per rejected response;
    # empty: `chosen_segments` holds against every rejected response
    more_chosen_segments: tuple[list[Span] | None, ...] = ()
    line: int | None = None  # 1-based line in a JSON Lines file, for messages
    shard: str | None = None  # in a folder of shards: the file and the line/row in it, for messages

    def load_images(self) -> list[Image.Image]:
        """Decode this row's images as RGB."""
        return [ref.load() for ref in self.images]

    def all_rejected(self, limit: int = 0) -> list[tuple[str, list[Span] | None]]:
        """Every rejected response with its spans, the first ``limit`` of them when ``limit`` > 0."""
        segments = self.more_rejected_segments or (None,) * len(self.more_rejected)
        rows = [(self.rejected, self.rejected_segments), *zip(self.more_rejected, segments)]
        return rows[:limit] if limit > 0 else rows

    def chosen_segments_against(self, k: int) -> list[Span] | None:
        """The chosen response's spans in its pair with rejected response ``k`` (0 = the first)."""
        if k == 0 or not self.more_chosen_segments:
            return self.chosen_segments
        return self.more_chosen_segments[k - 1]


@dataclass
class ParsedRow:
    """A record whose fields all passed; images are still unresolved sources."""

    id: str | None
    prompt: str | list[Message]
    chosen: str
    rejected: str
    chosen_segments: list[Span] | None
    rejected_segments: list[Span] | None
    images: list[tuple[str, ImageSource]]  # (field name for messages, source)
    more_rejected: tuple[str, ...] = ()
    more_rejected_segments: tuple[list[Span] | None, ...] = ()
    more_chosen_segments: tuple[list[Span] | None, ...] = ()


def _parse_id(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise FieldProblem("wrong_type", f"expected a string or an integer, got {type(value).__name__}")
    text = check_text(str(value))
    if not text.strip():
        raise FieldProblem("empty_text", "is empty")
    return text


def _parse_prompt(value: Any) -> str | list[Message]:
    if isinstance(value, str):
        return check_text(value)
    if isinstance(value, list):
        messages = normalise_messages(value)
        if messages[-1]["role"] != "user":
            raise FieldProblem(
                "bad_message", f"the last prompt message must be 'user', got {messages[-1]['role']!r}"
            )
        return messages
    raise FieldProblem(
        "wrong_type", f"expected a string or a list of chat messages, got {type(value).__name__}"
    )


def _parse_response(value: Any) -> str:
    if isinstance(value, str):
        text = check_text(value)
    elif isinstance(value, list):
        text = response_text(normalise_messages(value))
    else:
        raise FieldProblem(
            "wrong_type", f"expected a string or a list of chat messages, got {type(value).__name__}"
        )
    if not text.strip():
        raise FieldProblem("empty_text", "is empty")
    return text


def _parse_spans(value: Any) -> list[Span]:
    reason = validate_spans(value, sys.maxsize)  # types only; ranges are a cross check
    if reason is not None:
        raise FieldProblem("bad_segments", reason)
    return [(int(start), int(end)) for start, end in value]


def is_response_list(value: Any) -> bool:
    """Whether a `rejected` value lists several responses (strings or message lists), not one message list."""
    return isinstance(value, list) and bool(value) and all(isinstance(item, (str, list)) for item in value)


def _parse_rejected(value: Any) -> list[str]:
    """One rejected response, or a list of them (each parsed like `chosen`); always a list."""
    if not is_response_list(value):
        return [_parse_response(value)]
    texts = []
    for k, item in enumerate(value):
        try:
            texts.append(_parse_response(item))
        except FieldProblem as problem:
            raise FieldProblem(problem.kind, f"item {k}: {problem.reason}") from None
    return texts


def _parse_rejected_spans(value: Any) -> list[list[Span] | None]:
    """Spans of one rejected response, or (a list of span lists or nulls) one entry per response."""
    if isinstance(value, list) and value and all(item is None or _is_span_list(item) for item in value):
        return [None if item is None else _parse_spans(item) for item in value]
    return [_parse_spans(value)]


def _parse_chosen_spans(value: Any) -> list[Span] | tuple[list[Span] | None, ...]:
    """Spans of the chosen response: one list for every pair, or a tuple with one entry per rejected response."""
    if isinstance(value, list) and value and all(item is None or _is_span_list(item) for item in value):
        return tuple(_parse_rejected_spans(value))
    return _parse_spans(value)


def _is_span_list(value: Any) -> bool:
    """A list of spans (``[[0, 3]]``, or ``[]``), as opposed to one span (``[0, 3]``)."""
    return isinstance(value, list) and all(isinstance(span, list | tuple) for span in value)


@dataclass(frozen=True)
class FieldRule:
    name: str
    required: bool
    parse: Callable[[Any], Any]


FIELD_RULES: tuple[FieldRule, ...] = (
    FieldRule("id", False, _parse_id),
    FieldRule("prompt", True, _parse_prompt),
    FieldRule("chosen", True, _parse_response),
    FieldRule("rejected", True, _parse_rejected),
    FieldRule("chosen_segments", False, _parse_chosen_spans),
    FieldRule("rejected_segments", False, _parse_rejected_spans),
)


def _identical(values: dict[str, Any]) -> str | None:
    rejected = values["rejected"]
    for k, text in enumerate(rejected):
        if values["chosen"].strip() == text.strip():
            where = f"item {k} " if len(rejected) > 1 else ""
            return f"{where}is identical to chosen, so the pair expresses no preference"
    return None


def _chosen_spans_in_range(values: dict[str, Any]) -> str | None:
    spans, text = values["chosen_segments"], values["chosen"]
    if spans is None:
        return None
    if not isinstance(spans, tuple):  # one span list for every pair
        return validate_spans([list(s) for s in spans], len(text))
    return _span_lists_in_range(spans, [text] * len(values["rejected"]))


def _rejected_spans_in_range(values: dict[str, Any]) -> str | None:
    spans = values["rejected_segments"]
    return None if spans is None else _span_lists_in_range(spans, values["rejected"])


def _span_lists_in_range(spans: Sequence[list[Span] | None], texts: list[str]) -> str | None:
    """One span list (or None) per rejected response, each within its text (``texts``, one per response)."""
    if len(spans) != len(texts):
        return f"has {len(spans)} span list(s) for {len(texts)} rejected responses; give one per response"
    for k, (each, text) in enumerate(zip(spans, texts)):
        reason = None if each is None else validate_spans([list(s) for s in each], len(text))
        if reason is not None:
            return f"item {k}: {reason}" if len(texts) > 1 else reason
    return None


def _placeholders_match_images(values: dict[str, Any]) -> str | None:
    prompt, images = values["prompt"], values["images"]
    placeholders = count_image_parts(prompt) if isinstance(prompt, list) else 0
    if placeholders and placeholders != len(images):
        return f"has {placeholders} image placeholder(s) but the row has {len(images)} image(s)"
    return None


# (field reported, kind, fields it needs, check returning a reason or None)
CROSS_CHECKS: tuple[tuple[str, str, tuple[str, ...], Callable[[dict[str, Any]], str | None]], ...] = (
    ("rejected", "identical_responses", ("chosen", "rejected"), _identical),
    ("chosen_segments", "bad_segments", ("chosen", "rejected", "chosen_segments"), _chosen_spans_in_range),
    ("rejected_segments", "bad_segments", ("rejected", "rejected_segments"), _rejected_spans_in_range),
    ("prompt", "image_count_mismatch", ("prompt", "images"), _placeholders_match_images),
)

# What a prompt set (`parse_row(..., prompts_only=True)`) does not read.
RESPONSE_FIELDS = ("chosen", "rejected", "chosen_segments", "rejected_segments")

RLHFV_NAMES = {"prompt": "text.question", "chosen": "text.chosen", "rejected": "text.rejected"}


def parse_row(
    record: dict[str, Any], prompts_only: bool = False
) -> tuple[ParsedRow | None, list[tuple[str, ImageSource]], list[Problem]]:
    """Validate one stored record: (the parsed row or None if any problem, image sources, problems).

    The well-formed image sources are returned even for a bad row, so that the loader can check
    them too and a user sees all of a row's problems at once. With `prompts_only` (a prompt set,
    e.g. for `chip pairs`) the responses and their segments are not read: the row's `chosen` and
    `rejected` are empty.
    """
    problems: list[Problem] = []
    names = {rule.name: rule.name for rule in FIELD_RULES}
    if _is_rlhfv(record):
        record, names = _expand_rlhfv(record, problems), {**names, **RLHFV_NAMES}
    elif record.get("prompt") is None and isinstance(record.get("chosen"), list):
        record = _expand_implicit_prompt(record, problems)

    values: dict[str, Any] = {}
    for rule in FIELD_RULES:
        if prompts_only and rule.name in RESPONSE_FIELDS:
            continue
        value = record.get(rule.name)
        if value is None:
            already_reported = any(field in (names[rule.name], "text") for field, _, _ in problems)
            if rule.required and not already_reported:
                problems.append((names[rule.name], "missing_field", "is missing (required)"))
            elif not rule.required:
                values[rule.name] = None
            continue
        try:
            values[rule.name] = rule.parse(value)
        except FieldProblem as problem:
            problems.append((names[rule.name], problem.kind, problem.reason))

    n_problems = len(problems)
    images = _image_sources(record, problems)
    if len(problems) == n_problems:
        values["images"] = images
    for field, kind, needs, check in CROSS_CHECKS:
        if all(name in values for name in needs) and (reason := check(values)) is not None:
            problems.append((names.get(field, field), kind, reason))

    if problems:
        return None, images, problems
    if prompts_only:
        values.update(chosen="", rejected=[""], chosen_segments=None, rejected_segments=None)
    return ParsedRow(**_first_rejected(values)), images, []


def _first_rejected(values: dict[str, Any]) -> dict[str, Any]:
    """The parsed rejected list as `rejected` (the first) and `more_rejected` (the others)."""
    texts, spans = values["rejected"], values["rejected_segments"]
    spans = [None] * len(texts) if spans is None else spans
    more_spans = tuple(spans[1:]) if values["rejected_segments"] is not None else ()
    chosen = values["chosen_segments"]
    each = isinstance(chosen, tuple)  # one span list per rejected response
    return {
        **values,
        "rejected": texts[0],
        "rejected_segments": spans[0],
        "more_rejected": tuple(texts[1:]),
        "more_rejected_segments": more_spans,
        "chosen_segments": chosen[0] if each else chosen,
        "more_chosen_segments": chosen[1:] if each else (),
    }


def _image_sources(record: dict[str, Any], problems: list[Problem]) -> list[tuple[str, ImageSource]]:
    """The row's well-formed images as (field name, path or bytes); a single `image` is a list of one."""
    many, single = record.get("images"), record.get("image")
    if many is not None and single is not None:
        problems.append(("images", "conflicting_fields", "both 'images' and 'image' are set; give one"))
        return []
    if many is None and single is None:
        problems.append(("images", "missing_field", "is missing: a row needs 'images' (a list) or 'image'"))
        return []
    if single is not None:
        entries = [("image", single)]
    elif not isinstance(many, list):
        problems.append(("images", "wrong_type", f"expected a list of images, got {type(many).__name__}"))
        return []
    elif not many:
        problems.append(
            ("images", "missing_field", "is an empty list: CHiP needs at least one image per row")
        )
        return []
    else:
        entries = [(f"images[{k}]", value) for k, value in enumerate(many)]

    sources: list[tuple[str, ImageSource]] = []
    for field, value in entries:
        if isinstance(value, dict):  # datasets' Image feature / RLHF-V: {"bytes": ..., "path": ...}
            value = value.get("bytes") if value.get("bytes") is not None else value.get("path")
        if isinstance(value, (str, bytes)):
            sources.append((field, value))
        else:
            problems.append(
                (
                    field,
                    "wrong_type",
                    f"expected a path, inline bytes or {{bytes, path}}, got {type(value).__name__}",
                )
            )
    return sources


def _is_rlhfv(record: dict[str, Any]) -> bool:
    return isinstance(record.get("text"), str) and all(
        record.get(name) is None for name in ("prompt", "chosen", "rejected")
    )


def _expand_rlhfv(record: dict[str, Any], problems: list[Problem]) -> dict[str, Any]:
    """Map an RLHF-V record onto the standard fields; a bad `text` is reported once, under its name."""
    try:
        text = json.loads(record["text"])
    except json.JSONDecodeError as err:
        problems.append(("text", "invalid_json", f"is not valid JSON: {err.msg} at column {err.colno}"))
        text = {}
    if not isinstance(text, dict):
        problems.append(("text", "wrong_type", f"expected a JSON object, got {type(text).__name__}"))
        text = {}
    return {
        "id": record.get("id") if record.get("id") is not None else record.get("idx"),
        "image": record.get("image"),
        "images": record.get("images"),
        "prompt": text.get("question"),
        "chosen": text.get("chosen"),
        "rejected": text.get("rejected"),
        "chosen_segments": text.get("chosen_segments"),
        "rejected_segments": text.get("rejected_segments"),
    }


def _expand_implicit_prompt(record: dict[str, Any], problems: list[Problem]) -> dict[str, Any]:
    chosen, rejected = record.get("chosen"), record.get("rejected")
    if not isinstance(rejected, list):
        return record
    if rejected and all(isinstance(item, list) for item in rejected):
        return _expand_implicit_list(record, problems)
    try:
        prompt, chosen, rejected = split_implicit_prompt(chosen, rejected)
    except FieldProblem as problem:
        problems.append(("prompt", problem.kind, problem.reason))
        if len(chosen) < 2 or len(rejected) < 2:
            return record
        # Still check the two responses, without repeating the prompt problem as theirs.
        return {**record, "chosen": chosen[-1:], "rejected": rejected[-1:]}
    return {**record, "prompt": prompt, "chosen": chosen, "rejected": rejected}


def _expand_implicit_list(record: dict[str, Any], problems: list[Problem]) -> dict[str, Any]:
    """Implicit-prompt form with several rejected conversations: each must share chosen's earlier turns."""
    last_turns = []
    for conversation in record["rejected"]:
        try:
            prompt, chosen, rejected = split_implicit_prompt(record["chosen"], conversation)
        except FieldProblem as problem:
            problems.append(("prompt", problem.kind, problem.reason))
            # Still check the responses, without repeating the prompt problem as theirs.
            return {
                **record,
                "chosen": record["chosen"][-1:],
                "rejected": [c[-1:] for c in record["rejected"]],
            }
        last_turns.append(rejected)
    return {**record, "prompt": prompt, "chosen": chosen, "rejected": last_turns}
