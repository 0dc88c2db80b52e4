"""On-policy preference pairs: the base model's own captions, judged against the scene's truth.

    path = write_on_policy_pairs(base_path, WorldConfig(), "out/onpolicy", count=500)

Each scene is captioned ``samples`` times at temperature 1. A caption that names an object not in
the scene is a rejected response; the chosen response is a sampled caption that names every
object and nothing else (closest in words to the rejected one, so the pair differs mainly where
the hallucination is), or the scene's faithful caption when no sample is right. Scenes where no
sample hallucinates give no pair. This is the RLHF-V recipe with the world as the annotator:
the pairs target exactly the errors this model makes.
"""

from __future__ import annotations

import json
import random
from difflib import SequenceMatcher
from pathlib import Path

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from chip.demo.measure import caption_scenes
from chip.demo.pairs import changed_spans
from chip.demo.world import CAPTION_PROMPT, WORLD_VOCABULARY, Scene, WorldConfig, make_scenes
from chip.evaluation.chair import extract_mentions


def judge_pair(scene: Scene, captions: list[str], rng: random.Random) -> tuple[str, str] | None:
    """(chosen, rejected) from one scene's sampled captions, or None if none hallucinates."""
    truth = scene.classes
    wrong, right = [], []
    for caption in captions:
        mentions = set(extract_mentions(caption, WORLD_VOCABULARY))
        if mentions - truth:
            wrong.append(caption)
        elif mentions == truth:
            right.append(caption)
    if not wrong:
        return None
    rejected = rng.choice(wrong)
    candidates = right or [scene.caption]
    chosen = max(
        candidates, key=lambda c: SequenceMatcher(None, c.split(), rejected.split(), autojunk=False).ratio()
    )
    return chosen, rejected


def write_on_policy_pairs(
    model_path: str | Path,
    world: WorldConfig,
    out_dir: str | Path,
    count: int,
    samples: int = 4,
    split: str = "onpolicy",
    seed: int = 0,
    device: str | torch.device | None = None,
) -> Path:
    """Caption ``count`` scenes of ``split`` with the model; write the judged pairs as JSONL + PNGs.

    Returns ``out_dir/pairs.jsonl``; it holds at most ``count`` rows (one per scene where a
    sample hallucinated), each with ``"kind": "on_policy"``.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = AutoModelForImageTextToText.from_pretrained(model_path).to(device)
    processor = AutoProcessor.from_pretrained(model_path)
    scenes = make_scenes(world, split, count)
    captions = caption_scenes(model, processor, scenes, temperature=1.0, samples=samples, seed=seed)
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"onpolicy/{world.seed}/{seed}")
    path = out_dir / "pairs.jsonl"
    with path.open("w") as f:
        for i, (scene, scene_captions) in enumerate(zip(scenes, captions)):
            pair = judge_pair(scene, scene_captions, rng)
            if pair is None:
                continue
            chosen, rejected = pair
            chosen_segments, rejected_segments = changed_spans(chosen, rejected)
            image_path = f"images/{split}-{i}.png"
            scene.image.save(out_dir / image_path)
            row = {
                "id": f"{split}-{i}",
                "images": [image_path],
                "prompt": CAPTION_PROMPT,
                "chosen": chosen,
                "rejected": rejected,
                "chosen_segments": chosen_segments,
                "rejected_segments": rejected_segments,
                "kind": "on_policy",
            }
            f.write(json.dumps(row) + "\n")
    return path
