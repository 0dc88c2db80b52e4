"""The demo experiment: base model -> preference pairs -> DPO, the CHiP ablations and CHiP -> eval.

Every method is one row of `METHODS`: a set of `ChipConfig` overrides applied to the same base
model, the same pairs, the same learning rate, steps, batch and seed (matched settings; METHOD.md
defect 6). Training goes through `chip.training.cli.run_training`, the exact path of `chip train`.
Evaluation captions held-out scenes (greedy and sampled at T = 1) and answers the scenes' yes/no
questions; CHAIR comes from `chip.evaluation.chair`, POPE-style metrics from `chip.evaluation.pope`.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor, ProgressCallback

from chip.demo.base import BaseModelConfig, default_device, train_base_model
from chip.demo.measure import caption_metrics, caption_scenes, sample_answers
from chip.demo.pairs import PairsConfig, write_preference_pairs
from chip.demo.world import Scene, make_scenes, question_prompt
from chip.evaluation.pope import pope_scores

# Loss settings per method, as `ChipConfig` overrides (METHOD.md: "ablations are just weights").
DPO = {"segment_weight": 0.0, "token_weight": 0.0, "visual_weight": 0.0}
METHODS: dict[str, dict[str, Any]] = {
    "dpo": DPO,
    "dpo+segment": {**DPO, "segment_weight": 3.0},
    "dpo+token": {**DPO, "token_weight": 0.1},
    "dpo+visual": {**DPO, "visual_weight": 1.0},
    "chip": {},  # λ = 3, α = 0.1 (TDPO2), μ = 1, diffusion noise at step 500
    **{f"chip-{kind}": {"corruption": kind} for kind in ("crop", "black", "rotate", "blur", "random")},
}
QUICK_METHODS = ("dpo", "chip")


@dataclass
class DemoConfig:
    """Sizes of one demo run; `quick()` fits in ~5 minutes on 2 CPU cores, `full()` in ~30."""

    base: BaseModelConfig = field(default_factory=BaseModelConfig.quick)  # the supervised base
    methods: tuple[str, ...] = QUICK_METHODS  # rows of METHODS to train
    seeds: tuple[int, ...] = (0,)  # one preference run per method and seed
    num_pairs: int = 1024  # preference pairs drawn from the world's "pairs" split
    steps: int = 60  # optimiser steps per method
    batch_size: int = 16  # pairs per step
    learning_rate: float = 1e-4  # shared by every method (matched); chosen on DPO, see docs/demo.md
    sft_weight: float = 1.0  # η, NLL of the chosen caption, for every method: keeps captions from shrinking
    core_seeds_only: tuple[str, ...] = ()  # methods run on the first seed only (to fit the time budget)
    eval_scenes: int = 100  # held-out scenes captioned per method
    eval_samples: int = 3  # samples per scene at T = 1 (greedy is measured too)
    pope_scenes: int = 100  # held-out scenes whose yes/no questions are answered

    @classmethod
    def quick(cls) -> DemoConfig:
        return cls()

    @classmethod
    def full(cls) -> DemoConfig:
        # 3 seeds for DPO, each CHiP component and CHiP; one seed per other corruption kind
        return cls(base=BaseModelConfig.full(), methods=tuple(METHODS), seeds=(0, 1, 2),
                   core_seeds_only=tuple(m for m in METHODS if m.startswith("chip-")),
                   eval_scenes=200, pope_scenes=200)  # fmt: skip


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


def train_method(name: str, seed: int, base_path: Path, pairs: Path, out: Path, config: DemoConfig) -> Path:
    """Train one method from the base on the pairs; returns the output folder (skips a finished one)."""
    from chip.training.cli import parse_config, run_training

    if (out / "trainer_state.json").exists():
        return out
    values = {
        "model_name_or_path": base_path, "dataset": pairs, "output_dir": out, "seed": seed,
        "max_steps": config.steps, "per_device_train_batch_size": config.batch_size,
        "learning_rate": config.learning_rate, "lr_scheduler_type": "cosine", "warmup_steps": 0.1,
        "logging_steps": 5, "save_strategy": "no", "report_to": "none", "max_length": 128,
        "dataloader_num_workers": 0, "log_level": "warning", "sft_weight": config.sft_weight, **METHODS[name],
    }  # fmt: skip
    argv = [token for key, value in values.items() for token in (f"--{key}", str(value))]
    run_training(
        parse_config(argv), callbacks=[_QuietProgress(f"train {name} seed {seed}")], replace_progress=True
    )
    return out


@torch.no_grad()
def evaluate_model(
    model_path: Path, config: DemoConfig, seed: int = 0, label: str = "eval"
) -> dict[str, Any]:
    """CHAIR (sampled and greedy captions) and POPE-style yes/no metrics on held-out scenes."""
    device = default_device()
    model = AutoModelForImageTextToText.from_pretrained(model_path).to(device).eval()
    processor = AutoProcessor.from_pretrained(model_path)
    world = config.base.world
    scenes = make_scenes(world, "eval", max(config.eval_scenes, config.pope_scenes))
    caption_set = scenes[: config.eval_scenes]
    sampled = caption_scenes(
        model,
        processor,
        caption_set,
        temperature=1.0,
        samples=config.eval_samples,
        seed=seed,
        desc=f"{label}: sampled captions",
    )
    greedy = caption_scenes(model, processor, caption_set, desc=f"{label}: greedy captions")
    metrics = {
        "sampled": caption_metrics(caption_set, sampled),
        "greedy": caption_metrics(caption_set, greedy),
    }
    metrics["pope"] = _pope(model, processor, scenes[: config.pope_scenes], desc=f"{label}: yes/no questions")
    metrics["examples"] = [{"truth": s.caption, "greedy": g[0], "sampled": c[0]}
                           for s, g, c in zip(caption_set[:4], greedy, sampled)]  # fmt: skip
    return metrics


def _pope(model, processor, scenes: list[Scene], desc: str) -> dict[str, Any]:
    items = [(f"{i}/{k}", scene, q) for i, scene in enumerate(scenes) for k, q in enumerate(scene.questions)]
    answers = sample_answers(model, processor, [s.image for _, s, _ in items],
                               [question_prompt(q.shape) for _, _, q in items], max_new_tokens=3, desc=desc)  # fmt: skip
    return pope_scores(
        {key: a[0] for (key, _, _), a in zip(items, answers)},
        {key: "yes" if q.label else "no" for key, _, q in items},
        {key: q.kind for key, _, q in items},
    )


def headline(metrics: dict[str, Any]) -> dict[str, float]:
    """The per-method numbers of results.json.

    ``chair_i``/``chair_s``/``recall`` use greedy decoding (EVAL.md's default); ``sampled_*`` the
    T = 1 samples, which show hallucinations greedy decoding hides; ``pope_*`` greedy yes/no.
    """
    sampled, greedy, pope = metrics["sampled"], metrics["greedy"], metrics["pope"]
    return {
        "chair_i": greedy["chair_i"], "chair_s": greedy["chair_s"], "recall": greedy["recall"],
        "sampled_chair_i": sampled["chair_i"], "sampled_chair_s": sampled["chair_s"], "sampled_recall": sampled["recall"],
        "pope_accuracy": pope["accuracy"], "pope_f1": pope["f1"], "pope_yes_ratio": pope["yes_ratio"],
    }  # fmt: skip


def summarise(per_seed: list[dict[str, float]]) -> dict[str, Any]:
    """Mean of every headline number across seeds, with its standard deviation and the raw values."""
    out: dict[str, Any] = {}
    for key in per_seed[0]:
        values = [run[key] for run in per_seed]
        out[key] = statistics.fmean(values)
        out[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    out["seeds"] = per_seed
    return out


def run_experiment(config: DemoConfig, output_dir: Path, cache_dir: Path) -> dict[str, Any]:
    """All phases; returns what results.json holds. Finished phases in ``output_dir`` are reused."""
    output_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    base_path = train_base_model(config.base, cache_dir)
    timings["base"] = time.perf_counter() - start

    start = time.perf_counter()
    pairs = output_dir / "pairs" / "pairs.jsonl"
    if not pairs.exists():
        write_preference_pairs(config.base.world, pairs.parent, config.num_pairs, PairsConfig())
    print(f"pairs: {config.num_pairs} preference pairs -> {pairs}")
    timings["pairs"] = time.perf_counter() - start

    results: dict[str, Any] = {"methods": {}, "examples": {}, "curves": {}}
    start = time.perf_counter()
    base_metrics = evaluate_model(base_path, config, label="eval base")
    results["methods"]["base"] = summarise([headline(base_metrics)])
    results["examples"]["base"] = base_metrics["examples"]
    _announce("base", results["methods"]["base"])
    timings["eval_base"] = time.perf_counter() - start

    for name in config.methods:
        runs = []
        for seed in config.seeds[:1] if name in config.core_seeds_only else config.seeds:
            start = time.perf_counter()
            out = train_method(
                name, seed, base_path, pairs, output_dir / "runs" / f"{name}-seed{seed}", config
            )
            metrics = evaluate_model(out, config, seed=seed, label=f"eval {name} seed {seed}")
            runs.append(headline(metrics))
            if seed == config.seeds[0]:
                results["examples"][name] = metrics["examples"]
                results["curves"][name] = _curves(out)
            timings[f"{name}-seed{seed}"] = time.perf_counter() - start
        results["methods"][name] = summarise(runs)
        _announce(name, results["methods"][name])

    results["comparison"] = compare(results["methods"])
    results["config"] = _jsonable(asdict(config))
    results["decoding"] = (f"chair_i/chair_s/recall: greedy captions of {config.eval_scenes} held-out scenes; "
                           f"sampled_*: {config.eval_samples} samples per scene at T=1; pope_*: greedy yes/no "
                           f"on {config.pope_scenes} scenes' questions")  # fmt: skip
    results["timings_seconds"] = {k: round(v, 1) for k, v in timings.items()}
    return results


def compare(methods: dict[str, Any]) -> dict[str, Any]:
    """CHiP vs DPO: relative reduction of hallucination, as the paper reports it (52.7% / 55.5%)."""
    if "chip" not in methods or "dpo" not in methods:
        return {}
    chip, dpo = methods["chip"], methods["dpo"]

    def reduction(key: str) -> float | None:
        return None if dpo[key] == 0 else (dpo[key] - chip[key]) / dpo[key]

    return {"chair_i_reduction": reduction("chair_i"), "chair_s_reduction": reduction("chair_s"),
            "sampled_chair_i_reduction": reduction("sampled_chair_i"),
            "sampled_chair_s_reduction": reduction("sampled_chair_s"),
            "paper_reduction": {"muffin": 0.527, "llava-1.6-7b": 0.555}}  # fmt: skip


def _curves(run_dir: Path) -> list[dict[str, float]]:
    state = json.loads((run_dir / "trainer_state.json").read_text())
    keys = ("step", "loss", "rewards/margins", "visual/margins", "rewards/accuracies")
    return [{k: entry[k] for k in keys if k in entry} for entry in state["log_history"] if "loss" in entry]


def _announce(name: str, summary: dict[str, Any]) -> None:
    print(f"{name:>12}: greedy CHAIR_i {summary['chair_i']:.3f}±{summary['chair_i_std']:.3f} "
          f"CHAIR_s {summary['chair_s']:.3f} recall {summary['recall']:.3f} | sampled CHAIR_i "
          f"{summary['sampled_chair_i']:.3f} recall {summary['sampled_recall']:.3f} | POPE F1 {summary['pope_f1']:.3f}")  # fmt: skip


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
