"""Captioning held-out scenes and scoring them with the CHAIR machinery of ``chip.evaluation``.

Generation and scoring are separate: ``sample_answers`` turns (image, question) pairs into
text; ``caption_metrics`` is a pure function of scenes and captions. Two decodings matter here:
greedy (``temperature=0``) shows what the model says most often, sampling at T = 1 with several
samples per scene shows its whole distribution. A model that learnt "star -> with a moon" 40% of
the time hallucinates under sampling but may never under greedy decoding, so both are reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image
from tqdm.auto import tqdm
from transformers import LlavaForConditionalGeneration, LlavaProcessor

from chip.demo.tiny_vlm import prompt_text
from chip.demo.world import (
    CAPTION_PROMPT,
    PARTNER,
    WORLD_VOCABULARY,
    AttributeQuestion,
    Scene,
    question_prompt,
)
from chip.evaluation.chair import chair_scores, extract_mentions
from chip.evaluation.pope import pope_scores


@torch.no_grad()
def sample_answers(
    model: LlavaForConditionalGeneration,
    processor: LlavaProcessor,
    images: Sequence[Image.Image],
    questions: Sequence[str],
    temperature: float = 0.0,
    samples: int = 1,
    max_new_tokens: int = 24,
    batch_size: int = 100,
    seed: int = 0,
    desc: str | None = None,
) -> list[list[str]]:
    """``samples`` answers per (image, question); ``temperature`` 0 means greedy (then 1 sample).

    ``desc`` labels a progress bar over the batches (none without it).

    Sampling uses the full distribution (no top-k / top-p), seeded, so numbers are reproducible.
    """
    if temperature <= 0 and samples != 1:
        raise ValueError("greedy decoding gives one answer per prompt; use samples=1")
    model.eval()
    device = next(model.parameters()).device
    tokenizer = processor.tokenizer
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    answers: list[list[str]] = []
    try:
        for start in tqdm(
            range(0, len(images), batch_size), desc=desc, disable=desc is None, dynamic_ncols=True
        ):
            batch_images = list(images[start : start + batch_size])
            texts = [prompt_text(processor, q) for q in questions[start : start + batch_size]]
            inputs = processor(images=batch_images, text=texts, padding=True, return_tensors="pt").to(device)
            sampling = (
                {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}
                if temperature > 0
                else {"do_sample": False}
            )
            output = model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                num_return_sequences=samples,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
                **sampling,
            )  # (B * samples, T_prompt + T_new)
            texts_out = tokenizer.batch_decode(
                output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True
            )
            answers.extend(texts_out[i : i + samples] for i in range(0, len(texts_out), samples))
    finally:
        torch.random.set_rng_state(generator_state)
    return answers


def caption_scenes(
    model: LlavaForConditionalGeneration,
    processor: LlavaProcessor,
    scenes: Sequence[Scene],
    temperature: float = 0.0,
    samples: int = 1,
    seed: int = 0,
    desc: str | None = None,
) -> list[list[str]]:
    """Captions of each scene for the world's caption prompt."""
    return sample_answers(
        model,
        processor,
        [s.image for s in scenes],
        [CAPTION_PROMPT] * len(scenes),
        temperature,
        samples,
        seed=seed,
        desc=desc,
    )


def caption_metrics(scenes: Sequence[Scene], captions: Sequence[Sequence[str]]) -> dict[str, float]:
    """CHAIR_i, CHAIR_s and recall over every caption of every scene, plus three diagnostics.

    ``partner_share`` is the fraction of hallucinated mentions that name the absent usual partner
    of a class in the image (the language prior at work); ``partner_rate`` how often an absent
    usual partner is named, per (caption, absent partner); ``exact`` the fraction of captions
    whose set of mentioned classes equals the scene's classes.
    """
    answers: dict[str, str] = {}
    truth: dict[str, set[str]] = {}
    hallucinated = partner = exact = absent_partners = absent_partners_named = 0
    for i, (scene, scene_captions) in enumerate(zip(scenes, captions)):
        classes = set(scene.classes)
        partners = {PARTNER[c] for c in classes if c in PARTNER} - classes  # absent usual partners
        for k, caption in enumerate(scene_captions):
            answers[f"{i}/{k}"] = caption
            truth[f"{i}/{k}"] = classes
            mentions = extract_mentions(caption, WORLD_VOCABULARY)
            wrong = [m for m in mentions if m not in classes]
            hallucinated += len(wrong)
            partner += sum(m in partners for m in wrong)
            exact += set(mentions) == classes
            absent_partners += len(partners)
            absent_partners_named += len(partners & set(mentions))
    scores = dict(chair_scores(answers, truth, WORLD_VOCABULARY))
    scores["partner_share"] = partner / hallucinated if hallucinated else 0.0
    scores["partner_rate"] = absent_partners_named / absent_partners if absent_partners else 0.0
    scores["exact"] = exact / len(answers) if answers else 0.0
    scores["captions"] = len(answers)
    return scores


def scene_counts(scenes: Sequence[Scene], captions: Sequence[Sequence[str]]) -> list[tuple[int, int]]:
    """Per scene, (hallucinated mentions, all mentions) summed over its captions.

    CHAIR_i of any subset of scenes is ``sum(hallucinated) / sum(mentions)`` over it, so these two
    counts per scene are all the paired bootstrap (``chip.demo.stats``) needs.
    """
    counts = []
    for scene, scene_captions in zip(scenes, captions):
        wrong = total = 0
        for caption in scene_captions:
            mentions = extract_mentions(caption, WORLD_VOCABULARY)
            total += len(mentions)
            wrong += sum(m not in scene.classes for m in mentions)
        counts.append((wrong, total))
    return counts


def recall_counts(scenes: Sequence[Scene], captions: Sequence[Sequence[str]]) -> list[tuple[int, int]]:
    """Per scene, (scene classes named, scene classes) summed over its captions.

    The pooled ratio over any subset of scenes is CHAIR's recall (distinct correct classes per
    caption over ground-truth classes per caption), so it can be bootstrapped like CHAIR_i.
    """
    counts = []
    for scene, scene_captions in zip(scenes, captions):
        named = sum(len(set(extract_mentions(c, WORLD_VOCABULARY)) & scene.classes) for c in scene_captions)
        counts.append((named, len(scene.classes) * len(scene_captions)))
    return counts


def answer_attributes(
    model: LlavaForConditionalGeneration,
    processor: LlavaProcessor,
    scenes: Sequence[Scene],
    desc: str | None = None,
) -> list[list[str]]:
    """Greedy answers to every attribute question of every scene (``Scene.attributes`` order)."""
    items = [(scene, q) for scene in scenes for q in scene.attributes]
    flat = sample_answers(
        model,
        processor,
        [s.image for s, _ in items],
        [q.text for _, q in items],
        max_new_tokens=3,  # "top left ." is the longest answer
        batch_size=500,
        desc=desc,
    )
    answers, start = [], 0
    for scene in scenes:
        answers.append([a[0] for a in flat[start : start + len(scene.attributes)]])
        start += len(scene.attributes)
    return answers


def attribute_correct(question: AttributeQuestion, answer: str) -> bool:
    """Exact match of the answer's words, the closing " ." removed, with the right answer."""
    return answer.strip().removesuffix(".").strip() == question.answer


def attribute_metrics(scenes: Sequence[Scene], answers: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Accuracy on the attribute questions, overall and per kind, and the per-scene counts.

    ``counts`` holds per scene (right answers, questions): the pooled ratio over any subset of
    scenes is the accuracy there, which is what the paired bootstrap resamples.
    """
    right: dict[str, int] = {}
    asked: dict[str, int] = {}
    counts = []
    for scene, scene_answers in zip(scenes, answers):
        correct = 0
        for question, given in zip(scene.attributes, scene_answers):
            ok = attribute_correct(question, given)
            correct += ok
            right[question.kind] = right.get(question.kind, 0) + ok
            asked[question.kind] = asked.get(question.kind, 0) + 1
        counts.append((correct, len(scene.attributes)))
    total = sum(asked.values())
    return {
        "accuracy": sum(right.values()) / total if total else 0.0,
        "questions": total,
        **{kind: right[kind] / asked[kind] for kind in sorted(asked)},
        "counts": counts,
    }


def answer_questions(
    model: LlavaForConditionalGeneration,
    processor: LlavaProcessor,
    scenes: Sequence[Scene],
    desc: str | None = None,
) -> list[list[str]]:
    """Greedy answers to every question of every scene (``Scene.questions`` order)."""
    items = [(scene, q) for scene in scenes for q in scene.questions]
    flat = sample_answers(
        model,
        processor,
        [s.image for s, _ in items],
        [question_prompt(q.shape) for _, q in items],
        max_new_tokens=3,
        batch_size=500,
        desc=desc,
    )
    answers, start = [], 0
    for scene in scenes:
        answers.append([a[0] for a in flat[start : start + len(scene.questions)]])
        start += len(scene.questions)
    return answers


def pope_metrics(scenes: Sequence[Scene], answers: Sequence[Sequence[str]]) -> dict[str, Any]:
    """POPE-style yes/no metrics overall and per negative kind, as POPE's three splits are built.

    Split ``k`` (random, popular, adversarial) holds every positive question and the negatives of
    kind ``k``; accuracy, F1 and yes-ratio come from ``chip.evaluation.pope.pope_scores``.
    """
    keys = [(i, k, q) for i, scene in enumerate(scenes) for k, q in enumerate(scene.questions)]
    given = {f"{i}/{k}": answers[i][k] for i, k, _ in keys}
    labels = {f"{i}/{k}": "yes" if q.label else "no" for i, k, q in keys}
    result = {
        key: value
        for key, value in pope_scores(given, labels).items()
        if key in ("accuracy", "f1", "yes_ratio", "precision", "recall")
    }
    for kind in ("random", "popular", "adversarial"):
        split = [f"{i}/{k}" for i, k, q in keys if q.label or q.kind == kind]
        scores = pope_scores({key: given[key] for key in split}, {key: labels[key] for key in split})
        result[kind] = {key: scores[key] for key in ("accuracy", "f1", "yes_ratio")}
    return result
