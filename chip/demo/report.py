"""`results.json` and `report.md` (with PNG plots) of a demo run; every number comes from the run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from chip.demo.cost import pairs_of
from chip.demo.glossary import glossary
from chip.demo.methods import RIVALS, VARIANTS, method_settings
from chip.demo.plots import method_colours, plot_curves, plot_forest, plot_long_run
from chip.demo.shortcut import shortcut_section
from chip.files import write_text_atomic
from chip.losses import ChipLossConfig
from chip.markup import escape_markdown
from chip.training.methods import preset


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


def _ranks(results: dict[str, Any]) -> bool:
    return bool(results.get("ranks_methods"))


def _cost(results: dict[str, Any], name: str, metric: str) -> dict[str, Any] | None:
    return results.get("cost", {}).get(name, {}).get(metric)


def results_table(results: dict[str, Any]) -> str:
    """One row per run: CHAIR_i with Δ to DPO, recall, attribute accuracy with Δ to the base, POPE."""
    methods, comparisons = results["methods"], results.get("comparisons", {})
    ranks = _ranks(results)
    sampled = any("sampled_chair_i" in m for m in methods.values())
    header = "| method" + (" | lr | seeds" if ranks else "") + " | CHAIR_i % | Δ vs DPO [95% CI] | recall %"
    header += " | sampled CHAIR_i % | sampled Δ vs DPO [95% CI]" if sampled else ""
    header += " | attribute acc % | Δ attribute vs base [95% CI]"
    header += " | POPE acc random % | popular % | adversarial % | yes ratio |"
    lines = [header, "|" + "---|" * (header.count(" | ") + 1)]
    for name, summary in methods.items():
        diff = comparisons.get(f"{name} vs dpo", {})
        greedy, attribute = diff.get("greedy"), _cost(results, name, "attribute_accuracy")
        row = [name]
        if ranks:
            row += [f"{results.get('chosen_lr', {}).get(name, '—')}", str(_seeds(summary))]
        row += [_pct(summary["chair_i"]), _verdict_cell(greedy), _pct(summary["recall"])]
        if sampled:
            row += [_pct(summary.get("sampled_chair_i")), _verdict_cell(diff.get("sampled"))]
        row += [_pct(summary.get("attribute_accuracy")), _verdict_cell(attribute)]
        row += [
            _pct(summary["pope_random"]),
            _pct(summary["pope_popular"]),
            _pct(summary["pope_adversarial"]),
            f"{summary['pope_yes_ratio']:.2f}",
        ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _verdict_cell(diff: dict[str, Any] | None) -> str:
    if not diff:
        return "—"
    return _interval(diff) + ("" if diff["distinguishable"] else " n.d.")


COST_KINDS = ("colour", "position", "size", "count")


def cost_table(results: dict[str, Any]) -> str:
    """Per run, each metric minus the base's with its CI, and attribute accuracy per kind of question."""
    methods = results["methods"]
    lines = [
        "| method | Δ CHAIR_i vs base [95% CI] | Δ recall vs base [95% CI] | Δ attribute acc vs base [95% CI] | "
        + " | ".join(f"{kind} %" for kind in COST_KINDS)
        + " |",
        "|" + "---|" * (4 + len(COST_KINDS)),
    ]
    for name, summary in methods.items():
        cells = [_verdict_cell(_cost(results, name, m)) for m in ("chair_i", "recall", "attribute_accuracy")]
        kinds = [_pct(summary.get(f"attribute_{kind}")) for kind in COST_KINDS]
        lines.append(f"| {name} | " + " | ".join(cells + kinds) + " |")
    return "\n".join(lines)


def cost_sentence(results: dict[str, Any], name: str) -> str | None:
    """ "X lowered CHAIR_i by A at a cost of B points of attribute accuracy and C of recall", from the CIs."""
    chair, attribute, recall = (_cost(results, name, m) for m in ("chair_i", "attribute_accuracy", "recall"))
    if not (chair and attribute and recall):
        return None
    label = {"chip": "CHiP", "dpo": "DPO"}.get(name, name)
    verb = "lowered" if chair["difference"] < 0 else "raised"
    sign = -1 if chair["difference"] < 0 else 1
    return (
        f"{label} {verb} CHAIR_i by {_signed(chair, sign)} points at a cost of {_signed(attribute, -1)} points of "
        f"attribute accuracy and {_signed(recall, -1)} of recall (against the base, 95% CIs; a negative cost is a gain)."
    )


def _signed(diff: dict[str, Any], sign: int) -> str:
    """``sign`` × the difference with its interval, e.g. "2.1 [0.8, 3.4]" (n.d. when it spans 0)."""
    ends = sorted((sign * 100 * diff["low"], sign * 100 * diff["high"]))
    text = f"{sign * 100 * diff['difference']:.1f} [{ends[0]:.1f}, {ends[1]:.1f}]"
    return text + ("" if diff["distinguishable"] else " n.d.")


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


def answer(results: dict[str, Any]) -> str:
    """The report's answer: does CHiP beat DPO, which part helps, what it costs; words follow the CIs."""
    comparisons, methods = results.get("comparisons", {}), results["methods"]
    config = results["config"]
    several = len(config["seeds"]) > 1
    sentences = []
    if not _ranks(results):
        sentences.append(
            f"**Smoke run: it cannot rank methods** (one seed, learning rate "
            f"{', '.join(f'{lr:g}' for lr in config['lr_grid'])} for every method, no validation choice); "
            "run `chip demo` (full) for an answer. Its intervals cover the test scenes only, not training noise."
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
            f"{config['test_scenes']} test scenes{' and the seeds' if several else ''})"
        )
        if g.get("relative") is not None:
            sentence += f", a relative change of {100 * g['relative']:+.0f}% (the paper: −52.7% / −55.5%)"
        if "sampled" in chip_dpo:
            sentence += f"; sampled at T = 1: {_interval(chip_dpo['sampled'])} ({_call(chip_dpo['sampled'])})"
        sentences.append(sentence + ".")
    else:
        sentences.append("CHiP and DPO were not both run, so there is no comparison.")
    sentences += [s for s in (cost_sentence(results, "chip"), cost_sentence(results, "dpo")) if s]
    parts = [
        f"{name} {_interval(diff['greedy'])} ({_call(diff['greedy'])})"
        for name in ("dpo+segment", "dpo+token", "dpo+visual")
        if (diff := comparisons.get(f"{name} vs dpo"))
    ]
    if parts:
        sentences.append(
            "Which part helps, each added to DPO alone (greedy CHAIR_i difference to DPO, points): "
            + "; ".join(parts)
            + "."
        )
    rivals = [
        f"{name} {_interval(d['greedy'])} ({_call(d['greedy'])})"
        for name in RIVALS
        if (d := comparisons.get(f"{name} vs chip"))
    ]
    if rivals:
        sentences.append(
            "CHiP's rivals against CHiP (greedy CHAIR_i difference, points): " + "; ".join(rivals) + "."
        )
    vis = [
        f"{k} {_interval(d['greedy'])} ({_call(d['greedy'])})"
        for k, d in comparisons.items()
        if k.split(" vs ")[0] in VARIANTS and not k.endswith("vs dpo")
    ]
    if vis:
        sentences.append("Visual-term variants against the method they modify: " + "; ".join(vis) + ".")
    for name in ("chip", "dpo+segment"):
        on_policy, built_in = (
            comparisons.get(f"{name}@onpolicy vs dpo@onpolicy"),
            comparisons.get(f"{name} vs dpo"),
        )
        if on_policy:
            sentences.append(
                f"On the base's own pairs (@onpolicy), {name} vs DPO: {_interval(on_policy['greedy'])} "
                f"({_call(on_policy['greedy'])}), against "
                f"{_interval(built_in['greedy']) if built_in else 'no comparison'} on the built-in pairs."
            )
    base = methods.get("base")
    if base:
        sentences.append(
            f"The base answers existence questions from the image: POPE accuracy {_pct(base['pope_random'])}% "
            f"(random negatives), {_pct(base['pope_popular'])}% (popular), "
            f"{_pct(base['pope_adversarial'])}% (adversarial), attribute accuracy "
            f"{_pct(base.get('attribute_accuracy'))}%, and hallucinates in captions "
            f"(CHAIR_i {_pct(base['chair_i'])}% at recall {_pct(base['recall'])}%)."
        )
    return " ".join(sentences)


def margin_kind(name: str) -> str:
    """How a demo run's margins weigh tokens: "λ = <segment weight>", plus image-anchored weights.

    From its `chip train` overrides, else its `--method` preset, else `ChipLossConfig`'s defaults.
    """
    settings = method_settings(pairs_of(name)[0])
    resolved = {**(preset(settings["method"]) if "method" in settings else {}), **settings}
    lam = float(resolved.get("segment_weight", ChipLossConfig().segment_weight))
    anchored = resolved.get("image_anchored_weights", "off") != "off"
    return f"λ = {lam:g}" + (" × image-anchored weights" if anchored else "")


def timings_table(timings: dict[str, float]) -> str:
    """Wall seconds per phase of this process (a phase whose runs were cached takes about 0)."""
    lines = ["| phase | wall time, s |", "|---|---:|"]
    lines += [f"| {phase} | {seconds:.0f} |" for phase, seconds in timings.items()]
    lines += [
        "",
        "base: training (or loading) the base; eval_base: its test measurement; a method's name: its "
        "training runs and their measurements; onpolicy_pairs: sampling and judging the base's captions; "
        "long_run: the long run and its checkpoints; shortcut: the visual-margin analysis; total: the whole command.",
    ]
    return "\n".join(lines)


def _on_policy_section(results: dict[str, Any]) -> str:
    report = results.get("onpolicy_pairs")
    if not report:
        return ""
    samples, pairs, dropped = report["samples"], report["pairs"], report["dropped"]["prompts"]
    keys = [k for k in results.get("comparisons", {}) if "@onpolicy" in k]
    reasons = ", ".join(f"{reason} {count}" for reason, count in dropped.items() if count)
    return f"""## On-policy pairs (the base's own captions, judged by the world)

`chip pairs` captioned {report["inputs"]["prompts"]} scenes of a split of their own {samples["drawn"] // max(1, report["inputs"]["prompts"])} times
at T = 1 with the base; {_pct(samples["hallucination_rate"])}% of the captions named an absent object. It kept
{pairs["kept"]} pairs from {pairs["prompts_with_pairs"]} scenes (chosen: {pairs["chosen_hallucinations_mean"]:.2f} hallucinations on
average, rejected: {pairs["rejected_hallucinations_mean"]:.2f}); scenes without a pair: {reasons or "none"}. The @onpolicy runs
train on these with the same steps, batch{", seeds and learning-rate choice" if _ranks(results) else " and learning rate"} as on the built-in pairs.

{comparisons_table(results, keys)}
"""


def _long_section(results: dict[str, Any], output_dir: Path) -> str:
    long_run = results.get("long_run")
    if not long_run:
        return ""
    plot = plot_long_run(long_run, output_dir / "long_run.png")
    rows = "\n".join(
        f"| {p['step']} | {_pct(p['chair_i'])} | {_pct(p['recall'])} | {_pct(p['attribute_accuracy'])} |"
        for p in long_run["points"]
    )
    return f"""## Longer training: does the cost grow? ({long_run["method"]}, seed {long_run["seed"]}, lr {long_run["lr"]:g})

The same run trained for {long_run["steps"]} steps ({long_run["steps"] // long_run["default_steps"]}× the default
{long_run["default_steps"]}; the cosine schedule spans the whole run), each checkpoint measured on the test scenes with greedy
decoding. Step 0 is the base. One seed, no intervals.

![long run]({plot.name})

| step | CHAIR_i % | recall % | attribute accuracy % |
|---|---|---|---|
{rows}
"""


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
        results["curves"],
        output_dir / "training_curves.png",
        method_colours(list(results["methods"])),
        {name: margin_kind(name) for name in results["curves"]},
    )
    examples = example_lines(results["examples"])
    config = results["config"]
    ranks = _ranks(results)
    grid = ""
    if ranks:
        grid = f"""## Learning-rate choice (validation split, {config["val_scenes"]} scenes, seed {config["seeds"][0]})

Rule: the lowest validation greedy CHAIR_i among learning rates with validation recall ≥ {_pct(config["min_val_recall"])}%.

{grids_table(results)}
"""
    protocol = (
        "lr: the learning rate chosen on validation scenes (variants reuse their core method's)."
        if ranks
        else f"All at learning rate {config['lr_grid'][0]:g}, seed {config['seeds'][0]}."
    )
    text = f"""# chip demo report

Command: `{command}`

{glossary(results)}

## Answer

{answer(results)}

## Results on {config["test_scenes"]} test scenes

{results_table(results)}

Every method starts from the same base and trains on the same {config["num_pairs"]} pairs for {config["steps"]} steps of
{config["batch_size"]} pairs (η = {config["sft_weight"]}). {protocol} CHAIR_i and recall come from greedy captions,
the sampled columns from {config["eval_samples"]} captions per scene at T = 1; POPE and attribute questions are answered greedily.

![forest plot]({forest.name})

## What it costs: each run against the base

{cost_table(results)}

{_long_section(results, output_dir)}
{_on_policy_section(results)}
## All comparisons (greedy and sampled CHAIR_i)

{comparisons_table(results)}

{grid}
{shortcut_section(results.get("shortcut"), config["seeds"][0])}
## Training curves ({"first seed at the chosen lr" if ranks else "seed " + str(config["seeds"][0])})

![curves]({curves.name})

## Example captions (test scenes)

{chr(10).join(examples)}
## Timings

{timings_table(results["timings_seconds"])}
"""
    path = output_dir / "report.md"
    write_text_atomic(path, text)
    return path
