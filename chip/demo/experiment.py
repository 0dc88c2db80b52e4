"""The demo experiment: base model -> preference pairs -> DPO, the CHiP ablations and CHiP -> eval.

Every core method is one row of `METHODS`: a set of `ChipConfig` overrides applied to the same
base model, the same pairs, steps, batch and seeds (matched settings, unlike the published
baselines; docs/method.md). Each gets the same tuning budget: its learning rate is chosen from
`DemoConfig.lr_grid` on validation scenes (seed 0), and its results are measured on a separate test
split at that lr on every seed. `VARIANTS` (`chip.demo.methods`) change the visual term of a core
method and reuse its learning rate. Training goes through `chip.training.cli.run_training`, the
exact path of `chip train`. Evaluation (`chip.demo.model_metrics`) captions the test
scenes (greedy, and sampled at T = 1) and answers their yes/no questions; per-scene counts go to
`chip.demo.stats` for paired bootstrap intervals of every difference that the report states.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from transformers import ProgressCallback

from chip.demo.base import BaseModelConfig, train_base_model
from chip.demo.cost import ON_POLICY, compare_all, cost_comparisons, long_training, on_policy_name, pairs_of
from chip.demo.methods import METHODS, MULTI_REJECTED, QUICK_METHODS, VARIANTS, method_settings, tuned_as
from chip.demo.model_metrics import evaluate_model, validate_model
from chip.demo.onpolicy import write_on_policy_pairs
from chip.demo.pairs import PairsConfig, write_preference_pairs
from chip.demo.world import make_scenes


@dataclass
class DemoConfig:
    """Sizes of one demo run; `quick()` is a ~3-minute smoke run on 2 CPU cores, `full()` ~25 minutes."""

    base: BaseModelConfig = field(default_factory=BaseModelConfig.quick)  # the supervised base
    methods: tuple[str, ...] = QUICK_METHODS  # core methods: tuned on validation, run on every seed
    variants: tuple[str, ...] = ()  # visual-term variants: chosen lr of their core method, `variant_seeds`
    seeds: tuple[int, ...] = (0,)  # training seeds of each core method at its chosen lr
    variant_seeds: tuple[int, ...] = (0,)  # training seeds of each variant
    lr_grid: tuple[float, ...] = (1e-4,)  # learning rates tried per core method (seed 0, validation scenes)
    min_val_recall: float = 0.75  # an lr whose validation recall falls below this is not chosen
    num_pairs: int = 1024  # preference pairs drawn from the world's "pairs" split
    rejected_per_pair: int = 3  # rejected captions per row of the pairs `chip-multi` trains on
    steps: int = 60  # optimiser steps per run
    batch_size: int = 16  # pairs per step
    sft_weight: float = 1.0  # η, NLL of the chosen caption, for every method: keeps captions from shrinking
    val_scenes: int = 0  # validation scenes ("val" split) for the lr choice; 0 = no choice (one lr)
    test_scenes: int = 300  # test scenes ("eval" split), captioned greedily and asked their questions
    eval_samples: int = 2  # sampled captions per test scene at T = 1 (0 = greedy only)
    resamples: int = 2000  # bootstrap replicates per comparison
    analysis_scenes: int = 0  # scenes of the visual-margin / noise-probe analysis (0 = skip it)
    onpolicy_methods: tuple[str, ...] = QUICK_METHODS  # core methods also trained on the base's own pairs
    onpolicy_samples: int = 4  # captions per scene at T = 1 that `chip pairs` judges
    long_method: str = "chip"  # the core method whose first seed is also trained `long_factor` times longer
    long_factor: int = 3  # 0 = no long run
    long_every: int = 30  # steps between the long run's evaluated checkpoints

    @classmethod
    def quick(cls) -> DemoConfig:
        return cls()

    @classmethod
    def full(cls) -> DemoConfig:
        return cls(
            base=BaseModelConfig.full(),
            methods=tuple(METHODS),
            variants=tuple(VARIANTS),
            seeds=(0, 1, 2, 3, 4),
            variant_seeds=(0, 1, 2, 3, 4),
            lr_grid=(5e-5, 1e-4, 2e-4),
            val_scenes=300,
            test_scenes=1000,
            analysis_scenes=200,
            onpolicy_methods=("dpo", "dpo+segment", "chip"),
            long_factor=5,
        )

    @property
    def ranks_methods(self) -> bool:
        """Whether this run can rank methods: several seeds and a tuned learning rate."""
        return len(self.seeds) > 1 and len(self.lr_grid) > 1 and self.val_scenes > 0


class _QuietProgress(ProgressCallback):
    """The Trainer's progress bar, labelled with the method, without a printed dict per logging step."""

    def __init__(self, label: str):
        super().__init__()
        self.label = label

    def on_train_begin(self, args, state, control, **kwargs):
        super().on_train_begin(args, state, control, **kwargs)
        if self.training_bar is not None:
            self.training_bar.set_description(self.label)

    def on_log(self, args, state, control, logs=None, **kwargs):
        return control


def train_method(
    name: str,
    seed: int,
    learning_rate: float,
    base_path: Path,
    pairs: Path,
    out: Path,
    config: DemoConfig,
    overrides: dict[str, Any] | None = None,
) -> Path:
    """Train one method from the base on the pairs; returns the output folder (skips a finished one).

    ``overrides`` replace `chip train` settings (the long run's steps and checkpoints).
    """
    from chip.training.cli import parse_config, run_training

    if (out / "trainer_state.json").exists():
        return out
    values: dict[str, Any] = {
        "model_name_or_path": base_path,
        "dataset": pairs,
        "output_dir": out,
        "seed": seed,
        "max_steps": config.steps,
        "per_device_train_batch_size": config.batch_size,
        "learning_rate": learning_rate,
        "lr_scheduler_type": "cosine",
        "warmup_steps": 0.1,
        "logging_steps": 5,
        "save_strategy": "no",
        "report_to": "none",
        "max_length": 128,
        "dataloader_num_workers": 0,
        "log_level": "warning",
        "sft_weight": config.sft_weight,
        **method_settings(pairs_of(name)[0]),
        **(overrides or {}),
    }
    argv = [token for key, value in values.items() for token in (f"--{key}", str(value))]
    label = f"train {name} seed {seed} lr {learning_rate:g}"
    run_training(parse_config(argv), callbacks=[_QuietProgress(label)], replace_progress=True)
    return out


def headline(metrics: dict[str, Any]) -> dict[str, float]:
    """The per-run numbers of results.json.

    ``chair_i``/``chair_s``/``recall`` use greedy decoding (`chip eval`'s default); ``sampled_*`` the
    T = 1 samples, which show hallucinations greedy decoding hides; ``pope_*`` greedy yes/no
    (``pope_accuracy`` over all questions, ``pope_<split>`` the accuracy of POPE's three splits).
    """
    greedy, pope = metrics["greedy"], metrics["pope"]
    out = {"chair_i": greedy["chair_i"], "chair_s": greedy["chair_s"], "recall": greedy["recall"]}
    if "sampled" in metrics:
        sampled = metrics["sampled"]
        out |= {
            "sampled_chair_i": sampled["chair_i"],
            "sampled_chair_s": sampled["chair_s"],
            "sampled_recall": sampled["recall"],
        }
    out |= {"pope_accuracy": pope["accuracy"], "pope_f1": pope["f1"], "pope_yes_ratio": pope["yes_ratio"]}
    out |= {f"pope_{split}": pope[split]["accuracy"] for split in ("random", "popular", "adversarial")}
    attributes = metrics["attributes"]
    out |= {"attribute_accuracy": attributes["accuracy"]}
    out |= {
        f"attribute_{kind}": attributes[kind]
        for kind in ("colour", "position", "size", "count")
        if kind in attributes
    }
    return out


def summarise(per_seed: list[dict[str, float]]) -> dict[str, Any]:
    """Mean of every headline number across seeds, with its standard deviation and the raw values."""
    out: dict[str, Any] = {}
    for key in per_seed[0]:
        values = [run[key] for run in per_seed]
        out[key] = statistics.fmean(values)
        out[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    out["seeds"] = per_seed
    return out


def choose_lr(grid: dict[float, dict[str, float]], min_recall: float) -> float:
    """The validation rule: lowest greedy CHAIR_i among learning rates whose recall ≥ ``min_recall``.

    Without a recall floor preference training "wins" by describing less (docs/demo.md); when no lr
    keeps the floor, the one with the highest recall is taken. Ties go to the smaller lr.
    """
    kept = {lr: m for lr, m in grid.items() if m["recall"] >= min_recall}
    if not kept:
        return max(sorted(grid), key=lambda lr: grid[lr]["recall"])
    return min(sorted(kept), key=lambda lr: kept[lr]["chair_i"])


def run_experiment(config: DemoConfig, output_dir: Path, cache_dir: Path) -> dict[str, Any]:
    """All phases; returns what results.json holds. Finished runs in ``output_dir`` are reused."""
    output_dir.mkdir(parents=True, exist_ok=True)
    clock = time.perf_counter()
    base_path = train_base_model(config.base, cache_dir)
    experiment = _Experiment(config, output_dir, base_path)
    experiment.timings["base"] = time.perf_counter() - clock
    experiment.timed(
        "eval_base", lambda: experiment.record("base", [experiment.evaluate("base", base_path, 0)])
    )
    for name in config.methods:
        experiment.timed(name, lambda name=name: experiment.run_method(name))
    for name in config.variants:
        experiment.timed(name, lambda name=name: experiment.run_variant(name))
    if config.onpolicy_methods:
        experiment.timed("onpolicy_pairs", experiment.on_policy_pairs)
    for name in config.onpolicy_methods if experiment.results.get("onpolicy_pairs_kept") else ():
        experiment.timed(on_policy_name(name), lambda name=name: experiment.run_method(on_policy_name(name)))
    if config.long_factor and config.long_method in config.methods:
        experiment.timed("long_run", experiment.long_run)
    return experiment.finish()


class _Experiment:
    """The state of one demo run: scenes, pairs, per-method results and per-scene counts."""

    def __init__(self, config: DemoConfig, output_dir: Path, base_path: Path):
        self.config, self.base_path, self.runs_dir = config, base_path, output_dir / "runs"
        self.pairs = output_dir / "pairs" / "pairs.jsonl"
        self.onpolicy_pairs = output_dir / "pairs-onpolicy" / "pairs.jsonl"
        if not self.pairs.exists():
            write_preference_pairs(config.base.world, self.pairs.parent, config.num_pairs, PairsConfig())
        print(f"pairs: {config.num_pairs} preference pairs -> {self.pairs}")
        self.multi_pairs = output_dir / "pairs-multi" / "pairs.jsonl"
        if (
            any(pairs_of(name)[0] in MULTI_REJECTED for name in config.methods)
            and not self.multi_pairs.exists()
        ):
            multi = PairsConfig(rejected_per_pair=config.rejected_per_pair)
            write_preference_pairs(config.base.world, self.multi_pairs.parent, config.num_pairs, multi)
            print(f"pairs with up to {config.rejected_per_pair} rejected captions each -> {self.multi_pairs}")
        self.val_scenes = make_scenes(config.base.world, "val", config.val_scenes)
        self.test_scenes = make_scenes(config.base.world, "eval", config.test_scenes)
        self.results: dict[str, Any] = {
            "methods": {},
            "examples": {},
            "curves": {},
            "grids": {},
            "chosen_lr": {},
        }
        # per test scene and run: greedy / sampled (hallucinated, mentions), recall (named, truth),
        # attributes (right answers, questions)
        self.counts: dict[str, dict[str, list[Any]]] = {
            "greedy": {},
            "sampled": {},
            "recall": {},
            "attributes": {},
        }
        self.timings: dict[str, float] = {}

    def timed(self, key: str, phase) -> None:
        clock = time.perf_counter()
        phase()
        self.timings[key] = time.perf_counter() - clock

    def evaluate(self, name: str, path: Path, seed: int) -> dict[str, Any]:
        return evaluate_model(
            path, self.test_scenes, self.config.eval_samples, seed, f"test {name} seed {seed}"
        )

    def record(self, name: str, runs: list[dict[str, Any]]) -> None:
        self.results["methods"][name] = summarise([headline(m) for m in runs])
        self.results["examples"][name] = runs[0]["examples"]
        self.counts["greedy"][name] = [m["counts"] for m in runs]
        self.counts["recall"][name] = [m["recall_counts"] for m in runs]
        self.counts["attributes"][name] = [m["attributes"]["counts"] for m in runs]
        if self.config.eval_samples:
            self.counts["sampled"][name] = [m["sampled_counts"] for m in runs]
        _announce(name, self.results["methods"][name])

    def _out(self, name: str, lr: float, seed: int) -> Path:
        return train_method(
            name,
            seed,
            lr,
            self.base_path,
            self.pairs_for(name),
            self.runs_dir / f"{name}-lr{lr:g}-seed{seed}",
            self.config,
        )

    def pairs_for(self, name: str) -> Path:
        """The pairs file run ``name`` trains on: on-policy, several rejected per row, or the built-in."""
        method, pairs = pairs_of(name)
        if pairs == ON_POLICY:
            return self.onpolicy_pairs
        return self.multi_pairs if method in MULTI_REJECTED else self.pairs

    def on_policy_pairs(self) -> None:
        """The base's own captions judged by the world (`chip pairs`), as many scenes as off-policy pairs."""
        config = self.config
        write_on_policy_pairs(
            self.base_path,
            config.base.world,
            self.onpolicy_pairs.parent,
            count=config.num_pairs,
            samples=config.onpolicy_samples,
        )
        report = json.loads((self.onpolicy_pairs.parent / "pairs_report.json").read_text())
        kept = self.results["onpolicy_pairs_kept"] = _row_count(self.onpolicy_pairs)
        self.results["onpolicy_pairs"] = report
        print(f"on-policy pairs: {kept} -> {self.onpolicy_pairs}" + ("" if kept else "; no on-policy runs"))

    def long_run(self) -> None:
        """The long method's first seed trained ``long_factor`` times longer, checkpoints measured."""
        config, name = self.config, self.config.long_method
        lr, seed = self.results["chosen_lr"][name], config.seeds[0]
        steps = config.steps * config.long_factor
        out = self.runs_dir / f"{name}-lr{lr:g}-seed{seed}-steps{steps}"
        overrides = {"max_steps": steps, "save_strategy": "steps", "save_steps": config.long_every}
        train_method(name, seed, lr, self.base_path, self.pairs_for(name), out, config, overrides)
        base = self.results["methods"]["base"]
        self.results["long_run"] = {
            "method": name,
            "lr": lr,
            "seed": seed,
            "steps": steps,
            "default_steps": config.steps,
            "points": long_training(out, self.base_path, base, self.test_scenes),
        }

    def _seeds(self, name: str, lr: float, seeds: tuple[int, ...]) -> None:
        runs = []
        for seed in seeds:
            out = self._out(name, lr, seed)
            runs.append(self.evaluate(name, out, seed))
            if seed == seeds[0]:
                self.results["curves"][name] = _curves(out)
        self.record(name, runs)

    def run_method(self, name: str) -> None:
        """The learning rate chosen on validation scenes (first seed), then every seed on the test scenes."""
        config, grid = self.config, {}
        if config.val_scenes and len(config.lr_grid) > 1:
            for lr in config.lr_grid:
                out = self._out(name, lr, config.seeds[0])
                grid[lr] = validate_model(out, self.val_scenes, f"validate {name} lr {lr:g}")
            chosen = choose_lr(grid, config.min_val_recall)
        else:
            chosen = config.lr_grid[0]
        self.results["grids"][name] = {f"{lr:g}": m for lr, m in grid.items()}
        self.results["chosen_lr"][name] = chosen
        self._seeds(name, chosen, config.seeds)

    def run_variant(self, name: str) -> None:
        """A visual-term variant at the learning rate of the method it changes."""
        if tuned_as(name) not in self.results["chosen_lr"]:
            raise ValueError(
                f"variant {name} reuses the learning rate of {tuned_as(name)}: run that method too"
            )
        chosen = self.results["chosen_lr"][name] = self.results["chosen_lr"][tuned_as(name)]
        self._seeds(name, chosen, self.config.variant_seeds)

    def finish(self) -> dict[str, Any]:
        config, results = self.config, self.results
        results["comparisons"] = compare_all(self.counts, config.resamples)
        results["cost"] = cost_comparisons(self.counts, config.resamples)
        if config.analysis_scenes and "dpo+visual" in config.methods:
            from chip.demo.shortcut import shortcut_analysis

            clock = time.perf_counter()
            visual_runs = {
                name: self.runs_dir / f"{name}-lr{results['chosen_lr'][name]:g}-seed{config.seeds[0]}"
                for name in ("dpo", "dpo+visual", "chip")
                if name in config.methods
            }
            results["shortcut"] = shortcut_analysis(
                self.base_path, visual_runs, config.base.world, config.analysis_scenes
            )
            self.timings["shortcut"] = time.perf_counter() - clock
        results["config"] = _jsonable(asdict(config))
        results["ranks_methods"] = config.ranks_methods
        results["decoding"] = (
            f"chair_i/chair_s/recall: greedy captions of {config.test_scenes} test scenes; "
            f"sampled_*: {config.eval_samples} samples per test scene at T=1; pope_*: greedy "
            "yes/no on every question of the test scenes"
        )
        results["timings_seconds"] = {k: round(v, 1) for k, v in self.timings.items()}
        results["scene_counts"] = self.counts
        return results


def _row_count(path: Path) -> int:
    if not path.exists():
        return 0
    with path.open() as rows:
        return sum(1 for line in rows if line.strip())


def _curves(run_dir: Path) -> list[dict[str, float]]:
    state = json.loads((run_dir / "trainer_state.json").read_text())
    keys = ("step", "loss", "rewards/margins", "visual/margins", "rewards/accuracies")
    return [{k: entry[k] for k in keys if k in entry} for entry in state["log_history"] if "loss" in entry]


def _announce(name: str, summary: dict[str, Any]) -> None:
    spread = f" (std over seeds {summary['chair_i_std']:.3f})" if len(summary["seeds"]) > 1 else ""
    print(
        f"{name:>12}: greedy CHAIR_i {summary['chair_i']:.3f}{spread} "
        f"CHAIR_s {summary['chair_s']:.3f} recall {summary['recall']:.3f} | POPE accuracy random "
        f"{summary['pope_random']:.3f} adversarial {summary['pope_adversarial']:.3f} | attribute accuracy "
        f"{summary['attribute_accuracy']:.3f}"
    )


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
