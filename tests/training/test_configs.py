"""Every shipped recipe parses into a ChipConfig (catches renamed TrainingArguments fields)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from chip.training.cli import parse_config

RECIPES = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))
assert RECIPES, "no recipes found: the test would check nothing"


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe_parses(recipe, tmp_path):
    config = parse_config(
        ["--config", str(recipe), "--output_dir", str(tmp_path), "--use_cpu", "true", "--bf16", "false"]
    )
    values = yaml.safe_load(recipe.read_text())
    assert config.model_name_or_path == values["model_name_or_path"]
    assert config.loss_config.beta == values["beta"]


def test_command_line_overrides_the_file(tmp_path):
    recipe = RECIPES[0]
    config = parse_config(
        [
            "--config",
            str(recipe),
            "--output_dir",
            str(tmp_path),
            "--use_cpu",
            "true",
            "--bf16",
            "false",
            "--visual_weight",
            "0",
            "--beta",
            "0.5",
        ]
    )
    assert config.visual_weight == 0.0 and config.beta == 0.5


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe_runs_as_written_on_a_tiny_model(recipe, tmp_path, tiny_model):
    """Each shipped recipe trains one step as written (bf16, gradient checkpointing, LoRA, tensorboard);
    only the 7B model, the data, the paths and the batch size change."""
    from chip.cli import main as chip_main
    from tests.train_helpers import write_pairs

    data = write_pairs(tmp_path / "data", n=8)
    overrides = [
        "--model_name_or_path",
        str(tiny_model("llava")),
        "--dataset",
        str(data),
        "--output_dir",
        str(tmp_path / "out"),
        "--max_steps",
        "1",
        "--use_cpu",
        "true",
        "--max_length",
        "512",
        "--dataloader_num_workers",
        "0",
        "--per_device_train_batch_size",
        "2",
        "--gradient_accumulation_steps",
        "1",
    ]
    assert chip_main(["train", "--config", str(recipe), *overrides]) == 0
    state = yaml.safe_load((tmp_path / "out" / "trainer_state.json").read_text())
    assert state["global_step"] == 1
    assert any((tmp_path / "out" / "runs").rglob("events.out.tfevents.*")), (
        "the recipe's tensorboard log is missing"
    )


def test_every_literal_setting_is_checked_and_every_reference_mode_has_its_strategy():
    """The allowed values live in the ``Literal`` types only: a value outside one is refused for
    every such field (none listed by hand), and `REFERENCES` holds one strategy per mode."""
    from typing import Literal, get_args, get_origin, get_type_hints

    from chip.errors import ConfigError
    from chip.training.config import ChipConfig, ReferenceMode
    from chip.training.reference import REFERENCES

    literal_fields = [
        name for name, hint in get_type_hints(ChipConfig).items() if get_origin(hint) is Literal
    ]
    assert {"tdpo", "combine", "loss_type", "corruption", "reference", "on_nonfinite"} <= set(literal_fields)
    for name in literal_fields:
        with pytest.raises(ConfigError, match=f"^{name} must be one of"):
            ChipConfig(output_dir="unused", use_cpu=True, **{name: "not-a-choice"})
    assert sorted(REFERENCES) == sorted(get_args(ReferenceMode))
    assert all(strategy.mode == mode for mode, strategy in REFERENCES.items())
