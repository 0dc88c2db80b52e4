"""The model card: Hugging Face layout, the run's settings and metrics, untrusted text escaped."""

from __future__ import annotations

import re

import yaml

from chip.training.config import ChipConfig
from chip.training.model_card import RunData, escape, model_card

HOSTILE = "m<script>alert(1)</script>|x*y*\n---\nlicense: evil"
HISTORY = [
    {"loss": 0.6931, "rewards/margins": 0.0, "rewards/accuracies": 0.0, "step": 1, "epoch": 0.5},
    {"loss": 0.39891, "rewards/margins": 0.7062, "rewards/accuracies": 1.0, "step": 2, "epoch": 1.0},
    {"eval_loss": 0.5, "eval_chair_i": 0.25, "eval_chair_s": 0.5, "eval_recall": 0.75, "step": 2},
    {"train_runtime": 3.2, "train_loss": 0.5462, "step": 2},
]


def _card(tmp_path, **overrides) -> str:
    config = ChipConfig(output_dir=str(tmp_path / "run<b>"), report_to="none", use_cpu=True, **overrides)
    data = RunData(train_source=HOSTILE, train_rows=8, eval_source="held|out", eval_rows=2)
    return model_card(config, HISTORY, data, adapter=bool(overrides.get("use_peft")))


def _unescaped_pipes(line: str) -> int:
    return len(re.findall(r"(?<!\\)\|", line))


def test_card_has_the_hub_layout_and_the_runs_numbers(tmp_path):
    card = _card(
        tmp_path, model_name_or_path="llava-hf/llava-v1.6-vicuna-7b-hf", dataset="openbmb/RLAIF-V-Dataset"
    )
    front, body = card.split("---\n")[1], card.split("---\n", 2)[2]
    metadata = yaml.safe_load(front)
    assert metadata["base_model"] == "llava-hf/llava-v1.6-vicuna-7b-hf"
    assert metadata["datasets"] == ["openbmb/RLAIF-V-Dataset"]
    assert metadata["library_name"] == "transformers" and "chip" in metadata["tags"]
    assert "| segment\\_weight | 3.0 |" in body  # λ's default
    assert "| 2 | 0.3989 | 0.7062 | 1 |" in body  # the second logged step, 4 significant digits
    assert "| 2 | 0.5 | 0.25 | 0.5 | 0.75 |" in body  # eval_loss, CHAIR_i, CHAIR_s, recall
    assert "Trained 2 steps in 3 s; mean training loss 0.5462." in body
    assert "training pairs: 8" in body and "held-out pairs: 2" in body


def test_card_escapes_untrusted_text(tmp_path):
    """A hostile model path and dataset name show as text: no tag, no extra table cell, no metadata."""
    card = _card(tmp_path, model_name_or_path=HOSTILE, use_peft=True)
    assert "<script>" not in card and "<b>" not in card
    assert "&lt;script&gt;" in card
    metadata = yaml.safe_load(card.split("---\n")[1])
    assert "license" not in metadata and "base_model" not in metadata  # a path, not a hub id
    assert metadata["library_name"] == "peft"
    tables = re.findall(r"(?:^\|.*\n)+", card, flags=re.MULTILINE)
    assert len(tables) == 3  # settings, training steps, evaluation steps
    for table in tables:
        cells = {_unescaped_pipes(line) for line in table.splitlines()}
        assert len(cells) == 1, table  # every row has the header's number of cells
    assert escape("a|b\nc") == "a\\|b c"
