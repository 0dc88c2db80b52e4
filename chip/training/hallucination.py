"""Hallucination measured while training: greedy answers at each evaluation, scored with CHAIR or POPE.

Preference training can lower CHAIR by making the model say less, so the curve that matters is
CHAIR_i and CHAIR_s next to recall (the share of true objects the descriptions still name). At
each evaluation `HallucinationProbe.measure` describes up to ``--hallucination_images`` distinct
images of the held-out pairs under `DESCRIBE` (greedy, the generation code of
`chip eval`) and scores them with the annotators of `chip pairs`: a COCO 2014 annotation folder
(the image's COCO id from its file name) or an objects file (keyed by the image's file name or the
row's id). With ``pope`` it answers the first questions of a POPE file instead, scored as `chip
eval --bench pope` scores them. The trainer logs the result beside ``eval_loss`` (``eval_chair_i``,
``eval_chair_s``, ``eval_recall``; ``eval_pope_accuracy``, ``eval_pope_f1``, ``eval_pope_yes_ratio``),
so every ``report_to`` integration and ``--metric_for_best_model`` see it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from chip.data import PreferenceExample
from chip.data.images import ImagePathResolver, ImageProblem, ImageRef
from chip.errors import ConfigError, DataError
from chip.evaluation.chair import chair_scores
from chip.evaluation.generate import batch_inputs, generate_new_tokens
from chip.evaluation.io import read_records
from chip.evaluation.pope import pope_scores
from chip.modeling import VLMAdapter
from chip.pairs.annotators import coco_annotator, objects_annotator
from chip.pairs.sources import PromptItem
from chip.training.config import ChipConfig

# The numbers logged per evaluation (with the ``eval_`` prefix), out of each scorer's dict.
CHAIR_LOGGED = {"chair_i": "chair_i", "chair_s": "chair_s", "recall": "recall"}
POPE_LOGGED = {"pope_accuracy": "accuracy", "pope_f1": "f1", "pope_yes_ratio": "yes_ratio"}
BATCH_SIZE = 8  # images described per generate() call
DESCRIBE = "Please describe this image in detail."  # as `chip eval --bench chair` asks
READING = "official"  # how answers (and COCO truth) are read, as `chip eval` reads them by default

# (id, prompt, image) per generation; the answers by id -> the logged metrics
Prompt = tuple[str, str, ImageRef]
Scorer = Callable[[dict[str, str]], dict[str, float]]


@dataclass
class HallucinationProbe:
    """What to ask at each evaluation and how to score the answers; `measure` runs it on a model."""

    adapter: VLMAdapter
    prompts: list[Prompt]
    score: Scorer
    max_new_tokens: int

    @classmethod
    def from_config(
        cls, config: ChipConfig, adapter: VLMAdapter, held_out: Sequence[PreferenceExample]
    ) -> HallucinationProbe | None:
        """The probe ``--eval_hallucination`` asks for, or None."""
        if config.eval_hallucination == "none":
            return None
        if config.eval_hallucination == "pope":
            prompts, score = pope_questions(config)
        else:
            prompts, score = chair_prompts(config, held_out)
        return cls(adapter, prompts, score, config.hallucination_max_new_tokens)

    @torch.no_grad()
    def measure(self, model: nn.Module) -> dict[str, float]:
        """The logged metrics of ``model``'s greedy answers to the probe's prompts."""
        was_training = model.training
        model.eval()
        try:
            answers = {}
            for start in range(0, len(self.prompts), BATCH_SIZE):
                batch = self.prompts[start : start + BATCH_SIZE]
                images = [[image.load()] for _, _, image in batch]
                inputs = batch_inputs(model, self.adapter, [prompt for _, prompt, _ in batch], images)
                new_tokens = generate_new_tokens(model, self.adapter, inputs, self.max_new_tokens)
                texts = self.adapter.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
                answers.update({key: text.strip() for (key, _, _), text in zip(batch, texts, strict=True)})
        finally:
            model.train(was_training)
        return self.score(answers)


def chair_prompts(config: ChipConfig, held_out: Sequence[PreferenceExample]) -> tuple[list[Prompt], Scorer]:
    """Held-out images described under `DESCRIBE`, scored with CHAIR."""
    if not held_out:
        raise ConfigError(
            "--eval_hallucination chair describes held-out images: give --eval_dataset or --eval_fraction"
        )
    items = held_out_items(held_out, DESCRIBE, config.hallucination_images)
    truth = Path(config.hallucination_truth)
    annotator = coco_annotator(truth, items, READING) if truth.is_dir() else objects_annotator(truth, items)

    def score(answers: dict[str, str]) -> dict[str, float]:
        scores = chair_scores(answers, annotator.truth, annotator.reader)
        return {name: float(scores[key]) for name, key in CHAIR_LOGGED.items()}

    return [(item.id, item.prompt, item.images[0]) for item in items], score


def pope_questions(config: ChipConfig) -> tuple[list[Prompt], Scorer]:
    """The first ``--hallucination_images`` questions of a POPE file, scored as `chip eval --bench pope`."""
    path = Path(config.hallucination_truth)
    rows = read_records(path, required=["question_id", "image", "text", "label"])[
        : config.hallucination_images
    ]
    resolve = ImagePathResolver(path.parent, config.allow_outside_root)
    prompts, labels = [], {}
    for row in rows:
        key = str(row["question_id"])
        try:
            image = ImageRef(path=resolve(str(row["image"])))
        except ImageProblem as problem:
            raise DataError(f"{path}: question {key!r}: field 'image': {problem.reason}") from None
        prompts.append((key, str(row["text"]), image))
        labels[key] = row["label"]

    def score(answers: dict[str, str]) -> dict[str, float]:
        scores = pope_scores(answers, labels, reading=READING)
        return {name: float(scores[key]) for name, key in POPE_LOGGED.items()}

    return prompts, score


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
