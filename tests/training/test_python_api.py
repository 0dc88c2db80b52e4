"""`ChipTrainer` built the way TRL's `DPOTrainer` is equals `chip train` with the same settings.

Each case trains a tiny model twice, once through `chip train`'s entry point (files on disk, the
config from command-line flags) and once through ``ChipTrainer(model=..., args=ChipConfig(...),
train_dataset=..., processing_class=..., peft_config=...)``, and compares the logged loss and
metrics step by step and the saved weights tensor by tensor.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText, AutoProcessor

from chip import ChipConfig, ChipTrainer
from chip.errors import ConfigError, DataError
from tests.train_helpers import train, write_pairs

STEPS = 3
SETTINGS = {
    "per_device_train_batch_size": 4,
    "learning_rate": 5e-3,
    "max_steps": STEPS,
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
LORA = {"lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.05}
COMPARED = ("loss", "rewards/margins", "rewards/accuracies", "visual/margins", "kl/chosen", "logps/rejected")


def _rows(data: Path) -> list[dict]:
    """The rows of ``data`` with each image as a PIL image, as a TRL dataset holds them."""
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    for row in rows:
        row["images"] = [Image.open(data.parent / name) for name in row["images"]]
    return rows


def _dataset(kind: str, data: Path):
    if kind == "path":
        return str(data)
    if kind == "list":
        return _rows(data)
    import datasets

    return datasets.Dataset.from_list(_rows(data))


def _weights(out: Path) -> dict[str, torch.Tensor]:
    adapter = out / "adapter_model.safetensors"
    return load_file(adapter if adapter.exists() else out / "model.safetensors")


def _history(out: Path) -> list[dict]:
    state = json.loads((out / "trainer_state.json").read_text())
    return [entry for entry in state["log_history"] if "loss" in entry]


@pytest.mark.parametrize(
    ("family", "kind", "lora", "loaded"),
    [
        ("llava", "path", False, False),
        ("llava", "dataset", True, False),
        ("qwen2_vl", "list", False, True),
        pytest.param("qwen2_vl", "dataset", True, True, marks=pytest.mark.slow),
        pytest.param("llava", "list", True, True, marks=pytest.mark.slow),
    ],
    ids=[
        "llava-path-full",
        "llava-dataset-lora",
        "qwen2_vl-list-full-loaded",
        "qwen2_vl-dataset-lora",
        "llava-list-lora",
    ],
)
def test_python_api_equals_chip_train(tiny_model, tmp_path, family, kind, lora, loaded):
    """Same settings, same run: every logged step and every saved weight agree."""
    from peft import LoraConfig

    model_dir = tiny_model(family)
    data = write_pairs(tmp_path / "data")
    lora_flags = {"use_peft": True, **LORA} if lora else {}
    # `datasets` keeps a PIL image opened from a file as that file's absolute path: inside image_root
    settings = {**SETTINGS, "image_root": str(data.parent)}
    expected = train(model_dir, data, tmp_path / "cli", **settings, **lora_flags)

    out = tmp_path / "api"
    peft_config = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, task_type="CAUSAL_LM") if lora else None
    model = AutoModelForImageTextToText.from_pretrained(model_dir) if loaded else str(model_dir)
    # a loaded full-model run brings its own reference, as TRL's ref_model= does (the same weights)
    ref_model = AutoModelForImageTextToText.from_pretrained(model_dir) if loaded and not lora else None
    trainer = ChipTrainer(
        model=model,
        args=ChipConfig(output_dir=str(out), **settings),
        train_dataset=_dataset(kind, data),
        processing_class=AutoProcessor.from_pretrained(model_dir),
        peft_config=peft_config,
        ref_model=ref_model,
    )
    trainer.train()
    trainer.save_model()
    trainer.save_state()

    got = _history(out)
    assert len(got) == len(expected) == STEPS
    for step, (ours, theirs) in enumerate(zip(got, expected, strict=True)):
        for name in COMPARED:
            assert ours[name] == pytest.approx(theirs[name], rel=1e-5, abs=1e-7), (step, name)
    cli_weights, api_weights = _weights(tmp_path / "cli"), _weights(out)
    assert cli_weights.keys() == api_weights.keys()
    for name, value in cli_weights.items():
        torch.testing.assert_close(api_weights[name], value, rtol=1e-5, atol=1e-7, msg=name)
    assert abs(got[-1]["loss"] - got[0]["loss"]) > 1e-4, "training did not move the loss"
    for card in (tmp_path / "cli" / "README.md", out / "README.md"):  # the model card of each final save
        assert f"library_name: {'peft' if lora else 'transformers'}" in card.read_text()


def test_python_api_rejects_bad_rows_like_chip_train(tiny_model, tmp_path):
    """A bad row in a list of dicts is one `DataError` naming the row and the field."""
    model_dir = tiny_model("llava")
    rows = _rows(write_pairs(tmp_path / "data", n=4))
    rows[2]["chosen"] = rows[2]["rejected"]
    with pytest.raises(DataError, match=r"list of 4 rows.*row 2.*chosen"):
        ChipTrainer(
            model=str(model_dir),
            args=ChipConfig(output_dir=str(tmp_path / "out"), **SETTINGS),
            train_dataset=rows,
        )


def test_ref_model_needs_a_live_reference(tiny_model, tmp_path):
    model_dir = tiny_model("llava")
    reference = AutoModelForImageTextToText.from_pretrained(model_dir)
    with pytest.raises(ConfigError, match="ref_model= is a live reference"):
        ChipTrainer(
            model=str(model_dir),
            args=ChipConfig(output_dir=str(tmp_path / "out"), reference="none", token_weight=0.0, **SETTINGS),
            train_dataset=str(write_pairs(tmp_path / "data", n=4)),
            ref_model=reference,
        )


DOC = Path(__file__).resolve().parents[2] / "docs" / "python.md"
# The doc's script with a tiny model, a short CPU run and an evaluation at each step.
DOC_EDITS = {
    'MODEL = "llava-hf/llava-v1.6-vicuna-7b-hf"': "MODEL = {model!r}",
    "gradient_accumulation_steps=8": "gradient_accumulation_steps=1",
    "bf16=True": 'bf16=False, use_cpu=True, max_steps=2, report_to="none", dataloader_num_workers=0',
    "eval_steps=50": "eval_steps=1",
    "logging_steps=10": "logging_steps=1",
}


def test_docs_python_example_runs(tiny_model, tmp_path, monkeypatch):
    """The script of docs/python.md, run as written except for the model and the run's length."""
    script = DOC.read_text().split("```python\n", 1)[1].split("```", 1)[0]
    for old, new in DOC_EDITS.items():
        assert script.count(old) == 1, old
        script = script.replace(old, new.format(model=str(tiny_model("llava"))))
    lines = write_pairs(tmp_path / "data").read_text().splitlines(keepends=True)
    (tmp_path / "data" / "train.jsonl").write_text("".join(lines[:6]))
    (tmp_path / "data" / "held_out.jsonl").write_text("".join(lines[6:]))
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "docs_python"}
    exec(compile(script, str(DOC), "exec"), namespace)

    out = tmp_path / "runs" / "llava-chip-lora"
    assert (out / "adapter_model.safetensors").is_file()
    assert (out / "processor_config.json").is_file() or (out / "preprocessor_config.json").is_file()
    history = namespace["trainer"].state.log_history
    assert [entry["step"] for entry in history if "eval_loss" in entry] == [1, 2]
    assert [entry["step"] for entry in history if "loss" in entry] == [1, 2]
