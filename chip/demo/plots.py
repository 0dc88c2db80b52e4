"""The demo report's PNG plots: every axis labelled, colours explained, one quantity per axis."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

# forest-plot colour of an interval: below 0 (fewer hallucinations than DPO), above 0, spanning 0
VERDICT_COLOURS = {"lower": "tab:green", "higher": "tab:red", "not distinguishable": "tab:grey"}


def method_colours(names: list[str]) -> dict[str, Any]:
    """One colour per method, the same in every plot (matplotlib's tab10 cycle in results order)."""
    palette = plt.get_cmap("tab10").colors
    return {name: palette[i % len(palette)] for i, name in enumerate(names)}


def _verdict(d: dict[str, Any]) -> str:
    if not d["distinguishable"]:
        return "not distinguishable"
    return "lower" if d["difference"] < 0 else "higher"


def plot_forest(results: dict[str, Any], path: Path) -> Path:
    """Each run's CHAIR_i difference to DPO with its 95% CI, one panel per decoding."""
    rows = [
        (key.split(" vs ")[0], diff)
        for key, diff in results.get("comparisons", {}).items()
        if key.endswith(" vs dpo")
    ]
    decodings = [d for d in ("greedy", "sampled") if any(d in diff for _, diff in rows)] or ["greedy"]
    fig, axes = plt.subplots(
        1, len(decodings), figsize=(5.5 * len(decodings), 0.45 * len(rows) + 2.2), squeeze=False
    )
    for ax, decoding in zip(axes[0], decodings):
        for y, (_, diff) in enumerate(rows):
            d = diff.get(decoding)
            if d is None:
                continue
            ax.errorbar(
                100 * d["difference"],
                y,
                xerr=[[100 * (d["difference"] - d["low"])], [100 * (d["high"] - d["difference"])]],
                fmt="o",
                color=VERDICT_COLOURS[_verdict(d)],
                capsize=3,
            )
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_yticks(range(len(rows)), [name for name, _ in rows])
        ax.invert_yaxis()
        ax.set_title(f"{decoding} captions")
        ax.set_xlabel(
            "CHAIR_i minus DPO's CHAIR_i, points\n(dot: estimate; bar: 95% CI; < 0 = fewer hallucinations)"
        )
        ax.set_ylabel("method")
    handles = [
        Line2D([], [], marker="o", linestyle="", color=colour, label=f"CI {label}")
        for label, colour in (
            ("below 0: hallucinates less than DPO", VERDICT_COLOURS["lower"]),
            ("above 0: hallucinates more than DPO", VERDICT_COLOURS["higher"]),
            ("spans 0: not distinguishable", VERDICT_COLOURS["not distinguishable"]),
        )
    ]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# the same quantity for every method of a row; each method's loss is a different objective, so it
# is in results.json but not on a shared axis
CURVE_PANELS = (
    ("rewards/margins", "text margin β·h_text (nats)"),
    ("rewards/accuracies", "pairs with h_text > 0 (fraction)"),
    ("visual/margins", "visual margin β·h_vis (nats)"),
)


def plot_curves(
    curves: dict[str, list[dict[str, float]]],
    path: Path,
    colours: dict[str, Any],
    margin_kinds: dict[str, str],
) -> Path:
    """The text margin, its accuracy and the visual margin along training, one line per method.

    Margins are weighted log-likelihood ratios (changed-segment tokens weigh 1 + λ, image-anchored
    weights multiply that), so methods whose weights differ measure different quantities: one row
    of panels per kind of margin (``margin_kinds``: method -> a label such as "λ = 3").
    """
    groups: dict[str, list[str]] = {}
    for name in curves:
        groups.setdefault(margin_kinds.get(name, "λ = 0"), []).append(name)
    rows = sorted(groups) or ["λ = 0"]
    fig, axes = plt.subplots(len(rows), 3, figsize=(13, 3.6 * len(rows)), squeeze=False)
    for row, kind in zip(axes, rows):
        for ax, (key, label) in zip(row, CURVE_PANELS):
            for name in groups.get(kind, []):
                points = [(h["step"], h[key]) for h in curves[name] if key in h]
                if points:
                    ax.plot(*zip(*points), marker="o", markersize=2, label=name, color=colours[name])
            ax.set_xlabel("optimiser step")
            ax.set_ylabel(label)
            ax.set_title(f"methods whose margins weigh tokens by {kind}", fontsize=9)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7, title="method", title_fontsize=7)
            else:
                ax.text(
                    0.5, 0.5, "not logged by these methods", ha="center", va="center", transform=ax.transAxes
                )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


LONG_PANELS = (
    ("chair_i", "CHAIR_i % (hallucination; lower is better)", "tab:red"),
    ("recall", "recall % (objects named; higher is better)", "tab:blue"),
    ("attribute_accuracy", "attribute accuracy % (higher is better)", "tab:green"),
)


def plot_long_run(long_run: dict[str, Any], path: Path) -> Path:
    """CHAIR_i, recall and attribute accuracy along the long run, each on its own axis."""
    points = long_run["points"]
    steps = [p["step"] for p in points]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, (key, label, colour) in zip(axes, LONG_PANELS):
        ax.plot(steps, [100 * p[key] for p in points], marker="o", color=colour, label=long_run["method"])
        ax.axvline(long_run["default_steps"], color="black", linestyle="--", linewidth=0.8)
        ax.set_xlabel("optimiser step (0 = the base model)")
        ax.set_ylabel(label)
        ax.legend(
            handles=[
                Line2D(
                    [], [], marker="o", color=colour, label=f"{long_run['method']}, seed {long_run['seed']}"
                ),
                Line2D(
                    [],
                    [],
                    color="black",
                    linestyle="--",
                    label=f"default length ({long_run['default_steps']})",
                ),
            ],
            fontsize=7,
        )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
