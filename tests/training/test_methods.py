"""`--method` presets through `chip train` and the Python API, and several rejected responses per
prompt through the collator and the trainer, on a tiny LLaVA."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForImageTextToText

from chip.errors import ConfigError
from chip.modeling.batch import MORE_CHOSEN_SEGMENT, MORE_REJECTED, MORE_REJECTED_OF, MORE_REJECTED_SEGMENT
from chip.training.cli import parse_config, run_training
from chip.training.config import ChipConfig
from chip.training.methods import METHOD_NAMES, preset
from tests.train_helpers import COLOURS, train, train_args, write_pairs

RECIPE = Path(__file__).resolve().parents[2] / "configs" / "llava-1.6-7b-chip.yaml"
SAVED = ("segment_weight", "token_weight", "visual_weight", "combine", "anchor_weight", "corruption")


def write_list_pairs(folder, n: int = 4):
    """``write_pairs`` rows whose `rejected` lists two wrong colours (the second one of another length)."""
    path = write_pairs(folder, n=n)
    names = list(COLOURS)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for i, row in enumerate(rows):
        other = names[(i + 2) % len(names)]
        row["rejected"] = [row["rejected"], f"it shows {other} ."]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_each_preset_trains_through_chip_train(tiny_model, tmp_path, method):
    """One step per preset; the resolved settings are saved in method.json and the method's own terms are logged."""
    data = write_list_pairs(tmp_path / "data")
    out = tmp_path / "out"
    history = train(tiny_model("llava"), data, out, method=method, max_steps=1, per_device_train_batch_size=2)
    saved = json.loads((out / "method.json").read_text())
    assert saved["method"] == method
    assert {k: saved[k] for k in SAVED} == {k: preset(method)[k] for k in SAVED}
    assert math.isfinite(history[0]["loss"])
    if method == "mdpo":
        assert {"loss/visual", "loss/anchor"} <= set(history[0])
    if method == "dpo":
        assert "visual/margins" not in history[0] and "kl/chosen" not in history[0]


def test_explicit_settings_override_the_preset(tmp_path):
    config = parse_config(
        ["--output_dir", str(tmp_path), "--method", "mdpo", "--anchor_weight", "0.5", "--corruption", "blur"]
    )
    assert (config.anchor_weight, config.corruption, config.combine, config.visual_weight) == (
        0.5,
        "blur",
        "separate",
        1.0,
    )
    # a value equal to the class default still wins over the preset when given
    assert (
        parse_config(
            ["--output_dir", str(tmp_path), "--method", "dpo", "--visual_weight", "1.0"]
        ).visual_weight
        == 1.0
    )
    with pytest.raises(ConfigError, match="method must be one of"):
        parse_config(["--output_dir", str(tmp_path), "--method", "ppo"])


def test_a_preset_on_the_command_line_overrides_the_yaml_file(tmp_path):
    """The shipped CHiP recipe sets every weight; `--method mdpo` on top of it is mDPO, and a preset
    named in a file yields to what the same file sets."""
    recipe = ["--config", str(RECIPE), "--output_dir", str(tmp_path), "--bf16", "false"]
    config = parse_config([*recipe, "--method", "mdpo", "--beta", "0.2"])
    assert (config.segment_weight, config.token_weight, config.combine, config.corruption) == (
        0.0,
        0.0,
        "separate",
        "crop",
    )
    assert (config.anchor_weight, config.beta, config.learning_rate) == (1.0, 0.2, 5e-7)
    file = tmp_path / "mdpo.yaml"
    file.write_text("method: mdpo\nanchor_weight: 0.5\n")
    config = parse_config(["--config", str(file), "--output_dir", str(tmp_path), "--visual_weight", "2.0"])
    assert (config.method, config.anchor_weight, config.visual_weight, config.corruption) == (
        "mdpo",
        0.5,
        2.0,
        "crop",
    )


def test_unused_rejected_responses_are_reported(tiny_model, tmp_path, caplog):
    data = write_list_pairs(tmp_path / "data")
    with caplog.at_level("WARNING", logger="chip"):
        train(tiny_model("llava"), data, tmp_path / "out", method="chip", max_steps=1)
    assert "4 rejected responses listed after the first 1 of their row are not used" in caplog.text


def test_settings_the_reference_cache_cannot_serve_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="reference precomputed"):
        ChipConfig.for_method(
            "chip-multi", output_dir=str(tmp_path), reference="precomputed", reference_cache="c"
        )
    with pytest.raises(ConfigError, match="needs a reference"):
        ChipConfig.for_method("chip-anchored", output_dir=str(tmp_path), reference="none", token_weight=0.0)


def test_a_preset_through_the_python_api(tiny_model, tmp_path):
    data = write_pairs(tmp_path / "data", n=4)
    args = dict(zip(*[iter(train_args(tiny_model("llava"), data, tmp_path / "out", max_steps=1))] * 2))
    fields = {key[2:]: value for key, value in args.items()}
    config = ChipConfig.for_method(
        "mdpo",
        **{
            k: type(ChipConfig.default(k))(v) if ChipConfig.default(k) is not None else v
            for k, v in fields.items()
        },
    )
    metrics = run_training(config)
    assert math.isfinite(metrics["train_loss"])
    assert json.loads((tmp_path / "out" / "method.json").read_text())["corruption"] == "crop"


def _loss(tiny_model, tmp_path, data, **overrides) -> torch.Tensor:
    from chip.data import load_preference_rows
    from chip.modeling import VLMAdapter
    from chip.training.collate import ChipCollator
    from chip.training.reference import LiveReference
    from chip.training.trainer import ChipTrainer

    model_dir = tiny_model("llava")
    examples, _ = load_preference_rows(data)
    config = parse_config(train_args(model_dir, data, tmp_path / "out", **overrides))
    torch.manual_seed(0)
    policy = AutoModelForImageTextToText.from_pretrained(model_dir)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.01 * torch.randn_like(p))
    collator = ChipCollator.from_config(config, VLMAdapter.from_pretrained(model_dir), examples)
    trainer = ChipTrainer(
        model=policy,
        args=config,
        train_dataset=examples,
        data_collator=collator,
        reference=LiveReference(AutoModelForImageTextToText.from_pretrained(model_dir)),
    )
    policy.eval()
    batch = collator(examples)
    with torch.no_grad():
        return trainer.compute_loss(policy, batch), batch


def test_a_row_with_two_rejected_is_the_mean_of_its_two_pairs(tiny_model, tmp_path):
    """Per example ℓ = (ℓ(W, L1, C) + ℓ(W, L2, C)) / 2: the batch loss of the list rows equals the
    mean of the batch losses of the rows split into their two pairs (full CHiP, derived segments)."""
    listed = write_list_pairs(tmp_path / "listed")
    rows = [json.loads(line) for line in listed.read_text().splitlines()]
    losses = []
    for k in (0, 1):
        folder = tmp_path / f"pair{k}"
        write_pairs(folder, n=4)
        single = [{**row, "rejected": row["rejected"][k]} for row in rows]
        (folder / "pairs.jsonl").write_text("".join(json.dumps(row) + "\n" for row in single))
        losses.append(_loss(tiny_model, tmp_path, folder / "pairs.jsonl")[0])
    both, batch = _loss(tiny_model, tmp_path, listed, max_rejected=0)
    assert batch[MORE_REJECTED_OF].tolist() == [0, 1, 2, 3]
    assert batch[MORE_REJECTED_SEGMENT].shape[0] == 4 and batch[MORE_CHOSEN_SEGMENT].shape[0] == 4
    torch.testing.assert_close(both, (losses[0] + losses[1]) / 2, rtol=1e-5, atol=1e-6)
    first_only, batch = _loss(tiny_model, tmp_path, listed)  # max_rejected 1: the first pair only
    assert MORE_REJECTED not in batch
    torch.testing.assert_close(first_only, losses[0], rtol=1e-5, atol=1e-6)


def test_the_collator_flags_the_chosen_answer_against_each_rejected_one(tiny_model, tmp_path):
    """Row: chosen "the image is red .", rejected ["the image is blue .", "a big green ball is here ."]
    with spans only on the first rejected answer ([13, 17) = "blue"). The first pair takes the
    chosen flags from the alignment (no chosen spans) and the rejected flags from the span; the
    second pair is aligned on its own, so its chosen flags differ from the first pair's."""
    from chip.data import load_preference_rows
    from chip.modeling import VLMAdapter
    from chip.segments import changed_segments
    from chip.training.collate import ChipCollator

    folder = tmp_path / "data"
    write_pairs(folder, n=1)
    row = json.loads((folder / "pairs.jsonl").read_text())
    row.update(
        rejected=["the image is blue .", "a big green ball is here ."], rejected_segments=[[[13, 17]], None]
    )
    (folder / "pairs.jsonl").write_text(json.dumps(row) + "\n")
    (example,), _ = load_preference_rows(folder / "pairs.jsonl")
    adapter = VLMAdapter.from_pretrained(tiny_model("llava"))
    batch = ChipCollator(adapter, max_rejected=0, score_corrupt=False)([example])
    chosen_ids = adapter.encode_response(example.chosen)
    first_ids, second_ids = (adapter.encode_response(text) for text, _ in example.all_rejected())
    first_chosen, _ = changed_segments(chosen_ids, first_ids)
    second_chosen, second_rejected = changed_segments(chosen_ids, second_ids)
    assert first_chosen != second_chosen
    flags = batch["real_segment"]  # rows [W, L1]
    assert flags[0, : len(chosen_ids)].tolist() == first_chosen
    blue = [start < 17 and end > 13 for start, end in adapter.response_offsets(example.rejected)]
    assert flags[1, : len(first_ids)].tolist() == blue and any(blue)
    assert batch[MORE_CHOSEN_SEGMENT][0, : len(chosen_ids)].tolist() == second_chosen
    assert batch[MORE_REJECTED_SEGMENT][0, : len(second_ids)].tolist() == second_rejected


def test_chosen_spans_given_per_rejected_answer_flag_each_pair(tiny_model, tmp_path):
    """Row: chosen "the image is red .", rejected ["the image is blue .", "the picture is red ."],
    chosen spans [[12, 15]] ("red") against the first and [[4, 9]] ("image") against the second:
    the first pair's chosen flags mark "red" only, the second pair's "image" only."""
    from chip.data import load_preference_rows
    from chip.modeling import VLMAdapter
    from chip.training.collate import ChipCollator

    folder = tmp_path / "data"
    write_pairs(folder, n=1)
    row = json.loads((folder / "pairs.jsonl").read_text())
    row.update(
        chosen="the image is red .",
        rejected=["the image is blue .", "the picture is red ."],
        chosen_segments=[[[12, 15]], [[4, 9]]],
        rejected_segments=[[[12, 16]], [[4, 11]]],
    )
    (folder / "pairs.jsonl").write_text(json.dumps(row) + "\n")
    (example,), _ = load_preference_rows(folder / "pairs.jsonl")
    adapter = VLMAdapter.from_pretrained(tiny_model("llava"))
    batch = ChipCollator(adapter, max_rejected=0, score_corrupt=False)([example])
    offsets = adapter.response_offsets(example.chosen)
    n = len(offsets)

    def overlaps(start, end):
        return [a < end and b > start for a, b in offsets]

    red, image = overlaps(12, 15), overlaps(4, 9)
    assert any(red) and any(image) and red != image
    assert batch["real_segment"][0, :n].tolist() == red
    assert batch[MORE_CHOSEN_SEGMENT][0, :n].tolist() == image
