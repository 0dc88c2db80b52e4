"""Markdown tables for one run's metrics and for several runs side by side.

A run is the JSON `chip eval` writes (metrics at the top level, nested dicts for splits and
dimensions). `chip demo`'s `results.json` (`{"methods": {name: metrics}}`) is read as one run per
method, so base / DPO / CHiP can be compared directly. Runs that share a name (the metrics files
of one folder, or files given the same `--names`) form one column holding several benchmarks;
the table then names each row by benchmark and lists hallucination benchmarks before general
ones. Fractions are shown as percentages; each comparison column carries its difference from the
first run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from chip.errors import DataError
from chip.evaluation.io import read_json
from chip.markup import escape_markdown

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
    "accuracy_plus": False,
    "img_accuracy": False,
}
# plain numbers with a direction
_NUMBERS: dict[str, bool | None] = {
    "score": False,
    "avg_length": None,
    "perception": False,
    "cognition": False,
}
# the order of the sections of a table with several benchmarks
KINDS = ("hallucination", "general")


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
    return f"{escape_markdown(name, underscores=False)}{' (%)' if _is_fraction(name) else ''}{arrow}"


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
    lines = [f"### {escape_markdown(title, underscores=False)}", ""] if title else []
    lines += ["| metric | value |", "|---|---:|"]
    lines += [f"| {_label(k)} | {_format(k, v)} |" for k, v in flat.items()]
    return "\n".join(lines) + "\n"


def _benchmarks_of(metrics: Mapping[str, object]) -> dict[str, Mapping[str, object]]:
    combined = metrics.get("benchmarks")
    if isinstance(combined, Mapping):
        return dict(combined)
    return {str(metrics.get("benchmark", "")): metrics}


def _shown_flat(metrics: Mapping[str, object], prefix: str = "") -> dict[str, float]:
    return {f"{prefix}{k}": v for k, v in flatten(metrics).items() if _shown(k)}


def _rows(
    runs: Sequence[tuple[str, Mapping[str, object]]], kinds: Mapping[str, str]
) -> tuple[list[dict[str, float]], list[tuple[str, list[str]]]]:
    """Each run flattened, and the table's sections: (title, metric names); one untitled section
    when every run holds the same single benchmark."""
    per_run = [_benchmarks_of(m) for _, m in runs]
    benches: list[str] = []
    for run in per_run:
        benches += [b for b in run if b not in benches]
    if len(benches) == 1 and all(len(run) == 1 for run in per_run):
        flats = [_shown_flat(next(iter(run.values()))) for run in per_run]
        names: list[str] = []
        for flat in flats:
            names += [k for k in flat if k not in names]
        return flats, [("", names)]
    flats = [{k: v for b, m in run.items() for k, v in _shown_flat(m, f"{b}.").items()} for run in per_run]

    def kind(bench: str) -> str:
        stated = next((run[bench].get("kind") for run in per_run if bench in run), None)
        return str(stated or kinds.get(bench, KINDS[0]))

    sections = []
    for section in (*KINDS, *sorted({kind(b) for b in benches} - set(KINDS))):
        names = []
        for bench in (b for b in benches if kind(b) == section):
            for flat in flats:
                names += [k for k in flat if k.startswith(f"{bench}.") and k not in names]
        if names:
            sections.append((section, names))
    return flats, sections


def compare_table(
    runs: Sequence[tuple[str, Mapping[str, object]]], kinds: Mapping[str, str] | None = None
) -> str:
    """Runs side by side; every column after the first shows its difference from the first run.

    `kinds` maps benchmark names to what they measure (a metrics file's own "kind" wins), for the
    sections of a table whose columns hold several benchmarks.
    """
    if not runs:
        raise ValueError("nothing to compare")
    flats, sections = _rows(runs, kinds or {})
    base = flats[0]
    header = ["metric"] + [escape_markdown(name, underscores=False) for name, _ in runs]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for title, names in sections:
        if title:
            lines.append(f"| **{escape_markdown(title, underscores=False)}** |" + " |" * (len(header) - 1))
        for metric in names:
            cells = [_label(metric), _format(metric, base[metric]) if metric in base else "–"]
            for flat in flats[1:]:
                if metric not in flat:
                    cells.append("–")
                elif metric in base:
                    delta = _format_delta(metric, flat[metric] - base[metric])
                    cells.append(f"{_format(metric, flat[metric])} ({delta})")
                else:
                    cells.append(_format(metric, flat[metric]))
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _read_object(path: Path) -> dict:
    data = read_json(path)
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object of metrics")
    return data


def _combine(entries: Sequence[tuple[str, dict]]) -> list[tuple[str, dict]]:
    grouped: dict[str, list[dict]] = {}
    for name, metrics in entries:
        grouped.setdefault(name, []).append(metrics)
    runs: list[tuple[str, dict]] = []
    for name, group in grouped.items():
        if len(group) == 1:
            runs.append((name, group[0]))
            continue
        benchmarks: dict[str, dict] = {}
        for metrics in group:
            bench = metrics.get("benchmark")
            if not isinstance(bench, str):
                raise DataError(
                    f"run {name!r}: cannot put metrics without a 'benchmark' name into one column"
                )
            if bench in benchmarks:
                raise DataError(f"run {name!r}: two metrics files of {bench}; give them different --names")
            benchmarks[bench] = metrics
        runs.append((name, {"benchmarks": benchmarks}))
    return runs


def load_runs(paths: Sequence[str | Path], names: Sequence[str] | None = None) -> list[tuple[str, dict]]:
    """(name, metrics) per run: a file is one run (a demo `results.json` one per method), a folder
    one run of all its metrics files; runs with the same name form one run of several benchmarks."""
    if names is not None and len(names) != len(paths):
        raise DataError(f"--names gives {len(names)} names for {len(paths)} runs")
    entries: list[tuple[str, dict]] = []
    for index, path in enumerate(map(Path, paths)):
        label = names[index] if names else (path.name if path.is_dir() else path.stem)
        if path.is_dir():
            files = sorted(path.glob("*.json"))
            if not files:
                raise DataError(f"{path}: no metrics JSON files in this folder")
            for file in files:
                data = _read_object(file)
                if "benchmark" not in data:
                    raise DataError(f"{file}: not a chip eval metrics file (no 'benchmark')")
                entries.append((label, data))
            continue
        data = _read_object(path)
        methods = data.get("methods")
        if isinstance(methods, dict):
            entries += [
                (f"{label}:{m}" if len(paths) > 1 else m, v)
                for m, v in methods.items()
                if isinstance(v, dict)
            ]
        else:
            entries.append((label, data))
    return _combine(entries)
