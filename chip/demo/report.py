"""`results.json` and `report.md` (with PNG plots) of a demo run; every number comes from the run."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PCT = (
    "chair_i",
    "chair_s",
    "recall",
    "sampled_chair_i",
    "sampled_chair_s",
    "sampled_recall",
    "pope_accuracy",
    "pope_f1",
)


METRICS = """Metrics (each caption's objects are the world's shape words it names, synonyms folded):

- **CHAIR_i**: mentions of objects absent from the scene / all object mentions (lower is better).
- **CHAIR_s**: captions with at least one absent object / all captions (lower is better).
- **recall**: distinct objects of the scene that the caption names / objects in the scene (higher is better).
- **POPE F1 / acc**: yes/no questions "is there a ... ?" about present and absent objects, answer read
  as yes or no; F1 with "yes" as the positive class, accuracy over all questions.
- **yes ratio**: share of questions answered yes (0.5 for a balanced answerer on these questions)."""


def _spread_note(seeds: list[int]) -> str:
    if len(seeds) > 1:
        return f"± is the standard deviation across seeds {list(seeds)}."
    return f"One seed ({seeds[0]}): no spread estimate, so no ± and no error bars; differences are indicative only."


def write_results(results: dict[str, Any], output_dir: Path) -> Path:
    path = output_dir / "results.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    os.replace(tmp, path)
    return path


def _cell(summary: dict[str, Any], key: str) -> str:
    value, std = summary[key], summary.get(f"{key}_std", 0.0)
    text = f"{100 * value:.1f}" if key in PCT else f"{value:.3f}"
    return f"{text} ± {100 * std:.1f}" if std and key in PCT else text


def results_table(methods: dict[str, Any]) -> str:
    columns = ("chair_i", "chair_s", "recall", "sampled_chair_i", "sampled_chair_s", "sampled_recall",
               "pope_f1", "pope_accuracy", "pope_yes_ratio")  # fmt: skip
    header = ("| method | CHAIR_i % | CHAIR_s % | recall % | sampled CHAIR_i % | sampled CHAIR_s % | sampled recall % "
              "| POPE F1 % | POPE acc % | yes ratio |")  # fmt: skip
    lines = [header, "|" + "---|" * (len(columns) + 1)]
    for name, summary in methods.items():
        lines.append(f"| {name} | " + " | ".join(_cell(summary, c) for c in columns) + " |")
    return "\n".join(lines)


def verdict(results: dict[str, Any]) -> str:
    """Plain words on whether CHiP beat DPO here, by how much, and how sure we are (both decodings)."""
    methods, comparison = results["methods"], results.get("comparison") or {}
    if not comparison:
        return "CHiP and DPO were not both run, so there is no comparison."
    chip, dpo = methods["chip"], methods["dpo"]
    n_seeds = len(chip["seeds"])
    sentences = []
    for prefix, label in (("", "greedy decoding (the benchmarks' default)"), ("sampled_", "sampling at T=1")):
        key = f"{prefix}chair_i"
        diff, spread = dpo[key] - chip[key], max(chip[f"{key}_std"], dpo[f"{key}_std"])
        reduction = None if dpo[key] == 0 else diff / dpo[key]
        head = "CHiP hallucinated less than DPO" if diff > 0 else "CHiP did **not** hallucinate less than DPO"
        sure = ("larger than twice the seed spread" if n_seeds > 1 and abs(diff) > 2 * spread
                else f"within the seed spread ({100 * spread:.1f} points)" if n_seeds > 1
                else "one seed: no spread estimate, indicative only")  # fmt: skip
        rel = "n/a" if reduction is None else f"{100 * reduction:+.1f}%"
        sentences.append(
            f"Under {label}, {head}: CHAIR_i {100 * chip[key]:.1f}% vs {100 * dpo[key]:.1f}% "
            f"(relative reduction {rel}; {sure}); recall {100 * chip[prefix + 'recall']:.1f}% vs "
            f"{100 * dpo[prefix + 'recall']:.1f}%."
        )
    sentences.append(
        f"For scale: the CHiP paper reports CHAIR reductions relative to DPO of 52.7% (Muffin) and 55.5% "
        f"(LLaVA-1.6-7B) on Object HalBench; this run used {n_seeds} seed(s)."
    )
    return " ".join(sentences)


def method_colours(names: list[str]) -> dict[str, Any]:
    """One colour per method, the same in every plot (matplotlib's tab10 cycle in results order)."""
    palette = plt.get_cmap("tab10").colors
    return {name: palette[i % len(palette)] for i, name in enumerate(names)}


def plot_bars(methods: dict[str, Any], path: Path) -> Path:
    """CHAIR_i (solid) and CHAIR_s (hatched) per method; error bars only where several seeds ran."""
    names = list(methods)
    colours = method_colours(names)
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(names)), 3.6))
    width = 0.38
    for offset, key, hatch in ((-width / 2, "chair_i", None), (width / 2, "chair_s", "//")):
        for i, name in enumerate(names):
            several = len(methods[name].get("seeds", [])) > 1
            error = 100 * methods[name].get(f"{key}_std", 0.0) if several else None
            ax.bar(i + offset, 100 * methods[name][key], width, yerr=error, capsize=3, color=colours[name],
                   hatch=hatch, edgecolor="black", linewidth=0.5)  # fmt: skip
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel("% (lower is better)")
    ax.set_title("Object hallucination on held-out scenes (greedy)")
    ax.legend(handles=[plt.Rectangle((0, 0), 1, 1, facecolor="white", edgecolor="black", hatch=h, label=label)
                       for h, label in ((None, "CHAIR_i"), ("//", "CHAIR_s"))])  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_curves(curves: dict[str, list[dict[str, float]]], path: Path, colours: dict[str, Any]) -> Path:
    keys = (
        ("loss", "loss"),
        ("rewards/margins", "reward margin β·h_text"),
        ("visual/margins", "visual margin β·h_vis"),
    )
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    for ax, (key, title) in zip(axes, keys):
        for name, history in curves.items():
            points = [(h["step"], h[key]) for h in history if key in h]
            if points:
                ax.plot(*zip(*points), marker="o", markersize=2, label=name, color=colours[name])
        ax.set_title(title)
        ax.set_xlabel("step")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no method with this term", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(results: dict[str, Any], output_dir: Path, command: str) -> Path:
    bars = plot_bars(results["methods"], output_dir / "hallucination.png")
    curves = plot_curves(
        results["curves"], output_dir / "training_curves.png", method_colours(list(results["methods"]))
    )
    examples = []
    for name, rows in results["examples"].items():
        examples.append(f"**{name}**\n")
        examples += [
            f"- truth: `{r['truth']}` — greedy: `{r['greedy']}` — sampled: `{r['sampled']}`" for r in rows[:3]
        ]
        examples.append("")
    config = results["config"]
    text = f"""# chip demo report

Command: `{command}`

{verdict(results)}

## Results

{results_table(results["methods"])}

Decoding: {results["decoding"]}. {_spread_note(config["seeds"])}
Every method starts from the same base model and trains on the same {config["num_pairs"]} pairs for
{config["steps"]} steps of {config["batch_size"]} pairs at learning rate {config["learning_rate"]} (matched settings).

{METRICS}

![hallucination]({bars.name})

## Training curves (seed {config["seeds"][0]})

![curves]({curves.name})

## Example captions

{chr(10).join(examples)}
## Timings (seconds)

{json.dumps(results["timings_seconds"])}
"""
    path = output_dir / "report.md"
    path.write_text(text)
    return path
