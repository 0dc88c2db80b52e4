"""The demo's base model: a tiny LLaVA trained from scratch to caption and answer about the world.

    from chip.demo.base import BaseModelConfig, train_base_model
    path = train_base_model(BaseModelConfig.quick(), cache_dir="~/.cache/chip/demo")
    model = AutoModelForImageTextToText.from_pretrained(path); processor = AutoProcessor.from_pretrained(path)

Supervised training on freshly drawn scenes every step (no epochs, no overfitting): the answer
is the scene's *training* caption, which carries the world's language prior, or a yes/no answer
to one of its questions. The run is cached under ``cache_dir/base-<hash>`` where the hash covers
the world, the model and the training settings, so the demo's later phases and later runs reuse
it. At the end the model captions held-out scenes and the CHAIR numbers go into
``chip_base.json`` next to the weights: the base must describe well yet still hallucinate.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from chip.demo.measure import (
    answer_attributes,
    answer_questions,
    attribute_metrics,
    caption_metrics,
    caption_scenes,
    pope_metrics,
)
from chip.demo.pretrain import VisionReport, pretrain_vision
from chip.demo.tiny_vlm import PromptEncoder, build_model, build_processor
from chip.demo.world import CAPTION_PROMPT, Scene, WorldConfig, make_scenes, question_prompt

CACHE_FORMAT = 3  # bump when training code changes in a way that makes cached models stale
SUMMARY_FILE = "chip_base.json"


@dataclass(frozen=True)
class BaseModelConfig:
    """World, architecture and supervised-training settings of the base model (all hashed)."""

    world: WorldConfig = field(default_factory=WorldConfig)  # the scenes it learns from
    # architecture
    patch_size: int = 16  # px; one patch per 16-px cell, so 3x3 = 9 image tokens: short sequences
    vision_hidden: int = 64  # CLIP width
    vision_layers: int = 2  # CLIP depth
    text_hidden: int = 128  # Llama width
    text_layers: int = 2  # Llama depth
    heads: int = 4  # attention heads in both towers
    # stage 1: vision tower pretraining (per-cell object detection, see pretrain.py)
    vision_steps: int = 600  # anchors ~98% right, partners barely (see docs); the head is discarded
    vision_lr: float = 2e-3  # AdamW, constant: a short, easy task
    # stage 2: supervised captioning / QA of the whole LLaVA
    steps: int = 1200  # optimiser steps; each sees batch_size fresh scenes; loss plateaus by ~700
    batch_size: int = 64  # scenes per step
    lr: float = 5e-4  # AdamW peak; 1e-3 stalled 700 steps on a plateau with colours mixed up
    warmup_steps: int = 100  # linear warm-up, then cosine decay
    min_lr_ratio: float = 0.1  # the cosine ends at lr * min_lr_ratio
    weight_decay: float = 0.01  # AdamW decoupled weight decay
    qa_fraction: float = 0.35  # share of examples that are yes/no questions instead of captions
    # share that are attribute questions (colour, cell, size, count); with 0.2 taken from the
    # captions (30% left) the quick base's greedy recall fell from 0.95 to 0.51 (docs/demo-world.md)
    attribute_fraction: float = 0.15
    seed: int = 0  # initialisation and example-mix seed (scenes come from world.seed)
    # measurement at the end of training
    eval_scenes: int = 200  # held-out scenes captioned for chip_base.json
    eval_samples: int = 3  # samples per scene at temperature 1 (greedy is measured as well)

    @classmethod
    def quick(cls, **overrides: Any) -> BaseModelConfig:
        """About two minutes on 2 CPU cores: shorter pretraining and captioning, same world and model."""
        return cls(**{"vision_steps": 300, "steps": 500, **overrides})

    @classmethod
    def full(cls, **overrides: Any) -> BaseModelConfig:
        """The full-mode base (the defaults): trained past its loss plateau, so the hallucination
        that remains is the converged model's, not an artefact of stopping early."""
        return cls(**overrides)

    def __post_init__(self) -> None:
        cell = self.world.image_size // self.world.grid
        if cell % self.patch_size:
            raise ValueError(f"patch_size {self.patch_size} must divide the {cell}-px grid cell")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def hash(self) -> str:
        """Stable 12-hex-digit id of the config; names the cache folder."""
        text = json.dumps({"format": CACHE_FORMAT, **self.to_dict()}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def train_base_model(
    config: BaseModelConfig,
    cache_dir: str | Path,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> Path:
    """Train (or reuse from the cache) the base model; returns the folder to ``from_pretrained``.

    The folder holds the model, its processor and ``chip_base.json`` (config, training time,
    final loss, held-out CHAIR numbers). It is written under a temporary name and renamed at the
    end, so an interrupted run never leaves a half-written model that a later run would reuse.
    """
    cache_dir = Path(cache_dir).expanduser()
    path = cache_dir / f"base-{config.hash()}"
    if (path / SUMMARY_FILE).exists():
        if progress:
            print(f"base model: reusing {path}")
        return path
    device = torch.device(device) if device is not None else default_device()
    staging = cache_dir / f".base-{config.hash()}.partial"
    shutil.rmtree(staging, ignore_errors=True)

    start = time.perf_counter()
    model, processor, losses, vision = _train(config, device, progress)
    train_seconds = time.perf_counter() - start
    measurements = measure_base(model, processor, config)
    staging.mkdir(parents=True)
    model.save_pretrained(staging)
    processor.save_pretrained(staging)
    summary = {
        "hash": config.hash(),
        "config": config.to_dict(),
        "device": str(device),
        "train_seconds": round(train_seconds, 1),
        "final_loss": round(sum(losses[-50:]) / len(losses[-50:]), 4),
        # mean caption/QA loss of each block of 25 steps: (last step of the block, loss)
        "loss_curve": [
            [min(i + 25, len(losses)), round(sum(losses[i : i + 25]) / len(losses[i : i + 25]), 4)]
            for i in range(0, len(losses), 25)
        ],
        "parameters": sum(p.numel() for p in model.parameters()),
        "vision_pretraining": dataclasses.asdict(vision),
        "measurements": measurements,
    }
    (staging / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    shutil.rmtree(path, ignore_errors=True)
    staging.rename(path)
    if progress:
        print(summary_line(summary, path))
    return path


def summary_line(summary: dict[str, Any], path: Path) -> str:
    """One line: steps, time, loss, held-out recall and CHAIR under both decodings."""
    m = summary["measurements"]
    s, g = m["sampled"], m["greedy"]
    return (
        f"base model: {summary['config']['steps']} steps in {summary['train_seconds']:.0f}s on {summary['device']}, "
        f"loss {summary['final_loss']:.3f}; {m['scenes']} held-out scenes, sampled T=1 x{m['samples']}: "
        f"recall {s['recall']:.2f} CHAIR_i {s['chair_i']:.3f} CHAIR_s {s['chair_s']:.3f}; "
        f"greedy: recall {g['recall']:.2f} CHAIR_i {g['chair_i']:.3f} CHAIR_s {g['chair_s']:.3f}; POPE accuracy "
        f"random {m['pope']['random']['accuracy']:.2f} popular {m['pope']['popular']['accuracy']:.2f} "
        f"adversarial {m['pope']['adversarial']['accuracy']:.2f}; attribute accuracy "
        f"{m['attributes']['accuracy']:.2f} -> {path}"
    )


def measure_base(model: torch.nn.Module, processor: Any, config: BaseModelConfig) -> dict[str, Any]:
    """Caption held-out scenes greedily and by sampling (CHAIR of each); answer their yes/no questions."""
    scenes = make_scenes(config.world, "eval", config.eval_scenes)
    greedy = caption_scenes(model, processor, scenes)
    sampled = caption_scenes(
        model, processor, scenes, temperature=1.0, samples=config.eval_samples, seed=config.seed
    )
    return {
        "scenes": len(scenes),
        "samples": config.eval_samples,
        "greedy": caption_metrics(scenes, greedy),
        "sampled": caption_metrics(scenes, sampled),
        "pope": pope_metrics(scenes, answer_questions(model, processor, scenes)),
        "attributes": {
            key: value
            for key, value in attribute_metrics(scenes, answer_attributes(model, processor, scenes)).items()
            if key != "counts"
        },
        "examples": [
            {"truth": s.caption, "greedy": g[0], "sampled": c} for s, g, c in zip(scenes[:5], greedy, sampled)
        ],
    }


def lr_at(step: int, config: BaseModelConfig) -> float:
    """Linear warm-up to ``lr``, then cosine decay to ``lr * min_lr_ratio`` at the last step."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return config.lr * (config.min_lr_ratio + (1 - config.min_lr_ratio) * cosine)


def training_examples(
    scenes: list[Scene], rng: random.Random, qa_fraction: float, attribute_fraction: float = 0.0
) -> tuple[list[str], list[str]]:
    """(question, answer) per scene: the noisy training caption, a yes/no or an attribute question.

    A share ``qa_fraction`` of the scenes gets a yes/no question, ``attribute_fraction`` one of its
    attribute questions (uniformly), the rest the training caption.

    Questions are balanced: half ask about a present class, half about one of the scene's absent
    ones (random, popular or its anchors' partners), so "yes" is right only when the image shows
    the object and the answer has to come from the image. The one exception is the prior: an
    absent partner that the training caption names falsely is answered "yes" too, as a model
    trained on such data would believe, which keeps adversarial questions harder than random ones.
    """
    questions, answers = [], []
    for scene in scenes:
        draw = rng.random()
        if qa_fraction <= draw < qa_fraction + attribute_fraction and scene.attributes:
            attribute = rng.choice(scene.attributes)
            questions.append(attribute.text)
            answers.append(f"{attribute.answer} .")
        elif draw < qa_fraction:
            positives = [q for q in scene.questions if q.label]
            negatives = [q for q in scene.questions if not q.label]
            q = rng.choice(positives if rng.random() < 0.5 or not negatives else negatives)
            questions.append(question_prompt(q.shape))
            answers.append("yes ." if q.label or q.shape in scene.noise else "no .")
        else:
            questions.append(CAPTION_PROMPT)
            answers.append(scene.train_caption)
    return questions, answers


def example_mean_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged over each example's answer tokens, then over the batch.

    A yes/no answer has 3 tokens and a caption ~15, so the usual token average would give the
    questions a few percent of the gradient and the model would answer them from class frequency;
    per-example averaging gives both tasks weight in proportion to how often they are drawn.
    """
    logits, labels = logits[:, :-1].float(), labels[:, 1:]  # (B, T-1, V), (B, T-1): predict the next token
    mask = labels != -100
    token_loss = torch.nn.functional.cross_entropy(
        logits.transpose(1, 2), labels.clamp(min=0), reduction="none"
    )  # (B, T-1)
    per_example = (token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1)  # (B,)
    return per_example.mean()


def _train(
    config: BaseModelConfig, device: torch.device, progress: bool
) -> tuple[Any, Any, list[float], VisionReport]:
    torch.manual_seed(config.seed)
    world = config.world
    processor = build_processor(world.image_size, config.patch_size)
    model = build_model(
        processor,
        world.image_size,
        config.patch_size,
        config.vision_hidden,
        config.vision_layers,
        config.text_hidden,
        config.text_layers,
        config.heads,
    ).to(device)
    bar = tqdm(
        total=config.vision_steps + config.steps, desc="base model", disable=not progress, dynamic_ncols=True
    )
    losses: list[float] = []

    def tick(stage: str, loss: float) -> None:
        losses.append(loss)
        bar.update(1)
        if bar.n % 10 == 0:
            bar.set_postfix(stage=stage, loss=f"{sum(losses[-10:]) / len(losses[-10:]):.3f}")

    vision = pretrain_vision(
        model.model.vision_tower,
        world,
        config.patch_size,
        config.vision_steps,
        config.batch_size,
        config.vision_lr,
        device,
        on_step=lambda loss: tick("vision", loss),
    )
    losses.clear()
    encoder = PromptEncoder(processor, world.image_size)
    train_captions(model, encoder, config, device, on_step=lambda loss: tick("caption", loss))
    bar.close()
    model.eval()
    return model, processor, losses, vision


def train_captions(
    model: Any,
    encoder: PromptEncoder,
    config: BaseModelConfig,
    device: torch.device,
    on_step: Callable[[float], None],
) -> None:
    """The captioning stage: the whole model on captions and yes/no answers of training scenes
    (AdamW, `lr_at`'s schedule, gradients clipped at 1); ``on_step(loss)`` after each step."""
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, betas=(0.9, 0.98), weight_decay=config.weight_decay
    )
    rng = random.Random(f"base/{config.seed}")
    model.train()
    for step in range(config.steps):
        scenes = make_scenes(config.world, "train", config.batch_size, start=step * config.batch_size)
        questions, answers = training_examples(scenes, rng, config.qa_fraction, config.attribute_fraction)
        batch = {
            k: v.to(device) for k, v in encoder.batch([s.image for s in scenes], questions, answers).items()
        }
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, config)
        loss = example_mean_loss(model(**batch).logits, batch["labels"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        on_step(loss.item())
