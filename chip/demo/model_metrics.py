"""A saved model's validation and test metrics in the demo, each cached as JSON beside the model."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from chip.demo.base import default_device
from chip.demo.measure import (
    answer_attributes,
    answer_questions,
    attribute_metrics,
    caption_metrics,
    caption_scenes,
    pope_metrics,
    recall_counts,
    scene_counts,
)
from chip.demo.world import Scene

# bump when a cached metrics file lacks something the experiment now reads
METRICS_FORMAT = 2


def _load(model_path: Path, processor_path: Path | None = None) -> tuple[Any, Any]:
    model = AutoModelForImageTextToText.from_pretrained(model_path).to(default_device()).eval()
    return model, AutoProcessor.from_pretrained(processor_path or model_path)


def _cached(path: Path, compute: Any) -> Any:
    """``compute()``, stored as JSON at ``path``: a rerun (or a later run sharing the folder) reuses it."""
    if path.exists():
        return json.loads(path.read_text())
    value = compute()
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # parallel runs sharing a folder do not collide
    tmp.write_text(json.dumps(value))
    tmp.replace(path)
    return value


@torch.no_grad()
def validate_model(model_path: Path, scenes: list[Scene], label: str) -> dict[str, float]:
    """Greedy CHAIR_i and recall on the validation scenes: what the learning-rate choice sees."""
    return _cached(
        model_path / f"metrics-val-{len(scenes)}.json", lambda: _validate(model_path, scenes, label)
    )


def _validate(model_path: Path, scenes: list[Scene], label: str) -> dict[str, float]:
    model, processor = _load(model_path)
    greedy = caption_metrics(scenes, caption_scenes(model, processor, scenes, desc=label))
    return {"chair_i": greedy["chair_i"], "recall": greedy["recall"]}


@torch.no_grad()
def evaluate_model(
    model_path: Path, scenes: list[Scene], samples: int, seed: int, label: str
) -> dict[str, Any]:
    """Test metrics of one model: greedy (and sampled) CHAIR with per-scene counts, POPE by split,
    attribute accuracy with per-scene counts."""
    name = f"metrics-test-{len(scenes)}-{samples}-{seed}-v{METRICS_FORMAT}.json"
    return _cached(model_path / name, lambda: _evaluate(model_path, scenes, samples, seed, label))


def _evaluate(model_path: Path, scenes: list[Scene], samples: int, seed: int, label: str) -> dict[str, Any]:
    model, processor = _load(model_path)
    greedy = caption_scenes(model, processor, scenes, desc=f"{label}: greedy captions")
    result: dict[str, Any] = {
        "greedy": caption_metrics(scenes, greedy),
        "counts": scene_counts(scenes, greedy),
        "recall_counts": recall_counts(scenes, greedy),
    }
    result["examples"] = [{"truth": s.caption, "greedy": g[0]} for s, g in zip(scenes[:3], greedy)]
    if samples:
        sampled = caption_scenes(
            model,
            processor,
            scenes,
            temperature=1.0,
            samples=samples,
            seed=seed,
            desc=f"{label}: sampled captions",
        )
        result["sampled"] = caption_metrics(scenes, sampled)
        result["sampled_counts"] = scene_counts(scenes, sampled)
    result["pope"] = pope_metrics(scenes, answer_questions(model, processor, scenes, desc=f"{label}: yes/no"))
    result["attributes"] = attribute_metrics(
        scenes, answer_attributes(model, processor, scenes, desc=f"{label}: attributes")
    )
    return result


@torch.no_grad()
def track_model(checkpoint: Path, scenes: list[Scene], processor_path: Path, label: str) -> dict[str, float]:
    """Greedy CHAIR_i and recall and attribute accuracy of a training checkpoint on ``scenes``."""
    return _cached(
        checkpoint / f"metrics-track-{len(scenes)}-v{METRICS_FORMAT}.json",
        lambda: _track(checkpoint, scenes, processor_path, label),
    )


def _track(checkpoint: Path, scenes: list[Scene], processor_path: Path, label: str) -> dict[str, float]:
    model, processor = _load(checkpoint, processor_path)
    greedy = caption_metrics(scenes, caption_scenes(model, processor, scenes, desc=f"{label}: captions"))
    attributes = attribute_metrics(scenes, answer_attributes(model, processor, scenes))
    return {
        "chair_i": greedy["chair_i"],
        "recall": greedy["recall"],
        "attribute_accuracy": attributes["accuracy"],
    }
