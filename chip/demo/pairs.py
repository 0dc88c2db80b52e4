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
from difflib import SequenceMatcher
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

Kind = Literal["partner", "absent", "swap"]
Span = list[int]


@dataclass(frozen=True)
class PairsConfig:
    """How rejected captions are made."""

    kinds: tuple[Kind, ...] = ("partner", "absent", "swap")  # corruption kinds to draw from
    weights: tuple[float, ...] = (0.5, 0.25, 0.25)  # their odds; partner first: the prior's error
    split: str = "pairs"  # scene stream of the world, disjoint from "train" and "eval"
    seed: int = 0  # picks the corruption of each scene

    def __post_init__(self) -> None:
        if len(self.kinds) != len(self.weights) or not self.kinds:
            raise ValueError("kinds and weights must be non-empty and of equal length")
        unknown = set(self.kinds) - {"partner", "absent", "swap"}
        if unknown:
            raise ValueError(f"unknown pair kinds {sorted(unknown)}")


def changed_spans(chosen: str, rejected: str, single_edit: bool = False) -> tuple[list[Span], list[Span]]:
    """Character spans ``[start, end)`` of the word regions where two responses differ.

    By default every differing region (word-level ``difflib``, autojunk off); with ``single_edit``
    the one region left after the longest common word prefix and suffix, which is what a
    single-edit pair changed (difflib can split it where a word repeats). A region empty on one
    side (a pure insertion) is widened by the preceding word (the next one at the start), so the
    chosen response also carries a segment ("star" vs "star with a moon").
    """
    a, b = chosen.split(" "), rejected.split(" ")
    if a == b:
        return [], []
    if single_edit:
        regions = [_between_common_ends(a, b)]
    else:
        opcodes = SequenceMatcher(None, a, b, autojunk=False).get_opcodes()
        regions = [(i1, i2, j1, j2) for tag, i1, i2, j1, j2 in opcodes if tag != "equal"]
    a_starts = [sum(len(w) + 1 for w in a[:i]) for i in range(len(a) + 1)]
    b_starts = [sum(len(w) + 1 for w in b[:i]) for i in range(len(b) + 1)]
    chosen_spans: list[Span] = []
    rejected_spans: list[Span] = []
    for i1, i2, j1, j2 in regions:
        if i1 == i2 or j1 == j2:
            if i1 > 0 and j1 > 0:
                i1, j1 = i1 - 1, j1 - 1
            else:
                i2, j2 = i2 + 1, j2 + 1
        chosen_spans.append([a_starts[i1], a_starts[i2] - 1])
        rejected_spans.append([b_starts[j1], b_starts[j2] - 1])
    return _merge(chosen_spans), _merge(rejected_spans)


def _merge(spans: list[Span]) -> list[Span]:
    merged: list[Span] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return merged


def _between_common_ends(a: list[str], b: list[str]) -> tuple[int, int, int, int]:
    """Word region ``(i1, i2, j1, j2)`` left after the longest common prefix and suffix."""
    prefix = 0
    while prefix < min(len(a), len(b)) and a[prefix] == b[prefix]:
        prefix += 1
    suffix = 0
    while suffix < min(len(a), len(b)) - prefix and a[-1 - suffix] == b[-1 - suffix]:
        suffix += 1
    return prefix, len(a) - suffix, prefix, len(b) - suffix


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
    """One row: faithful caption vs a corrupted one; the kind is drawn by weight among those that apply."""
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
    chosen_segments, rejected_segments = changed_spans(scene.caption, rejected, single_edit=True)
    return {
        "id": index,
        "images": [image_path],
        "prompt": CAPTION_PROMPT,
        "chosen": scene.caption,
        "rejected": rejected,
        "chosen_segments": chosen_segments,
        "rejected_segments": rejected_segments,
        "kind": kind,
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
