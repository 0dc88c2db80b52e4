"""Small preference datasets and run helpers shared by the training tests."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from chip.training.cli import parse_config, run_training

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 20)}


def write_pairs(folder: Path, n: int = 8, size: int = 32) -> Path:
    """n pairs over solid-colour images: chosen names the colour, rejected a wrong one."""
    folder.mkdir(parents=True, exist_ok=True)
    names = list(COLOURS)
    rows = []
    for i in range(n):
        colour, wrong = names[i % len(names)], names[(i + 1) % len(names)]
        Image.new("RGB", (size, size), COLOURS[colour]).save(folder / f"img{i}.png")
        rows.append(
            {
                "id": f"ex{i}",
                "images": [f"img{i}.png"],
                "prompt": "What colour is the image?",
                "chosen": f"the image is {colour} .",
                "rejected": f"the image is {wrong} and big .",
            }
        )
    path = folder / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def train_args(model_dir: Path, data: Path, out: Path, **overrides) -> list[str]:
    """A fast CPU configuration; overrides are field=value pairs."""
    values = {
        "model_name_or_path": model_dir,
        "dataset": data,
        "output_dir": out,
        "per_device_train_batch_size": 4,
        "learning_rate": 5e-3,
        "max_steps": 4,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "seed": 0,
        "lr_scheduler_type": "constant",
        "warmup_steps": 0,
        "use_cpu": True,
        "dataloader_num_workers": 0,
        "disable_tqdm": True,
        "max_length": 512,
    }
    values.update(overrides)
    args: list[str] = []
    for key, value in values.items():
        args += [f"--{key}", *(map(str, value) if isinstance(value, list) else [str(value)])]
    return args


def train(model_dir: Path, data: Path, out: Path, **overrides) -> list[dict]:
    """Run chip training in-process and return the logged history (one dict per logging step)."""
    run_training(parse_config(train_args(model_dir, data, out, **overrides)))
    state = json.loads((out / "trainer_state.json").read_text())
    return [entry for entry in state["log_history"] if "loss" in entry]
