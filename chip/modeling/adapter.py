"""Turning (images, prompt, response) into model inputs, the same way for every model family.

A preference example is scored three times (chosen, rejected, chosen under the corrupted image),
always with the same prompt. So the prompt is encoded once, with its image tokens already expanded
by the processor (:meth:`VLMAdapter.encode_prompt`), responses are tokenized on their own the way
TRL does (:meth:`VLMAdapter.encode_response`), and :meth:`VLMAdapter.collate` joins them into a
right-padded batch with a ``response_mask`` that :func:`chip.modeling.response_logps` reads.

    adapter = VLMAdapter.from_pretrained(path)
    prompt = adapter.encode_prompt([image], "Describe the image.")
    batch = adapter.collate([(prompt, adapter.encode_response("A cat.")), ...], max_length=2048)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from transformers import AutoConfig, PretrainedConfig, ProcessorMixin

from chip.errors import DataError
from chip.modeling.pairs import PAIR_LENGTHS
from chip.modeling.processors import hub_kwargs, load_processor
from chip.modeling.quirks import quirks_for


def special_text_reason(tokens: list[str]) -> str:
    """The bad-row reason for a prompt that holds special-token text."""
    return f"holds the literal text of the model's special token(s) {tokens}"


@dataclass
class PromptInputs:
    """One example's prompt, encoded once and reused for every response scored against it.

    ``image_inputs`` holds the processor's other outputs exactly as it returns them for this one
    example (``pixel_values``, ``image_sizes``, ``image_grid_thw``, ``pixel_attention_mask``, ...).
    ``token_inputs`` holds the outputs that have one value per prompt token (Qwen-VL's
    ``mm_token_type_ids``, Mllama's ``cross_attention_mask``), which collation must pad along the
    sequence like ``input_ids``; the family's quirks say which (``token_keys``).
    """

    input_ids: torch.Tensor  # (P,) long, image tokens already expanded
    image_inputs: dict[str, torch.Tensor]
    token_inputs: dict[str, torch.Tensor] = field(default_factory=dict)  # each (P, ...)

    def __len__(self) -> int:
        return int(self.input_ids.numel())


def _concat_padded(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Concatenate per-example image tensors along dim 0, zero-padding every other dim to the max.

    For every family chip supports, dim 0 of a per-example image output counts that example's
    images or patches (LLaVA ``(n, 3, H, W)``, Qwen-VL's flat ``(patches, C·t·p·p)`` and
    ``image_grid_thw (n, 3)``) or is the example itself (Idefics3 ``(1, n, 3, H, W)``), so the
    processor's own batching is this concatenation. The trailing dims only differ in the number of
    tiles (LLaVA-NeXT patches, Idefics3 sub-images), and those models treat all-zero tiles as
    padding, exactly as their processors pad them.
    """
    shape = [max(t.shape[d] for t in tensors) for d in range(tensors[0].dim())]
    padded = []
    for t in tensors:
        pad: list[int] = []
        for d in reversed(range(1, t.dim())):
            pad += [0, shape[d] - t.shape[d]]
        padded.append(F.pad(t, pad) if any(pad) else t)
    return torch.cat(padded, dim=0)


class VLMAdapter:
    """Prompt formatting, encoding and batching for one vision-language model family."""

    def __init__(self, processor: ProcessorMixin, model_config: PretrainedConfig):
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.config = model_config
        self.quirks = quirks_for(model_config)
        self._expansion_cache: dict[tuple[tuple[int, int], ...], int] = {}
        if self.tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no eos token; responses must end with one, as TRL's do")
        self.eos_token_id: int = self.tokenizer.eos_token_id
        pad = self.tokenizer.pad_token_id
        self.pad_token_id: int = pad if pad is not None else self.eos_token_id
        # Chat templates of Llama-style models often leave the BOS to the tokenizer, while TRL
        # encodes the templated prompt with add_special_tokens=False; add it back where the
        # tokenizer would have, so the model sees what it was trained on.
        bos = self.tokenizer.bos_token_id
        self._bos_text = (
            self.tokenizer.bos_token
            if bos is not None and self.tokenizer("a")["input_ids"][:1] == [bos]
            else None
        )

    @classmethod
    def from_pretrained(cls, path: str | Path, **kwargs: Any) -> VLMAdapter:
        """Load the processor and config saved at ``path`` (no weights); ``kwargs`` go to the processor."""
        return cls(load_processor(path, **kwargs), AutoConfig.from_pretrained(path, **hub_kwargs(kwargs)))

    @property
    def pixel_key(self) -> str:
        """Name of the normalised pixel tensor, where corruption noise is applied.

        Corrupt ``PromptInputs.image_inputs[pixel_key]`` of one example, before :meth:`collate`:
        a collated batch may hold all-zero padding tiles that the model recognises as padding only
        while they stay zero.
        """
        return self.quirks.pixel_key

    @property
    def image_token_id(self) -> int:
        """Id of the token the processor repeats once per image feature."""
        token_id = getattr(self.processor, "image_token_id", None)
        return (
            token_id
            if token_id is not None
            else self.tokenizer.convert_tokens_to_ids(self.processor.image_token)
        )

    def format_prompt(self, prompt: str | list[dict], num_images: int) -> str:
        """The chat-templated prompt text with one image placeholder per image, ready for generation.

        A string becomes one user turn: the images first, then the text (LLaVA's training layout).
        A list is TRL-style chat messages; when they hold no image blocks, ``num_images`` are put at
        the start of the first user turn, as TRL's ``prepare_multimodal_messages`` does.
        """
        if isinstance(prompt, str):
            images = [{"type": "image"} for _ in range(num_images)]
            messages = [{"role": "user", "content": [*images, {"type": "text", "text": prompt}]}]
        else:
            messages = _with_image_blocks(prompt, num_images)
        text = self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        if self._bos_text is not None and not text.startswith(self._bos_text):
            text = self._bos_text + text
        return text

    def encode_prompt(self, images: Sequence[Image.Image], prompt: str | list[dict]) -> PromptInputs:
        """Template and process one example's prompt with its images (image tokens expanded).

        Prompt text holding a special token's literal text (``<image>`` in scraped data) is refused
        with `DataError`: the processor would read it as a real image placeholder or control token.
        """
        found = self.special_tokens_in(prompt)
        if found:
            raise DataError(f"field 'prompt': {special_text_reason(found)}")
        text = self.format_prompt(prompt, len(images))
        encoded = self.processor(
            images=list(images) or None, text=[text], add_special_tokens=False, return_tensors="pt"
        )
        input_ids = encoded.pop("input_ids")[0]  # (P,)
        for unused in ("attention_mask", "labels"):  # PaliGemma's processor adds all-ignored labels
            encoded.pop(unused, None)
        token_inputs = {
            key.name: encoded.pop(key.name)[0] for key in self.quirks.token_keys if key.name in encoded
        }  # each (P, ...)
        image_inputs = {key: value for key, value in encoded.items() if isinstance(value, torch.Tensor)}
        return PromptInputs(input_ids=input_ids.long(), image_inputs=image_inputs, token_inputs=token_inputs)

    def prompt_length(self, image_sizes: Sequence[tuple[int, int]], prompt: str | list[dict]) -> int:
        """Tokens :meth:`encode_prompt` would give for images of these ``(width, height)``, without pixels.

        The processor expands each image placeholder into a number of tokens that depends only on
        the image sizes, so that number is measured once per distinct size tuple (on blank images)
        and added to the length of the templated text; start-up length checks then need no image
        decoding and no preprocessing per example.
        """
        text_ids = self.tokenizer(self.format_prompt(prompt, len(image_sizes)), add_special_tokens=False)[
            "input_ids"
        ]
        return len(text_ids) + self._image_expansion(tuple(image_sizes))

    def _image_expansion(self, image_sizes: tuple[tuple[int, int], ...]) -> int:
        """Tokens the processor adds when it expands the placeholders of images of these sizes."""
        if image_sizes not in self._expansion_cache:
            blank = [Image.new("RGB", size) for size in image_sizes]
            text = self.format_prompt("", len(blank))
            expanded = self.processor(images=blank or None, text=[text], add_special_tokens=False)[
                "input_ids"
            ][0]
            unexpanded = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            self._expansion_cache[image_sizes] = len(expanded) - len(unexpanded)
        return self._expansion_cache[image_sizes]

    def special_tokens_in(self, prompt: str | list[dict]) -> list[str]:
        """Special tokens whose literal text appears in the prompt's text (the processor would parse them)."""
        texts = (
            [prompt]
            if isinstance(prompt, str)
            else [
                part if isinstance(part, str) else part.get("text") or ""
                for message in prompt
                for part in (
                    [message["content"]] if isinstance(message["content"], str) else message["content"]
                )
            ]
        )
        specials = [t for t in self.tokenizer.all_special_tokens if t] + list(
            getattr(self.tokenizer, "extra_special_tokens", []) or []
        )
        image_token = getattr(self.processor, "image_token", None)
        specials += [image_token] if isinstance(image_token, str) else []
        return sorted(
            {token for token in specials if isinstance(token, str) and any(token in text for text in texts)}
        )

    def _encode_text(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        # split_special_tokens: a response's "<image>" or "</s>" is text to learn, not a control token
        encoded = self.tokenizer(
            text, add_special_tokens=False, return_offsets_mapping=True, split_special_tokens=True
        )
        offsets = [tuple(span) for span in encoded["offset_mapping"]]
        return [*encoded["input_ids"], self.eos_token_id], [*offsets, (len(text), len(text))]

    def encode_response(self, text: str) -> list[int]:
        """Response token ids: the text alone (no special tokens) plus EOS, as TRL tokenizes completions."""
        return self._encode_text(text)[0]

    def response_offsets(self, text: str) -> list[tuple[int, int]]:
        """Character ``(start, end)`` of each token of :meth:`encode_response`; EOS gets ``(len, len)``."""
        return self._encode_text(text)[1]

    def collate(
        self, rows: Sequence[tuple[PromptInputs, Sequence[int]]], max_length: int | None = None
    ) -> dict[str, torch.Tensor]:
        """Join (prompt, response ids) rows into one right-padded batch of model inputs.

        Returns ``input_ids`` and ``attention_mask`` ``(B, T)``, the per-token processor outputs
        padded with 0 (response tokens count as text), the image inputs batched as the processor
        batches them, and ``response_mask`` ``(B, T)`` bool marking response tokens. A row longer
        than ``max_length`` loses response tokens from its end; prompt and image tokens are never
        cut, since the model cannot run with fewer image tokens than image features. A prompt that
        leaves no room for a single response token raises :class:`~chip.errors.DataError`.
        """
        batch, lengths = self._lay_out(self._truncate([(p, [r]) for p, r in rows], max_length))
        positions = torch.arange(batch["input_ids"].shape[1])[None, :]  # (1, T)
        prompt_end, row_end = lengths[:, :1], lengths.sum(-1, keepdim=True)  # (B, 1) each
        batch["attention_mask"] = (positions < row_end).long()  # (B, T)
        batch["response_mask"] = (positions >= prompt_end) & (positions < row_end)  # (B, T)
        return batch

    def collate_pairs(
        self,
        rows: Sequence[tuple[PromptInputs, Sequence[int], Sequence[int]]],
        max_length: int | None = None,
    ) -> dict[str, torch.Tensor]:
        """Batch (prompt, chosen ids, rejected ids) examples with each prompt held once.

        Row b is ``[prompt, chosen, rejected, padding]``, so the image and prompt tokens that both
        responses are scored against appear (and are encoded) once per example; the images are
        batched as in :meth:`collate`. ``pair_lengths`` ``(B, 3)`` holds the prompt, kept chosen
        and kept rejected lengths. There is no ``attention_mask`` on purpose: the rejected tokens
        must not attend to the chosen ones, which a 2D mask cannot say, so the batch only goes to a
        model through :func:`chip.modeling.response_logps` (see :mod:`chip.modeling.pairs`).
        ``max_length`` applies to each (prompt, response) as in :meth:`collate`.
        """
        batch, lengths = self._lay_out(self._truncate([(p, [c, r]) for p, c, r in rows], max_length))
        batch[PAIR_LENGTHS] = lengths  # (B, 3)
        return batch

    @staticmethod
    def _truncate(
        rows: Sequence[tuple[PromptInputs, list[Sequence[int]]]], max_length: int | None
    ) -> list[tuple[PromptInputs, list[list[int]]]]:
        if not rows:
            raise ValueError("collate needs at least one row")
        kept = []
        for index, (prompt, responses) in enumerate(rows):
            if max_length is not None and len(prompt) >= max_length:
                raise DataError(
                    f"row {index}: the prompt alone is {len(prompt)} tokens (image tokens included), "
                    f"which leaves no room for the response within max_length={max_length}; "
                    "raise max_length, shorten the prompt or use fewer/smaller images"
                )
            room = None if max_length is None else max_length - len(prompt)
            kept.append((prompt, [list(response)[:room] for response in responses]))
        return kept

    def _lay_out(
        self, kept: list[tuple[PromptInputs, list[list[int]]]]
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Rows ``[prompt, *responses, padding]``: (ids, per-token and image inputs; lengths ``(B, 1 + n)``)."""
        batch_size = len(kept)
        lengths = torch.tensor([[len(p), *map(len, responses)] for p, responses in kept])  # (B, 1 + n)
        seq_len = int(lengths.sum(-1).max())
        input_ids = torch.full((batch_size, seq_len), self.pad_token_id, dtype=torch.long)  # (B, T)
        token_keys = [key for key in self.quirks.token_keys if key.name in kept[0][0].token_inputs]
        token_inputs = {}
        for key in token_keys:
            first = kept[0][0].token_inputs[key.name]  # (P, ...)
            trailing = [
                max(p.token_inputs[key.name].shape[d] for p, _ in kept) for d in range(1, first.dim())
            ]
            token_inputs[key.name] = torch.zeros(
                batch_size, seq_len, *trailing, dtype=first.dtype
            )  # (B, T, ...)
        for row, (prompt, responses) in enumerate(kept):
            ids = torch.cat([prompt.input_ids, *(torch.tensor(r, dtype=torch.long) for r in responses)])
            input_ids[row, : len(ids)] = ids
            for key in token_keys:
                value = prompt.token_inputs[key.name]  # (P, ...)
                target = token_inputs[key.name][row]  # (T, ...)
                target[(slice(0, len(prompt)), *map(slice, value.shape[1:]))] = value
                response = slice(len(prompt), len(ids))
                if key.response is None:  # continue the prompt's last value
                    target[(response, *map(slice, value.shape[1:]))] = value[-1]
                else:
                    target[response] = key.response

        batch: dict[str, torch.Tensor] = {"input_ids": input_ids, **token_inputs}
        image_keys = {frozenset(prompt.image_inputs) for prompt, _ in kept}
        if len(image_keys) > 1:
            raise DataError("a batch mixes rows with and without images (or with different image inputs)")
        for key in sorted(next(iter(image_keys))):
            batch[key] = _concat_padded([prompt.image_inputs[key] for prompt, _ in kept])
        return batch, lengths


def _with_image_blocks(messages: list[dict], num_images: int) -> list[dict]:
    """Copy TRL-style messages with structured content, holding exactly ``num_images`` image blocks."""
    structured = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        structured.append({**message, "content": list(content or [])})
    present = sum(block.get("type") == "image" for message in structured for block in message["content"])
    if present == 0 and num_images > 0:
        first_user = next((m for m in structured if m["role"] == "user"), None)
        if first_user is None:
            raise DataError("prompt messages have no user turn to attach the images to")
        first_user["content"] = [*({"type": "image"} for _ in range(num_images)), *first_user["content"]]
    elif present != num_images:
        raise DataError(
            f"prompt messages hold {present} image blocks but the example has {num_images} images"
        )
    return structured
