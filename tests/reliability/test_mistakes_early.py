"""Every mistake one line, before the weights load (issue 21): numbers outside their declared range,
negative numbers as values, did-you-mean for a misspelt field, an empty or finished --output_dir;
the cheap checks answer before transformers is imported."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import time
import typing
from pathlib import Path

import pytest

from chip.errors import ConfigError, within
from chip.training.bounds import TRAINING_ARGUMENT_BOUNDS
from chip.training.config import ChipConfig
from chip.training.early import check_argv, declared_fields
from tests.reliability.conftest import assert_one_line_error
from tests.train_helpers import train_args, write_pairs

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--learning_rate", "-1e-4"], "--learning_rate must be >= 0; got -1e-4"),
        (["--learnig_rate", "1e-4"], "unknown argument --learnig_rate (did you mean --learning_rate?)"),
        (["--beta", "0"], "--beta must be > 0; got 0"),
        (["--eval_fraction", "1"], "--eval_fraction must be in [0, 1); got 1"),
        (["--max_steps", "0"], "--max_steps must be -1 or >= 1; got 0"),
        (["--max_steps", "1.5"], "--max_steps must be a whole number; got '1.5'"),
        (["--noise_step", "1000"], "--noise_step must be in [0, 999]; got 1000"),
        (["--per_device_train_batch_size", "0"], "--per_device_train_batch_size must be >= 1; got 0"),
        (
            ["--corruption", "blurr"],
            "--corruption must be one of diffusion, crop, black, rotate, blur, random",
        ),
        (["--output_dir", ""], "--output_dir is empty"),
    ],
)
def test_bad_values_are_refused_from_the_declarations(argv, message, run_chip):
    run = run_chip(["train", "--output_dir", "/tmp/unused", *argv])
    assert message in assert_one_line_error(run, 2)


def test_yaml_field_typo_and_range(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("learnig_rate: 1.0e-4\n")
    with pytest.raises(
        ConfigError, match=r"recipe.yaml: unknown field 'learnig_rate' \(did you mean learning_rate\?\)"
    ):
        check_argv(["--config", str(recipe), "--output_dir", str(tmp_path / "out")])
    recipe.write_text("learning_rate: -1.0e-4\nsegment_weight: -1\n")
    with pytest.raises(ConfigError, match="--learning_rate must be >= 0; got -0.0001"):
        check_argv(["--config", str(recipe), "--output_dir", str(tmp_path / "out")])


def test_negative_numbers_are_values(tmp_path, tiny_model):
    """`--max_steps -1` and `--local_rank -1` parse as values (allowed there), not as flags."""
    from chip.training.cli import parse_config

    argv = train_args(
        tiny_model("llava"), tmp_path / "d.jsonl", tmp_path / "out", max_steps=-1, num_train_epochs=1
    )
    config = parse_config([*argv, "--local_rank", "-1"])
    assert config.max_steps == -1 and config.local_rank == -1
    # the dataclass's own check (the Python API's path) reads -1e-4 as a value too
    with pytest.raises(ConfigError, match=r"^learning_rate must be >= 0; got -0.0001$"):
        parse_config([*argv, "--learning_rate", "-1e-4"])


def test_every_numeric_field_declares_its_range():
    """A new int/float setting (chip's or a newer transformers') without a range fails here."""
    hints = typing.get_type_hints(ChipConfig)
    missing = []
    for spec in dataclasses.fields(ChipConfig):
        kinds = {t for t in (hints[spec.name], *typing.get_args(hints[spec.name])) if t in (int, float)}
        if kinds and not spec.metadata.get("bounds") and spec.name not in TRAINING_ARGUMENT_BOUNDS:
            missing.append(spec.name)
    assert missing == []
    # and the source reader sees the same fields and ranges as the dataclass
    declared = declared_fields()
    assert {spec.name for spec in dataclasses.fields(ChipConfig) if spec.init} <= set(declared)
    assert declared["beta"].bounds == "> 0" and declared["learning_rate"].bounds == ">= 0"
    assert declared["tdpo"].choices == ("tdpo1", "tdpo2")


def test_range_notation_by_hand():
    """ "[0, 1)" holds 0 and 0.99 but not 1; "-1 or >= 1" holds -1 and 3, not 0; "> 0" not 0."""
    assert within(0, "[0, 1)") and within(0.99, "[0, 1)") and not within(1, "[0, 1)")
    assert within(-1, "-1 or >= 1") and within(3, "-1 or >= 1") and not within(0, "-1 or >= 1")
    assert not within(0, "> 0") and within(999, "[0, 999]") and not within(1000, "[0, 999]")


def test_a_typo_answers_before_transformers_is_imported(tmp_path):
    """The refusal comes from the source-reading checks: transformers (seconds to import) never loads."""
    probe = (
        "import sys, builtins\n"
        "real = builtins.__import__\n"
        "def guard(name, *a, **k):\n"
        "    if name.split('.')[0] in ('transformers', 'peft') : raise SystemExit('imported ' + name)\n"
        "    return real(name, *a, **k)\n"
        "builtins.__import__ = guard\n"
        "from chip.training.cli import main\n"
        "from chip.errors import ConfigError\n"
        "try:\n"
        "    main(['--learnig_rate', '1', '--output_dir', 'x'])\n"
        "except ConfigError as err:\n"
        "    print(err)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300)
    assert run.stdout.strip() == "unknown argument --learnig_rate (did you mean --learning_rate?)", (
        run.stderr[-2000:]
    )
    print(f"answered in {time.perf_counter() - start:.1f} s")


def test_finished_output_dir_is_refused_until_overwrite(tmp_path, tiny_model, run_chip):
    pairs = write_pairs(tmp_path / "data", n=4)
    out = tmp_path / "out"
    argv = ["train", *train_args(tiny_model("llava"), pairs, out, max_steps=1)]
    assert run_chip(argv).code == 0
    before = (out / "trainer_state.json").read_text()
    message = assert_one_line_error(run_chip(argv), 2)
    assert message == (
        f"--output_dir {out} holds an earlier run (model.safetensors, trainer_state.json): pass "
        "--overwrite_output_dir to replace it, or --resume_from_checkpoint last to continue it"
    )
    assert (out / "trainer_state.json").read_text() == before
    assert run_chip([*argv, "--overwrite_output_dir"]).code == 0


def test_help_names_each_flag_once(run_chip):
    """Both spellings on one line, the value once; --no_X with its own help; one default at most."""
    text = run_chip(["train", "--help"]).out
    lines = text.splitlines()
    assert "  --lora_r (--lora-r) LORA_R" in lines
    assert sum(line.count("--lora-r") for line in lines) == 1
    no_prefix = lines.index("  --no_share_prefix (--no-share-prefix)")
    assert "Turn --share_prefix off" in lines[no_prefix + 1]
    flat = " ".join(text.split())
    assert "(default: None)" not in flat and not re.search(r"\(default: [^)]*\)\. \(default:", flat)
    split = text[text.index("--dataset_split") : text.index("--image_root")]
    assert "(default: train, else the only one)" in " ".join(split.split()) and "(default: None)" not in split
