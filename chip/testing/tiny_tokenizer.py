"""Byte-level tokenizers and chat templates of the tiny models (see :mod:`chip.testing.tiny`).

Each family gets its real special tokens (image placeholders, turn markers, EOS/PAD) and a chat
template with its turn layout, so prompt formatting and image-token expansion run as they do on
the real checkpoints; ordinary text is one token per UTF-8 byte.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast


@dataclass(frozen=True)
class TokenSpec:
    """A family's special tokens; ``bos_by_tokenizer``: the tokenizer prepends BOS (Llama style)."""

    eos: str
    pad: str
    image: str
    bos: str | None = None
    extra: tuple[str, ...] = ()
    bos_by_tokenizer: bool = False
    named: tuple[tuple[str, str], ...] = ()  # (attribute, token): e.g. ("boi_token", "<start_of_image>")


def _content(image_text: str) -> str:
    """Jinja for one message's content: a string, or blocks of ``{"type": "image" | "text"}``."""
    return (
        "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
        "{% for block in message['content'] %}{% if block['type'] == 'image' %}" + image_text + "{% elif "
        "block['type'] == 'text' %}{{ block['text'] }}{% endif %}{% endfor %}{% endif %}"
    )


# LLaVA-1.5 / 1.6 (Vicuna) layout: "USER: <image>\nWhat is this? ASSISTANT: It is a cat.</s>"
LLAVA_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] | upper }}: "
    + _content("<image>\n")
    + "{% if message['role'] == 'assistant' %}</s>{% else %} {% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
QWEN_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    + _content("<|vision_start|><|image_pad|><|vision_end|>")
    + "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
IDEFICS3_TEMPLATE = (
    "<|begin_of_text|>{% for message in messages %}{{ message['role'] | capitalize }}:"
    + _content("<image>")
    + "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
)

LLAVA_TOKENS = TokenSpec(eos="</s>", pad="<pad>", image="<image>", bos="<s>", bos_by_tokenizer=True)
QWEN_TOKENS = TokenSpec(
    eos="<|im_end|>",
    pad="<|endoftext|>",
    image="<|image_pad|>",
    extra=("<|im_start|>", "<|vision_start|>", "<|vision_end|>", "<|video_pad|>"),
)
IDEFICS3_TOKENS = TokenSpec(
    eos="<end_of_utterance>",
    pad="<|finetune_right_pad_id|>",
    image="<image>",
    bos="<|begin_of_text|>",
    extra=(
        "<fake_token_around_image>",
        "<global-img>",
        *(f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)),
    ),
)


def byte_level_tokenizer(tokens: TokenSpec) -> PreTrainedTokenizerFast:
    """A byte-level tokenizer (one token per UTF-8 byte, no merges) plus special tokens.

    Built without training, so it is deterministic and instant, and it encodes any text with exact
    character offsets, which segment-span mapping relies on.
    """
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    backend = Tokenizer(models.BPE(vocab={char: i for i, char in enumerate(alphabet)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    specials = [t for t in (tokens.bos, tokens.eos, tokens.pad, tokens.image) if t is not None]
    named = [token for _, token in tokens.named]
    backend.add_special_tokens(list(dict.fromkeys([*specials, *tokens.extra, *named])))
    if tokens.bos_by_tokenizer:
        bos_id = backend.token_to_id(tokens.bos)
        backend.post_processor = processors.TemplateProcessing(
            single=f"{tokens.bos} $A",
            pair=f"{tokens.bos} $A {tokens.bos} $B",
            special_tokens=[(tokens.bos, bos_id)],
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=tokens.bos,
        eos_token=tokens.eos,
        pad_token=tokens.pad,
        extra_special_tokens={"image_token": tokens.image, **dict(tokens.named)},
    )
