"""Preference pairs from the world, in chip's row format (docs/data.md), written as JSON Lines plus PNG files.

    from chip.demo.pairs import write_preference_pairs
    path = write_preference_pairs(WorldConfig(), "out/pairs", count=2000)   # out/pairs/pairs.jsonl

Chosen is the scene's faithful caption. Rejected is the same caption with one hallucination of
the kind the world's prior produces, so the pair isolates exactly the preference to learn:

- ``partner``: an absent usual partner attached to its anchor ("a red star with a moon") -- the
  base model's own typical error;
- ``absent``: a whole object of an absent class inserted among the others;
- ``swap``: one object's class replaced by an absent class ("a red star" -> "a red heart").

``chosen_segments`` / ``rejected_segments`` are character spans of the changed words. A pure
insertion has no changed word on the chosen side, so both spans are widened by the word before
it ("star" vs "star with a moon"); both responses then carry a segment.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from chip.demo.world import (
    CAPTION_PROMPT,
    CLASSES,
    COLOURS,
    PARTNER,
    SYNONYMS,
    Scene,
    WorldConfig,
    join_phrases,
    make_scene,
    scene_seed,
    with_article,
)
from chip.segments import changed_spans

Kind = Literal["partner", "absent", "swap"]


@dataclass(frozen=True)
class PairsConfig:
    """How rejected captions are made."""

    kinds: tuple[Kind, ...] = ("partner", "absent", "swap")  # corruption kinds to draw from
    weights: tuple[float, ...] = (0.5, 0.25, 0.25)  # their odds; partner first: the prior's error
    split: str = "pairs"  # scene stream of the world, disjoint from "train" and "eval"
    seed: int = 0  # picks the corruption of each scene
    # rejected captions per row: the first as with 1, then one per other kind that applies
    rejected_per_pair: int = 1

    def __post_init__(self) -> None:
        if len(self.kinds) != len(self.weights) or not self.kinds:
            raise ValueError("kinds and weights must be non-empty and of equal length")
        unknown = set(self.kinds) - {"partner", "absent", "swap"}
        if unknown:
            raise ValueError(f"unknown pair kinds {sorted(unknown)}")
        if self.rejected_per_pair < 1:
            raise ValueError(f"rejected_per_pair must be >= 1, got {self.rejected_per_pair}")


def _noun(rng: random.Random, shape: str, world: WorldConfig) -> str:
    if shape in SYNONYMS and rng.random() < world.synonym_prob:
        return rng.choice(SYNONYMS[shape])
    return shape


def corrupt_caption(scene: Scene, kind: Kind, rng: random.Random, world: WorldConfig) -> str | None:
    """The scene's caption with one hallucination of ``kind``, or None where it cannot apply."""
    phrases = list(scene.phrases)
    present = scene.classes
    absent = [c for c in CLASSES if c not in present]
    anchors = [o for o in scene.objects if o.partner_of is None]
    if kind == "partner":
        options = [
            i
            for i, o in enumerate(anchors)
            if o.shape in PARTNER and PARTNER[o.shape] not in present and " with " not in phrases[i]
        ]
        if not options:
            return None
        i = rng.choice(options)
        phrases[i] += f" with {with_article(_noun(rng, PARTNER[anchors[i].shape], world))}"
    elif kind == "absent":
        if not absent:
            return None
        phrase = f"a {rng.choice(list(COLOURS))} {_noun(rng, rng.choice(absent), world)}"
        phrases.insert(rng.randint(1, len(phrases)), phrase)  # after the first: one clean span
    else:
        if not absent:
            return None
        i = rng.randrange(len(anchors))
        _, partner = phrases[i].split(" with ") if " with " in phrases[i] else (phrases[i], "")
        phrases[i] = f"a {anchors[i].colour} {_noun(rng, rng.choice(absent), world)}" + (
            f" with {partner}" if partner else ""
        )
    return join_phrases(phrases)


def make_pair(
    scene: Scene, index: str, image_path: str, rng: random.Random, config: PairsConfig, world: WorldConfig
) -> dict[str, Any]:
    """One row: faithful caption vs a corrupted one; the kind is drawn by weight among those that apply.

    With ``config.rejected_per_pair`` N > 1 the row lists up to N rejected captions: the one drawn
    as with N = 1 (the same draws of ``rng``), then one of each kind later in the drawn order that
    applies, from a generator of their own. Both span fields then hold one span list per rejected
    caption (the chosen caption's changed words differ from one rejected caption to the next).
    """
    kinds, weights = list(config.kinds), list(config.weights)
    order = []
    while kinds:  # a weighted order without replacement: the fallback keeps the odds
        k = rng.choices(range(len(kinds)), weights=weights)[0]
        order.append(kinds.pop(k))
        weights.pop(k)
    for kind in order:
        rejected = corrupt_caption(scene, kind, rng, world)
        if rejected is not None and rejected != scene.caption:
            break
    else:
        raise ValueError(f"scene {scene.seed} allows none of the pair kinds {config.kinds}")
    captions, used = [rejected], [kind]
    more_rng = random.Random(f"{index}/{config.seed}/more")
    for other in order[order.index(kind) + 1 :]:
        if len(captions) == config.rejected_per_pair:
            break
        caption = corrupt_caption(scene, other, more_rng, world)
        if caption is not None and caption not in (scene.caption, *captions):
            captions.append(caption)
            used.append(other)
    spans = [changed_spans(scene.caption, caption, single_edit=True) for caption in captions]
    row = {"id": index, "images": [image_path], "prompt": CAPTION_PROMPT, "chosen": scene.caption}
    if config.rejected_per_pair == 1:
        ((chosen_segments, rejected_segments),) = spans
        return row | {
            "rejected": rejected,
            "chosen_segments": chosen_segments,
            "rejected_segments": rejected_segments,
            "kind": kind,
        }
    return row | {
        "rejected": captions,
        "chosen_segments": [chosen for chosen, _ in spans],
        "rejected_segments": [each for _, each in spans],
        "kind": used,
    }


def write_preference_pairs(
    world: WorldConfig,
    out_dir: str | Path,
    count: int,
    config: PairsConfig | None = None,
    start: int = 0,
) -> Path:
    """Write ``count`` pairs to ``out_dir/pairs.jsonl`` and their images to ``out_dir/images/``.

    Image paths in the rows are relative to ``out_dir`` (the data file's folder), so the folder
    can be moved as a whole and read with ``chip train --dataset out_dir/pairs.jsonl``.
    """
    config = config or PairsConfig()
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"pairs/{world.seed}/{config.seed}/{start}")
    path = out_dir / "pairs.jsonl"
    with path.open("w") as f:
        for i in range(start, start + count):
            scene = make_scene(scene_seed(world.seed, config.split, i), world)
            index = f"{config.split}-{i}"
            image_path = f"images/{index}.png"
            scene.image.save(out_dir / image_path)
            f.write(json.dumps(make_pair(scene, index, image_path, rng, config, world)) + "\n")
    return path
