"""On-policy preference pairs: the base model's own captions, judged against the scene's truth.

    path = write_on_policy_pairs(base_path, WorldConfig(), "out/onpolicy", count=500)

This is `chip pairs` with the world as the annotator (`world_annotator`: the scene's classes are
the truth, `WORLD_VOCABULARY` reads the captions): each scene of the ``split`` is captioned
``samples`` times at temperature 1; per scene, a caption that names an absent object is a
rejected response and a caption with fewer hallucinations that names at least as many of the
scene's objects is the chosen one (closest in words to the rejected, so the pair differs mainly
where the hallucination is). Scenes where no caption hallucinates, or none is cleaner, give no
pair; `pairs_report.json` next to the pairs counts them. The pairs target exactly the errors
this model makes.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

from chip.data import ImageRef
from chip.demo.world import CAPTION_PROMPT, WORLD_VOCABULARY, Scene, WorldConfig, make_scenes
from chip.pairs import PairingRules, PromptItem, SamplingSettings, TruthAnnotator, make_pairs

# Longest caption the world's model writes, in tokens (one per word): three objects with partners.
CAPTION_TOKENS = 24


def world_annotator(scenes: Mapping[str, Scene]) -> TruthAnnotator:
    """The annotator whose truth is each scene's drawn classes (faint and hidden partners included)."""
    return TruthAnnotator(WORLD_VOCABULARY, {key: scene.classes for key, scene in scenes.items()}, "world")


def scene_items(scenes: Sequence[Scene], split: str) -> dict[str, PromptItem]:
    """One `chip pairs` item per scene: the caption prompt and the scene's image (PNG bytes)."""
    items = {}
    for i, scene in enumerate(scenes):
        buffer = io.BytesIO()
        scene.image.save(buffer, format="PNG")
        key = f"{split}-{i}"
        items[key] = PromptItem(key, CAPTION_PROMPT, (ImageRef(data=buffer.getvalue()),), (f"{key}.png",))
    return items


def write_on_policy_pairs(
    model_path: str | Path,
    world: WorldConfig,
    out_dir: str | Path,
    count: int,
    samples: int = 4,
    split: str = "onpolicy",
    seed: int = 0,
    device: str | None = None,
    rules: PairingRules | None = None,
) -> Path:
    """Caption ``count`` scenes of ``split`` with the model; write the judged pairs with `chip pairs`.

    Returns ``out_dir/pairs.jsonl``: at most ``count * rules.pairs_per_prompt`` rows, images under
    ``out_dir/images/``, the report in ``out_dir/pairs_report.json``.
    """
    scenes = make_scenes(world, split, count)
    items = scene_items(scenes, split)
    annotator = world_annotator({key: scene for key, scene in zip(items, scenes)})
    sampling = SamplingSettings(
        samples=samples,
        temperature=1.0,
        max_new_tokens=CAPTION_TOKENS,
        seed=seed,
        batch_size=100,
        device=device,
    )
    make_pairs(model_path, list(items.values()), annotator, out_dir, sampling, rules, progress=False)
    return Path(out_dir) / "pairs.jsonl"
