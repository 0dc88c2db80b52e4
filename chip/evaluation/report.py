"""Markdown tables for one run's metrics and for several runs side by side.

A run is the JSON `chip eval` writes (metrics at the top level, nested dicts for splits and
dimensions). `chip demo`'s `results.json` (`{"methods": {name: metrics}}`) is read as one run per
method, so base / DPO / CHiP can be compared directly. Fractions are shown as percentages;
each comparison column carries its difference from the first run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from chip.errors import DataError
from chip.evaluation.io import read_json

# metric -> lower is better (True), higher is better (False) or neither (None); all are fractions
_FRACTIONS: dict[str, bool | None] = {
    "chair_i": True,
    "chair_s": True,
    "chair_s_refined": True,
    "recall": False,
    "accuracy": False,
    "precision": False,
    "f1": False,
    "yes_ratio": None,
    "chair": True,
    "cover": False,
    "hal": True,
    "cog": True,
    "amber_score": False,
    "hallucination_rate": True,
    "a_acc": False,
    "f_acc": False,
    "q_acc": False,
}
# plain numbers with a direction
_NUMBERS: dict[str, bool | None] = {"score": False, "avg_length": None}


def flatten(metrics: Mapping[str, object], prefix: str = "") -> dict[str, float]:
    """Numeric entries of a metrics dict, nested dicts as dotted names ("splits.random.f1")."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[name] = float(value)
    return flat


def _leaf(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _is_fraction(name: str) -> bool:
    return _leaf(name) in _FRACTIONS


def _label(name: str) -> str:
    direction = {**_FRACTIONS, **_NUMBERS}.get(_leaf(name))
    arrow = {True: " ↓", False: " ↑"}.get(direction, "") if direction is not None else ""
    return f"{name}{' (%)' if _is_fraction(name) else ''}{arrow}"


def _shown(name: str) -> bool:
    # Counts (n, tp, n_mentions, ...) stay in the JSON; the table shows the metrics.
    leaf = _leaf(name)
    return leaf in _FRACTIONS or leaf in _NUMBERS or name.startswith("per_type.")


def _format(name: str, value: float) -> str:
    return f"{value * 100:.1f}" if _is_fraction(name) else f"{value:.2f}"


def _format_delta(name: str, delta: float) -> str:
    scaled = delta * 100 if _is_fraction(name) else delta
    return f"{scaled:+.1f}" if _is_fraction(name) else f"{scaled:+.2f}"


def metrics_table(metrics: Mapping[str, object], title: str | None = None) -> str:
    """A two-column Markdown table of one run's metrics."""
    flat = {k: v for k, v in flatten(metrics).items() if _shown(k)}
    lines = [f"### {title}", ""] if title else []
    lines += ["| metric | value |", "|---|---:|"]
    lines += [f"| {_label(k)} | {_format(k, v)} |" for k, v in flat.items()]
    return "\n".join(lines) + "\n"


def compare_table(runs: Sequence[tuple[str, Mapping[str, object]]]) -> str:
    """Runs side by side; every column after the first shows its difference from the first run."""
    if not runs:
        raise ValueError("nothing to compare")
    flats = [(name, {k: v for k, v in flatten(m).items() if _shown(k)}) for name, m in runs]
    names: list[str] = []
    for _, flat in flats:
        names += [k for k in flat if k not in names]
    base_name, base = flats[0]
    header = ["metric", base_name] + [name for name, _ in flats[1:]]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for metric in names:
        cells = [_label(metric), _format(metric, base[metric]) if metric in base else "–"]
        for _, flat in flats[1:]:
            if metric not in flat:
                cells.append("–")
            elif metric in base:
                delta = _format_delta(metric, flat[metric] - base[metric])
                cells.append(f"{_format(metric, flat[metric])} ({delta})")
            else:
                cells.append(_format(metric, flat[metric]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def load_runs(paths: Sequence[str | Path], names: Sequence[str] | None = None) -> list[tuple[str, dict]]:
    """(name, metrics) per run file; a demo `results.json` contributes one run per method."""
    if names is not None and len(names) != len(paths):
        raise DataError(f"--names gives {len(names)} names for {len(paths)} runs")
    runs: list[tuple[str, dict]] = []
    for index, path in enumerate(paths):
        data = read_json(path)
        if not isinstance(data, dict):
            raise DataError(f"{path}: expected a JSON object of metrics")
        label = names[index] if names else Path(path).stem
        methods = data.get("methods")
        if isinstance(methods, dict):
            runs += [
                (f"{label}:{m}" if len(paths) > 1 else m, v)
                for m, v in methods.items()
                if isinstance(v, dict)
            ]
        else:
            runs.append((label, data))
    return runs
