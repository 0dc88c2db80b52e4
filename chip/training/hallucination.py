"""Hallucination measured while training: greedy descriptions of held-out images, scored with CHAIR.

Preference training can lower CHAIR by making the model say less, so the curve that matters is
CHAIR_i and CHAIR_s next to recall (the share of true objects the descriptions still name). At
each evaluation `HallucinationProbe.measure` describes up to ``--hallucination_images`` distinct
images of the held-out pairs under ``--hallucination_prompt`` (greedy, the generation code of
`chip eval`) and scores them with the annotators of `chip pairs`: a COCO 2014 annotation folder
(the image's COCO id from its file name) or an objects file (keyed by the image's file name or the
row's id). The trainer logs the result as ``eval_chair_i``, ``eval_chair_s`` and ``eval_recall``
beside ``eval_loss``, so every ``report_to`` integration and ``--metric_for_best_model`` see it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from chip.data import PreferenceExample
from chip.errors import ConfigError
from chip.evaluation.chair import chair_scores
from chip.evaluation.generate import batch_inputs, generate_new_tokens
from chip.modeling import VLMAdapter
from chip.pairs.annotators import TruthAnnotator, coco_annotator, objects_annotator
from chip.pairs.sources import PromptItem
from chip.training.config import ChipConfig

# The three numbers logged per evaluation (with the ``eval_`` prefix), out of `chair_scores`' dict.
LOGGED = ("chair_i", "chair_s", "recall")
BATCH_SIZE = 8  # images described per generate() call
COCO_READING = "official"  # how COCO truth and descriptions are read, as `chip eval --bench chair` reads them


@dataclass
class HallucinationProbe:
    """The held-out images, their truth and how to describe them; `measure` scores a model."""

    adapter: VLMAdapter
    items: list[PromptItem]
    annotator: TruthAnnotator
    max_new_tokens: int

    @classmethod
    def from_config(
        cls, config: ChipConfig, adapter: VLMAdapter, held_out: Sequence[PreferenceExample]
    ) -> HallucinationProbe | None:
        """The probe ``--eval_hallucination`` asks for, or None; a `ConfigError` without held-out pairs."""
        if config.eval_hallucination == "none":
            return None
        if not held_out:
            raise ConfigError(
                "--eval_hallucination describes held-out images: give --eval_dataset or --eval_fraction"
            )
        items = held_out_items(held_out, config.hallucination_prompt, config.hallucination_images)
        truth = Path(config.hallucination_truth)
        if truth.is_dir():
            annotator = coco_annotator(truth, items, COCO_READING)
        else:
            annotator = objects_annotator(truth, items)
        return cls(adapter, items, annotator, config.hallucination_max_new_tokens)

    @torch.no_grad()
    def measure(self, model: nn.Module) -> dict[str, float]:
        """CHAIR_i, CHAIR_s and recall of ``model``'s greedy descriptions of the probe's images."""
        was_training = model.training
        model.eval()
        try:
            answers = {}
            for start in range(0, len(self.items), BATCH_SIZE):
                batch = self.items[start : start + BATCH_SIZE]
                images = [[ref.load() for ref in item.images] for item in batch]
                inputs = batch_inputs(model, self.adapter, [item.prompt for item in batch], images)
                new_tokens = generate_new_tokens(model, self.adapter, inputs, self.max_new_tokens)
                texts = self.adapter.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
                answers.update({item.id: text.strip() for item, text in zip(batch, texts, strict=True)})
        finally:
            model.train(was_training)
        scores = chair_scores(answers, self.annotator.truth, self.annotator.reader)
        return {name: float(scores[name]) for name in LOGGED}


def held_out_items(examples: Sequence[PreferenceExample], prompt: str, limit: int) -> list[PromptItem]:
    """One item per distinct first image of ``examples``, in order, at most ``limit``.

    An item's id is its row's id; its image name is the file's name (none for inline bytes), which
    is what an objects file or a COCO id is looked up by.
    """
    items, seen = [], set()
    for example in examples:
        image = example.images[0]
        if image.key in seen:
            continue
        seen.add(image.key)
        names = (image.path.name,) if image.path is not None else ()
        items.append(PromptItem(id=example.id, prompt=prompt, images=(image,), image_names=names))
        if len(items) == limit:
            break
    return items
