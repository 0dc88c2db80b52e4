"""Chat messages (the TRL convention) normalised to one shape.

Rows may give `prompt`, `chosen` and `rejected` as chat messages, with `content` either a string
or a list of parts. Parquet and `datasets` store parts as structs with every key of the column's
union type (`{"type": "image", "text": None}`), so the normalised form keeps only what matters:

    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe it."}]}

Image parts are placeholders saying where an image goes; the images themselves always come from
the row's `images` / `image` column.
"""

from __future__ import annotations

from typing import Any

ROLES = ("system", "user", "assistant")
Message = dict[str, Any]
# LLaVA `conversations`: speaker names as roles, and the placeholder of an image in a turn's text.
SPEAKERS = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
IMAGE_TOKEN = "<image>"


class FieldProblem(Exception):
    """Why one field's value is unusable; `kind` is the report's short code."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


def check_text(text: str) -> str:
    """Return `text` if it can be encoded as UTF-8 (JSON escapes can smuggle in lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        bad = text[err.start]
        raise FieldProblem(
            "invalid_text",
            f"contains a lone surrogate {bad!r} at character {err.start}, which is not valid Unicode",
        ) from None
    return text


def normalise_messages(value: list[Any]) -> list[Message]:
    """Validate a list of chat messages and return it in the normalised shape above."""
    if not value:
        raise FieldProblem("empty_text", "is an empty list of messages")
    messages = []
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise FieldProblem("wrong_type", f"message {i} is {type(message).__name__}, expected an object")
        role = message.get("role")
        if role not in ROLES:
            raise FieldProblem("bad_message", f"message {i} has role {role!r}, expected one of {list(ROLES)}")
        messages.append({"role": role, "content": _normalise_content(message.get("content"), i)})
    return messages


def _normalise_content(content: Any, i: int) -> list[dict[str, str]]:
    if isinstance(content, str):
        return [{"type": "text", "text": check_text(content)}]
    if not isinstance(content, list):
        raise FieldProblem(
            "bad_message",
            f"message {i} content is {type(content).__name__}, expected a string or a list of parts",
        )
    parts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "image":
            parts.append({"type": "image"})
        elif kind == "text" and isinstance(part.get("text"), str):
            parts.append({"type": "text", "text": check_text(part["text"])})
        else:
            raise FieldProblem(
                "bad_message",
                f"message {i} part {j} is {part!r}, expected {{'type': 'text', 'text': str}} or {{'type': 'image'}}",
            )
    return parts


def message_text(message: Message) -> str:
    """The concatenated text parts of one normalised message."""
    return "".join(part["text"] for part in message["content"] if part["type"] == "text")


def count_image_parts(messages: list[Message]) -> int:
    return sum(part["type"] == "image" for message in messages for part in message["content"])


def response_text(messages: list[Message]) -> str:
    """The assistant text of a response given as messages: exactly one assistant message, no images."""
    if len(messages) != 1 or messages[0]["role"] != "assistant":
        roles = [message["role"] for message in messages]
        raise FieldProblem(
            "bad_message",
            f"a response given as messages must be one assistant message, got roles {roles} "
            "(put earlier turns in prompt)",
        )
    if count_image_parts(messages):
        raise FieldProblem("bad_message", "a response must not contain image parts")
    return message_text(messages[0])


def split_implicit_prompt(
    chosen: list[Any], rejected: list[Any]
) -> tuple[list[Message], list[Any], list[Any]]:
    """TRL's implicit-prompt form: two whole conversations that share every turn but the last.

    Returns (prompt messages, [last chosen message], [last rejected message]); raises
    `FieldProblem` if the conversations do not share their earlier turns.
    """
    if len(chosen) < 2 or len(rejected) < 2:
        raise FieldProblem("missing_field", "is missing (required)")
    prompt = normalise_messages(chosen[:-1])
    if normalise_messages(rejected[:-1]) != prompt:
        raise FieldProblem(
            "missing_field",
            "is missing, and chosen and rejected differ before their last turn, so no shared prompt "
            "can be taken from them",
        )
    return prompt, chosen[-1:], rejected[-1:]


def conversation_fields(value: Any) -> dict[str, Any] | None:
    """LLaVA `conversations` -> {"prompt": messages} (+ chosen/rejected from `preference_values`).

    The prompt is every turn up to the last human one; `<image>` tokens become image parts; the
    messages are then checked like any chat prompt. None when `value` is not a list of turns.
    """
    if not isinstance(value, list) or not value or not all(isinstance(turn, dict) for turn in value):
        return None
    messages = []
    for turn in value:
        speaker = turn.get("from", turn.get("role"))
        text = turn.get("value", turn.get("content"))
        if not isinstance(text, str):
            messages.append({"role": SPEAKERS.get(speaker, speaker), "content": text})
            continue
        parts: list[dict[str, str]] = [{"type": "image"}] * text.count(IMAGE_TOKEN)
        stripped = text.replace(IMAGE_TOKEN, "").strip()
        if stripped or not parts:
            parts.append({"type": "text", "text": stripped})
        messages.append({"role": SPEAKERS.get(speaker, speaker), "content": parts})
    last_user = max((k for k, m in enumerate(messages) if m["role"] == "user"), default=len(messages) - 1)
    fields: dict[str, Any] = {"prompt": messages[: last_user + 1]}
    answer = value[last_user + 1] if last_user + 1 < len(value) else {}
    pair = answer.get("preference_values")
    if isinstance(pair, list) and len(pair) == 2:
        fields["chosen"], fields["rejected"] = pair
    return fields
