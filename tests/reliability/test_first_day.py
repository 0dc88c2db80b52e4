"""A user's first day (issue 13): each mistake is one line naming the problem and the fix, checked
before weights load; evaluation during training; Ctrl-C saves a checkpoint; adapters name an
absolute base path; `--help` lists chip's settings first."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from transformers import LlamaConfig, LlamaForCausalLM

from tests.reliability.conftest import assert_one_line_error, log_history
from tests.train_helpers import train_args, write_pairs

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def pairs(tmp_path: Path) -> Path:
    return write_pairs(tmp_path / "data", n=8)


def _no_weights_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if anything gets as far as loading model weights."""
    import chip.training.models

    monkeypatch.setattr(
        chip.training.models, "load_model", lambda *a, **k: pytest.fail("weights were loaded")
    )


def test_text_only_model_is_one_line_before_loading(tmp_path, pairs, run_chip, monkeypatch):
    text_model = tmp_path / "llama"
    LlamaForCausalLM(
        LlamaConfig(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            vocab_size=64,
        )
    ).save_pretrained(text_model)
    _no_weights_loaded(monkeypatch)
    message = assert_one_line_error(
        run_chip(["train", *train_args(text_model, pairs, tmp_path / "out")]), code=2
    )
    assert (
        "is a 'llama' model, not a vision-language model" in message
        and "AutoModelForImageTextToText" in message
    )


def test_folder_that_is_not_a_model(tmp_path, pairs, run_chip, monkeypatch):
    (tmp_path / "empty").mkdir()
    _no_weights_loaded(monkeypatch)
    message = assert_one_line_error(
        run_chip(["train", *train_args(tmp_path / "empty", pairs, tmp_path / "out")]), 2
    )
    assert "is a folder but not a model (no config.json)" in message


def test_hub_id_while_offline(tmp_path, pairs, run_chip, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _no_weights_loaded(monkeypatch)
    run = run_chip(["train", *train_args("nobody-here/no-such-vlm", pairs, tmp_path / "out")])
    message = assert_one_line_error(run, 2)
    assert "cannot load model config 'nobody-here/no-such-vlm'" in message and "--local-dir" in message


def test_missing_logging_integration_names_the_extra(tmp_path, pairs, tiny_model, run_chip, monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name.startswith("tensorboard") else real_find_spec(name, *a),
    )
    _no_weights_loaded(monkeypatch)
    run = run_chip(
        ["train", *train_args(tiny_model("llava"), pairs, tmp_path / "out", report_to="tensorboard")]
    )
    message = assert_one_line_error(run, 2)
    assert "--report_to tensorboard needs the tensorboard package: pip install 'chip[tensorboard]'" in message


def test_output_dir_is_required(tmp_path, pairs, tiny_model, run_chip):
    argv = train_args(tiny_model("llava"), pairs, tmp_path / "out")
    at = argv.index("--output_dir")
    del argv[at : at + 2]
    assert "--output_dir is required" in assert_one_line_error(run_chip(["train", *argv]), 2)


def test_eval_strategy_without_held_out_data_is_one_line(tmp_path, pairs, tiny_model, run_chip):
    run = run_chip(
        ["train", *train_args(tiny_model("llava"), pairs, tmp_path / "out", eval_strategy="steps")]
    )
    assert "--eval_strategy steps needs --eval_dataset FILE or --eval_fraction F" in assert_one_line_error(
        run, 2
    )


def test_lora_options_without_use_peft_are_named(tmp_path, pairs, tiny_model, run_chip, caplog):
    run = run_chip(
        ["train", *train_args(tiny_model("llava"), pairs, tmp_path / "out", max_steps=1, lora_r=8)]
    )
    assert run.code == 0, run.err[-2000:]
    assert "--lora_r ignored: LoRA is off (add --use_peft to train an adapter)" in caplog.text


def test_held_out_fraction_is_evaluated_during_training(tmp_path, pairs, tiny_model, run_chip):
    out = tmp_path / "out"
    run = run_chip(
        [
            "train",
            *train_args(
                tiny_model("llava"),
                pairs,
                out,
                eval_fraction=0.25,
                eval_steps=2,
                per_device_eval_batch_size=2,
            ),
        ]
    )
    assert run.code == 0, run.err[-2000:]
    state = json.loads((out / "trainer_state.json").read_text())
    evaluations = [entry for entry in state["log_history"] if "eval_loss" in entry]
    assert [entry["step"] for entry in evaluations] == [2, 4]
    for entry in evaluations:
        for name in (
            "eval_rewards/accuracies",
            "eval_rewards/margins",
            "eval_visual/margins",
            "eval_kl/chosen",
        ):
            assert name in entry, (name, entry)
        assert 0.0 <= entry["eval_rewards/accuracies"] <= 1.0
    assert len(log_history(out)) == 4  # training itself still logs every step


def test_eval_dataset_file(tmp_path, pairs, tiny_model, run_chip):
    held_out = write_pairs(tmp_path / "held_out", n=3)
    # ids of their own: the same ids as training rows would be refused as an overlap
    rows = [json.loads(line) for line in held_out.read_text().splitlines()]
    held_out.write_text("".join(json.dumps({**row, "id": f"held{i}"}) + "\n" for i, row in enumerate(rows)))
    out = tmp_path / "out"
    argv = train_args(
        tiny_model("llava"), pairs, out, eval_dataset=held_out, eval_strategy="steps", eval_steps=4
    )
    assert run_chip(["train", *argv]).code == 0
    state = json.loads((out / "trainer_state.json").read_text())
    assert [entry["step"] for entry in state["log_history"] if "eval_loss" in entry] == [4]


def test_lora_adapter_names_an_absolute_base_path(tmp_path, pairs, tiny_model, run_chip, monkeypatch):
    model = tiny_model("llava")
    monkeypatch.chdir(model.parent)
    out = tmp_path / "out"
    run = run_chip(["train", *train_args(Path(model.name), pairs, out, max_steps=1, use_peft=True)])
    assert run.code == 0, run.err[-2000:]
    base = json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert Path(base).is_absolute() and Path(base) == model.resolve()


def test_help_lists_chip_settings_first_and_config(run_chip):
    run = run_chip(["train", "--help"])
    assert run.code == 0
    sections = [
        line for line in run.out.splitlines() if line and not line.startswith(" ") and line.endswith(":")
    ]
    assert sections[:4] == ["run:", "model:", "LoRA:", "data:"]
    assert (
        "--config FILE.yaml" in run.out and "--per_device_train_batch_size" in run.out
    )  # named in the epilog
    assert len(run.out.splitlines()) < 200
    assert "--logging_nan_inf_filter" in run_chip(["train", "--help_all"]).out
    precompute = run_chip(["data", "precompute", "--help"]).out
    assert precompute.startswith("usage: chip data precompute") and "reference log-prob cache" in precompute


def test_ctrl_c_saves_a_checkpoint_and_prints_the_resume_command(tmp_path, pairs, tiny_model):
    out = tmp_path / "out"
    argv = train_args(tiny_model("llava"), pairs, out, max_steps=10_000, per_device_train_batch_size=2)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    log, err_file = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with log.open("w") as stdout, err_file.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "chip", "train", *argv], cwd=REPO, env=env, stdout=stdout, stderr=stderr
        )
        deadline = time.monotonic() + 240
        while "'loss'" not in log.read_text() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.5)
        process.send_signal(signal.SIGINT)
        process.wait(timeout=240)
    err = err_file.read_text()
    assert process.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    checkpoints = sorted(out.glob("checkpoint-*"))
    assert checkpoints and (checkpoints[-1] / "trainer_state.json").is_file(), err[-2000:]
    assert "--resume_from_checkpoint last" in err


def test_chip_eval_with_a_text_only_model_is_one_line(tmp_path, run_chip):
    text_model = tmp_path / "llama"
    LlamaForCausalLM(
        LlamaConfig(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            vocab_size=64,
        )
    ).save_pretrained(text_model)
    questions = tmp_path / "q.jsonl"
    questions.write_text(
        json.dumps({"question_id": 1, "image": "a.png", "text": "Is there a cat?", "label": "no"}) + "\n"
    )
    run = run_chip(
        [
            "eval",
            "--bench",
            "pope",
            "--model",
            text_model,
            "--questions",
            questions,
            "--image_root",
            tmp_path,
            "--output",
            tmp_path / "m.json",
        ]
    )
    message = assert_one_line_error(run, 2)
    assert "is a 'llama' model, not a vision-language model" in message and len(message) < 400
