"""`results.json` and `report.md` (with PNG plots) of a demo run; every number comes from the run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

from chip.files import write_text_atomic
from chip.markup import escape_markdown

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

METRICS = """Metrics (each caption's objects are the world's shape words it names, synonyms folded):

- **CHAIR_i**: mentions of objects absent from the scene / all object mentions (lower is better).
- **CHAIR_s**: captions with at least one absent object / all captions (lower is better).
- **recall**: distinct objects of the scene that the caption names / objects in the scene (higher is better).
- **POPE acc**: yes/no questions "is there a ... ?"; split *random* = every positive question plus the
  negatives about a random absent class, *popular* = plus the most frequent absent class, *adversarial* =
  plus the absent usual partner of a present object (POPE's three splits).
- **yes ratio**: share of questions answered yes (0.5 for a balanced answerer on these questions)."""


def write_results(results: dict[str, Any], output_dir: Path) -> Path:
    """``results.json`` (readable) and ``scene_counts.json`` (the per-scene counts, one line per run)."""
    counts = results.get("scene_counts")
    body = {k: v for k, v in results.items() if k != "scene_counts"}
    path = output_dir / "results.json"
    for target, text in (
        (path, json.dumps(body, indent=1)),
        (output_dir / "scene_counts.json", _counts_json(counts)),
    ):
        if text is not None:
            write_text_atomic(target, text + "\n")
    return path


def _counts_json(counts: dict[str, Any] | None) -> str | None:
    if counts is None:
        return None
    lines = [
        f'  "{decoding}/{name}/{i}": {json.dumps(run, separators=(",", ":"))}'
        for decoding, by_name in counts.items()
        for name, runs in by_name.items()
        for i, run in enumerate(runs)
    ]
    return "{\n" + ",\n".join(lines) + "\n}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def _interval(diff: dict[str, Any]) -> str:
    return f"{100 * diff['difference']:+.1f} [{100 * diff['low']:+.1f}, {100 * diff['high']:+.1f}]"


def _call(diff: dict[str, Any]) -> str:
    if not diff["distinguishable"]:
        return "not distinguishable"
    return "lower" if diff["difference"] < 0 else "higher"


def _seeds(summary: dict[str, Any]) -> int:
    return len(summary["seeds"])


def results_table(results: dict[str, Any]) -> str:
    """One row per method: CHAIR_i with its difference to DPO and the 95% CI, recall, POPE by split."""
    methods, comparisons = results["methods"], results.get("comparisons", {})
    sampled = any("sampled_chair_i" in m for m in methods.values())
    header = "| method | lr | seeds | CHAIR_i % | Δ vs DPO, points [95% CI] | vs DPO | recall %"
    header += " | sampled CHAIR_i % | sampled Δ vs DPO [95% CI]" if sampled else ""
    header += " | POPE acc random % | popular % | adversarial % | yes ratio |"
    lines = [header, "|" + "---|" * (header.count(" | ") + 1)]
    for name, summary in methods.items():
        diff = comparisons.get(f"{name} vs dpo", {})
        greedy = diff.get("greedy")
        row = [
            name,
            f"{results.get('chosen_lr', {}).get(name, '—')}",
            str(_seeds(summary)),
            _pct(summary["chair_i"]),
            _interval(greedy) if greedy else "—",
            _call(greedy) if greedy else "—",
            _pct(summary["recall"]),
        ]
        if sampled:
            row += [
                _pct(summary.get("sampled_chair_i")),
                _interval(diff["sampled"]) if "sampled" in diff else "—",
            ]
        row += [
            _pct(summary["pope_random"]),
            _pct(summary["pope_popular"]),
            _pct(summary["pope_adversarial"]),
            f"{summary['pope_yes_ratio']:.2f}",
        ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def comparisons_table(results: dict[str, Any], names: list[str] | None = None) -> str:
    lines = [
        "| comparison (A vs B) | greedy CHAIR_i(A) − CHAIR_i(B), points [95% CI] | call | sampled [95% CI] | call |",
        "|---|---|---|---|---|",
    ]
    for key, diff in results.get("comparisons", {}).items():
        if names is not None and key not in names:
            continue
        sampled = diff.get("sampled")
        lines.append(
            f"| {key} | {_interval(diff['greedy'])} | {_call(diff['greedy'])} | "
            f"{_interval(sampled) if sampled else '—'} | {_call(sampled) if sampled else '—'} |"
        )
    return "\n".join(lines)


def grids_table(results: dict[str, Any]) -> str:
    grids = {name: grid for name, grid in results.get("grids", {}).items() if grid}
    if not grids:
        return "No learning-rate grid in this run: every method used the same learning rate."
    lrs = sorted({lr for grid in grids.values() for lr in grid}, key=float)
    lines = [
        "| method | " + " | ".join(f"lr {lr}: CHAIR_i % / recall %" for lr in lrs) + " | chosen |",
        "|" + "---|" * (len(lrs) + 2),
    ]
    for name, grid in grids.items():
        cells = [
            f"{_pct(grid[lr]['chair_i'])} / {_pct(grid[lr]['recall'])}" if lr in grid else "—" for lr in lrs
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {results['chosen_lr'][name]:g} |")
    return "\n".join(lines)


def shortcut_table(shortcut: dict[str, Any]) -> str:
    lines = [
        "| model | mean h_vis, objects present (nats) | mean h_vis, objects removed | h_vis > 0, present | h_vis > 0, removed |",
        "|---|---|---|---|---|",
    ]
    for name, m in shortcut["margins"].items():
        lines.append(
            f"| {name} | {m['h_vis_with_objects']:.2f} | {m['h_vis_objects_removed']:.2f} | "
            f"{_pct(m['share_positive_with_objects'])}% | {_pct(m['share_positive_objects_removed'])}% |"
        )
    return "\n".join(lines)


def answer(results: dict[str, Any]) -> str:
    """The report's first paragraph: does CHiP beat DPO, and which part helps; words follow the CIs."""
    comparisons, methods = results.get("comparisons", {}), results["methods"]
    config = results["config"]
    sentences = []
    if not results.get("ranks_methods"):
        sentences.append(
            f"**Smoke run: it cannot rank methods** ({len(config['seeds'])} seed, learning rate "
            f"{', '.join(f'{lr:g}' for lr in config['lr_grid'])} for every method, no validation choice); "
            "run `chip demo` (full) for an answer. The intervals below cover test scenes and this seed only."
        )
    chip_dpo = comparisons.get("chip vs dpo")
    if chip_dpo:
        g = chip_dpo["greedy"]
        verdict = "**Not distinguishable**"
        if g["distinguishable"]:
            verdict = "**Yes**" if g["difference"] < 0 else "**No, it is worse**"
        sentence = "Does CHiP beat DPO here? " + verdict
        sentence += (
            f": greedy CHAIR_i {_pct(methods['chip']['chair_i'])}% vs {_pct(methods['dpo']['chair_i'])}%, "
            f"difference {_interval(g)} points (95% paired bootstrap CI over "
            f"{config['test_scenes']} test scenes and the seeds)"
        )
        if g.get("relative") is not None:
            sentence += f", a relative change of {100 * g['relative']:+.0f}% (the paper: −52.7% / −55.5%)"
        if "sampled" in chip_dpo:
            sentence += f"; sampled at T = 1: {_interval(chip_dpo['sampled'])} ({_call(chip_dpo['sampled'])})"
        sentences.append(sentence + ".")
    else:
        sentences.append("CHiP and DPO were not both run, so there is no comparison.")
    parts = []
    for name in ("dpo+segment", "dpo+token", "dpo+visual"):
        diff = comparisons.get(f"{name} vs dpo")
        if diff:
            parts.append(f"{name} {_interval(diff['greedy'])} ({_call(diff['greedy'])})")
    if parts:
        sentences.append(
            "Which part helps, each added to DPO alone (greedy CHAIR_i difference to DPO, points): "
            + "; ".join(parts)
            + "."
        )
    vis = [
        f"{k} {_interval(d['greedy'])} ({_call(d['greedy'])})"
        for k, d in comparisons.items()
        if k.startswith(("chip-", "dpo+visual-")) and not k.endswith("vs dpo")
    ]
    if vis:
        sentences.append("Visual-term variants against the method they modify: " + "; ".join(vis) + ".")
    base = methods.get("base")
    if base:
        sentences.append(
            f"The base answers existence questions from the image: POPE accuracy {_pct(base['pope_random'])}% "
            f"(random negatives), {_pct(base['pope_popular'])}% (popular), "
            f"{_pct(base['pope_adversarial'])}% (adversarial), and hallucinates in captions "
            f"(CHAIR_i {_pct(base['chair_i'])}% at recall {_pct(base['recall'])}%)."
        )
    return " ".join(sentences)


def method_colours(names: list[str]) -> dict[str, Any]:
    """One colour per method, the same in every plot (matplotlib's tab10 cycle in results order)."""
    palette = plt.get_cmap("tab10").colors
    return {name: palette[i % len(palette)] for i, name in enumerate(names)}


def plot_forest(results: dict[str, Any], path: Path) -> Path:
    """Each method's CHAIR_i difference to DPO with its 95% CI (greedy and sampled)."""
    rows = [
        (key.split(" vs ")[0], diff)
        for key, diff in results.get("comparisons", {}).items()
        if key.endswith(" vs dpo")
    ]
    decodings = [d for d in ("greedy", "sampled") if any(d in diff for _, diff in rows)]
    fig, axes = plt.subplots(
        1,
        max(1, len(decodings)),
        figsize=(5.5 * max(1, len(decodings)), 0.45 * len(rows) + 1.5),
        squeeze=False,
    )
    for ax, decoding in zip(axes[0], decodings):
        for y, (_, diff) in enumerate(rows):
            d = diff.get(decoding)
            if d is None:
                continue
            colour = (
                "tab:green"
                if d["distinguishable"] and d["difference"] < 0
                else ("tab:red" if d["distinguishable"] else "tab:grey")
            )
            ax.errorbar(
                100 * d["difference"],
                y,
                xerr=[[100 * (d["difference"] - d["low"])], [100 * (d["high"] - d["difference"])]],
                fmt="o",
                color=colour,
                capsize=3,
            )
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_yticks(range(len(rows)), [name for name, _ in rows])
        ax.invert_yaxis()
        ax.set_xlabel(f"{decoding} CHAIR_i − DPO's, points (95% CI; < 0 is better)")
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
            ax.legend(fontsize=6)
        else:
            ax.text(0.5, 0.5, "no method with this term", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def example_lines(examples: dict[str, list[dict[str, str]]]) -> list[str]:
    """The report's example captions per method, escaped: they are model output."""
    lines = []
    for name, rows in examples.items():
        lines.append(f"**{escape_markdown(name)}**\n")
        lines += [
            f"- truth: {escape_markdown(r['truth'])} — greedy: {escape_markdown(r['greedy'])}"
            for r in rows[:3]
        ]
        lines.append("")
    return lines


def write_report(results: dict[str, Any], output_dir: Path, command: str) -> Path:
    forest = plot_forest(results, output_dir / "forest.png")
    curves = plot_curves(
        results["curves"], output_dir / "training_curves.png", method_colours(list(results["methods"]))
    )
    examples = example_lines(results["examples"])
    config = results["config"]
    shortcut_text = _shortcut_section(results.get("shortcut"), config["seeds"][0])
    text = f"""# chip demo report

Command: `{command}`

{answer(results)}

## Results on {config["test_scenes"]} test scenes

{results_table(results)}

Δ: the method's pooled CHAIR_i minus DPO's, in points, with a 95% paired bootstrap interval
({config["resamples"]} replicates resampling the test scenes, and each method's seeds); "not distinguishable" when
it spans 0. Decoding: {results["decoding"]}. Every method starts from the same base and trains on the same
{config["num_pairs"]} pairs for {config["steps"]} steps of {config["batch_size"]} pairs (η = {config["sft_weight"]});
lr: the learning rate chosen on validation scenes (variants reuse their core method's).

![forest plot]({forest.name})

{METRICS}

## All comparisons

{comparisons_table(results)}

## Learning-rate choice (validation split, {config["val_scenes"]} scenes, seed {config["seeds"][0]})

Rule: the lowest validation greedy CHAIR_i among learning rates with validation recall ≥ {_pct(config["min_val_recall"])}%.

{grids_table(results)}

{shortcut_text}
## Training curves (first seed at the chosen lr)

![curves]({curves.name})

## Example captions (test scenes)

{chr(10).join(examples)}
## Timings (seconds)

{json.dumps(results["timings_seconds"])}
"""
    path = output_dir / "report.md"
    write_text_atomic(path, text)
    return path


def _shortcut_section(shortcut: dict[str, Any] | None, seed: int) -> str:
    """The report's section on the noise-shortcut hypothesis (empty when the analysis did not run)."""
    if not shortcut:
        return ""
    return f"""## Is the visual margin a noise detector? (seed {seed}, {shortcut["scenes"]} held-out scenes)

h_vis = [log π(y|v) − log π_ref(y|v)] − [log π(y|ṽ) − log π_ref(y|ṽ)] of the faithful caption, reference =
the base, ṽ = diffusion noise at step {shortcut["noise_step"]}; "objects removed" = the same scenes with background and
pixel noise only, caption unchanged. A margin that is as large without the objects comes from recognising the noise,
not from the caption's content.

{shortcut_table(shortcut)}

A logistic probe on the base model's pooled image features tells clean from noised images apart with held-out
accuracy {_pct(shortcut["noise_probe_accuracy"])}%.
"""
