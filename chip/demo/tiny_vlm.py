"""A tiny but real LLaVA: word-level tokenizer, processor with a chat template, CLIP + Llama model.

Everything is a stock ``transformers`` class, so a saved model loads with
``AutoModelForImageTextToText`` / ``AutoProcessor`` and goes through the same code paths
(chat template, image-token expansion, ``generate``) as a downloaded LLaVA; only the sizes differ.
The vocabulary is the world's word list plus the chat words, one token per word, so captions
decode back to exactly the text they were encoded from.

Traps of transformers 5 handled here (see docs/demo-world.md): ``vision_feature_layer`` must be
-1 on a shallow tower (its default -2 drops the last layer); CLIP prepends a CLS feature, which
the "default" strategy drops, so the processor needs ``num_additional_image_tokens=1`` to emit
exactly (image_size / patch_size)² image tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from tokenizers import Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordLevel
from transformers import (
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)

from chip.demo.world import WORDS

PAD, UNK, BOS, EOS, IMAGE = "<pad>", "<unk>", "<s>", "</s>", "<image>"
CHAT_WORDS = ("user", "assistant", ":")

# LLaVA-1.5's conversation format; content may be a string or a list of {"type": ...} parts
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ 'ASSISTANT: ' if message['role'] == 'assistant' else 'USER: ' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{ '<image> ' }}"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{ ' </s> ' if message['role'] == 'assistant' else ' ' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ 'ASSISTANT:' }}{%- endif -%}"
)

IMAGE_MEAN = (0.5, 0.5, 0.5)  # pixel normalisation of the processor; simple, so it is easy to mirror
IMAGE_STD = (0.5, 0.5, 0.5)


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level tokenizer: lower-cases, splits on spaces and punctuation, one id per word."""
    vocab = {tok: i for i, tok in enumerate((PAD, UNK, BOS, EOS, IMAGE, *CHAT_WORDS, *WORDS))}
    backend = Tokenizer(WordLevel(vocab, unk_token=UNK))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        unk_token=UNK,
        bos_token=BOS,
        eos_token=EOS,
        extra_special_tokens={"image_token": IMAGE},
        padding_side="left",  # batched generation appends on the right
        model_max_length=128,
    )
    return tokenizer


def build_processor(image_size: int, patch_size: int) -> LlavaProcessor:
    """A ``LlavaProcessor``: CLIP image processor (no resize or crop), tokenizer, chat template.

    The PIL backend is chosen explicitly: it needs no torchvision and gives the same pixels on
    every machine (the torchvision backend is picked automatically where installed).
    """
    image_processor = CLIPImageProcessorPil(
        do_resize=False,
        do_center_crop=False,
        do_convert_rgb=True,
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        image_mean=list(IMAGE_MEAN),
        image_std=list(IMAGE_STD),
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=build_tokenizer(),
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        chat_template=CHAT_TEMPLATE,
        num_additional_image_tokens=1,  # CLIP's CLS feature, dropped by the "default" strategy
    )


def build_model(
    processor: LlavaProcessor,
    image_size: int,
    patch_size: int,
    vision_hidden: int,
    vision_layers: int,
    text_hidden: int,
    text_layers: int,
    heads: int,
) -> LlavaForConditionalGeneration:
    """A randomly initialised LLaVA with a CLIP vision tower and a Llama language model."""
    tokenizer = processor.tokenizer
    vision = CLIPVisionConfig(
        hidden_size=vision_hidden,
        intermediate_size=4 * vision_hidden,
        num_hidden_layers=vision_layers,
        num_attention_heads=heads,
        image_size=image_size,
        patch_size=patch_size,
        projection_dim=vision_hidden,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=text_hidden,
        intermediate_size=2 * text_hidden,
        num_hidden_layers=text_layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,  # a 40-word vocabulary needs no separate output matrix
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=processor.image_token_id,
        image_seq_length=(image_size // patch_size) ** 2,
        vision_feature_layer=-1,  # the default -2 would skip the last layer of a 2-3 layer tower
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
    )
    model = LlavaForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model


def prompt_text(processor: LlavaProcessor, question: str) -> str:
    """The chat-formatted prompt for one image and one question, ending where the answer starts."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True)


def pixel_values(images: Sequence[Image.Image]) -> torch.Tensor:
    """The processor's normalisation done directly in numpy: ``(B, 3, H, W)`` floats.

    Training draws a fresh batch every step; this skips the processor's per-image Python work.
    ``tests/demo`` checks it matches ``processor.image_processor`` exactly.
    """
    array = np.stack([np.asarray(img.convert("RGB"), dtype=np.float32) for img in images])  # (B, H, W, 3)
    array = (array / 255.0 - np.float32(IMAGE_MEAN)) / np.float32(IMAGE_STD)
    return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()  # (B, 3, H, W)


class PromptEncoder:
    """Token ids of chat prompts (image tokens expanded) plus answers, for supervised training.

    Prompts repeat (one caption prompt, one question per class), so each is run through the
    processor once and cached; answers are appended as plain word ids followed by ``</s>``.
    """

    def __init__(self, processor: LlavaProcessor, image_size: int) -> None:
        self.processor = processor
        self._blank = Image.new("RGB", (image_size, image_size))
        self._cache: dict[str, list[int]] = {}

    def prompt_ids(self, question: str) -> list[int]:
        if question not in self._cache:
            encoded = self.processor(images=self._blank, text=prompt_text(self.processor, question))
            self._cache[question] = list(encoded["input_ids"][0])
        return self._cache[question]

    def batch(
        self, images: Sequence[Image.Image], questions: Sequence[str], answers: Sequence[str]
    ) -> dict[str, Any]:
        """Right-padded ``input_ids``, ``attention_mask``, ``labels`` (-100 off the answer), pixels."""
        tokenizer = self.processor.tokenizer
        rows, label_rows = [], []
        for question, answer in zip(questions, answers):
            prompt = self.prompt_ids(question)
            answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            rows.append(prompt + answer_ids)
            label_rows.append([-100] * len(prompt) + answer_ids)
        length = max(map(len, rows))
        input_ids = torch.full((len(rows), length), tokenizer.pad_token_id)  # (B, T)
        labels = torch.full((len(rows), length), -100)  # (B, T)
        attention_mask = torch.zeros((len(rows), length), dtype=torch.long)  # (B, T)
        for i, (row, label_row) in enumerate(zip(rows, label_rows)):
            input_ids[i, : len(row)] = torch.tensor(row)
            labels[i, : len(row)] = torch.tensor(label_row)
            attention_mask[i, : len(row)] = 1
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels,
            "pixel_values": pixel_values(images),
        }
