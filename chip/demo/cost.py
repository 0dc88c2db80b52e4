"""The demo's comparisons: runs against DPO and each other, what each costs against the base, and
how the cost moves along a long run.

    compare_all(counts, resamples)         # {"A vs B": {"greedy" | "sampled": Difference}} of CHAIR_i
    cost_comparisons(counts, resamples)   # {method: {"chair_i" | "recall" | "attribute_accuracy": Difference}}
    long_training(run_dir, base_path, base_summary, scenes)   # [{"step", "chair_i", "recall", ...}]

Preference training can lower hallucination by losing what the model knew: it names fewer of the
objects that are there (recall) or forgets their colour, place, size or number (the world's
attribute questions, `chip.demo.world.attribute_questions`). Every number here is a pooled ratio
of per-scene counts, so its difference to the base gets the same paired bootstrap interval as
CHAIR_i (`chip.demo.stats`): the base and the method answered the same test scenes.

On-policy runs are named ``"<method>@onpolicy"``: the same `ChipConfig` settings as ``<method>``,
trained on pairs `chip pairs` drew from the base's own captions instead of the built-in ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from chip.demo.methods import RIVALS, VARIANTS, tuned_as
from chip.demo.model_metrics import track_model
from chip.demo.stats import bootstrap_difference
from chip.demo.world import Scene

ON_POLICY = "onpolicy"
# the counts behind each cost metric (`_Experiment.counts` keys): CHAIR_i, recall, attribute accuracy
COST_COUNTS = {"chair_i": "greedy", "recall": "recall", "attribute_accuracy": "attributes"}


def on_policy_name(method: str) -> str:
    """The run name of ``method`` trained on the base's own pairs."""
    return f"{method}@{ON_POLICY}"


def pairs_of(name: str) -> tuple[str, str]:
    """(the method's settings name, which pairs it trains on: "builtin" or "onpolicy")."""
    method, _, pairs = name.partition("@")
    return method, pairs or "builtin"


def compare_all(counts: dict[str, dict[str, list[Any]]], resamples: int) -> dict[str, Any]:
    """Every method and variant against DPO, the variants against their core method, CHiP vs each
    part, and CHiP's rivals (mDPO, image-anchored and several-rejected CHiP) against CHiP.

    Keys are ``"A vs B"``; values hold, per decoding, `Difference.to_dict()` of CHAIR_i(A) − CHAIR_i(B).
    """
    names = list(counts["greedy"])
    pairs = [(name, "dpo") for name in names if name != "dpo"]
    pairs += [(name, tuned_as(name)) for name in names if name in VARIANTS and tuned_as(name) in names]
    pairs += [("chip", name) for name in ("dpo+segment", "dpo+token", "dpo+visual") if name in names]
    pairs += [(name, "chip") for name in RIVALS if name in names]
    on_policy = [name for name in names if pairs_of(name)[1] == ON_POLICY]
    pairs += [(name, pairs_of(name)[0]) for name in on_policy]
    pairs += [(name, on_policy_name("dpo")) for name in on_policy if name != on_policy_name("dpo")]
    out: dict[str, Any] = {}
    for a, b in dict.fromkeys(pairs):
        if a not in names or b not in names:
            continue
        out[f"{a} vs {b}"] = {
            decoding: bootstrap_difference(np.array(by_name[a]), np.array(by_name[b]), resamples).to_dict()
            for decoding, by_name in counts.items()
            if decoding in ("greedy", "sampled") and a in by_name and b in by_name
        }
    return out


def cost_comparisons(counts: dict[str, dict[str, list[Any]]], resamples: int) -> dict[str, Any]:
    """Every trained run's greedy CHAIR_i, recall and attribute accuracy minus the base's, with CIs.

    Values are `Difference.to_dict()` in fractions; a negative recall or attribute difference is
    knowledge lost.
    """
    out: dict[str, Any] = {}
    for name in counts["greedy"]:
        if name == "base":
            continue
        out[name] = {
            metric: bootstrap_difference(
                np.array(counts[key][name]), np.array(counts[key]["base"]), resamples
            ).to_dict()
            for metric, key in COST_COUNTS.items()
            if name in counts.get(key, {}) and "base" in counts.get(key, {})
        }
    return out


def long_training(
    run_dir: Path, base_path: Path, base_summary: dict[str, Any], scenes: list[Scene]
) -> list[dict[str, float]]:
    """CHAIR_i, recall and attribute accuracy (greedy, ``scenes``) at step 0 and every checkpoint.

    Step 0 is the base's own test measurement; each ``checkpoint-N`` of ``run_dir`` is loaded with
    the base's processor and measured (cached in the checkpoint folder).
    """
    points = [
        {
            "step": 0,
            "chair_i": base_summary["chair_i"],
            "recall": base_summary["recall"],
            "attribute_accuracy": base_summary["attribute_accuracy"],
        }
    ]
    checkpoints = sorted(run_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    for checkpoint in checkpoints:
        step = int(checkpoint.name.split("-")[1])
        points.append({"step": step, **track_model(checkpoint, scenes, base_path, f"long run step {step}")})
    return points
