"""`--eval_hallucination chair`: CHAIR_i, CHAIR_s and recall at every evaluation, and the recall floor."""

from __future__ import annotations

import json

import pytest
from transformers import AutoModelForImageTextToText

from chip.errors import ConfigError
from chip.evaluation.chair import chair_scores
from chip.evaluation.generate import batch_inputs, generate_new_tokens
from chip.modeling import VLMAdapter
from chip.pairs.annotators import objects_annotator
from chip.training.assembly import load_train_eval
from chip.training.cli import parse_config
from chip.training.hallucination import DESCRIBE, held_out_items
from tests.train_helpers import COLOURS, train, train_args, write_pairs

LOGGED = ("eval_chair_i", "eval_chair_s", "eval_recall")


def _objects_file(folder, n: int):
    """Each image's colour as its one object (`write_pairs` names image i after colour i % 4)."""
    names = list(COLOURS)
    path = folder / "objects.jsonl"
    path.write_text(
        "".join(json.dumps({"image": f"img{i}.png", "objects": [names[i % 4]]}) + "\n" for i in range(n))
    )
    return path


def test_chair_is_logged_at_every_evaluation(tiny_model, tmp_path):
    """Three steps, an evaluation after each: the metrics are in trainer_state.json and TensorBoard,
    and at learning rate 0 they are the CHAIR scores of the base model's own greedy descriptions."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model_dir = tiny_model("llava")
    data = write_pairs(tmp_path / "data", n=8)
    out = tmp_path / "out"
    settings = dict(
        max_steps=3,
        learning_rate=0.0,
        eval_fraction=0.5,
        eval_strategy="steps",
        eval_steps=1,
        eval_hallucination="chair",
        hallucination_truth=_objects_file(tmp_path / "data", 8),
        hallucination_images=3,
        hallucination_max_new_tokens=8,
        report_to="tensorboard",
    )
    train(model_dir, data, out, **settings)

    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    evaluations = [entry for entry in history if "eval_loss" in entry]
    assert [entry["step"] for entry in evaluations] == [1, 2, 3]
    config = parse_config(train_args(model_dir, data, tmp_path / "again", **settings))
    adapter = VLMAdapter.from_pretrained(model_dir)
    base = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
    _, held_out = load_train_eval(config, adapter)
    items = held_out_items(held_out, DESCRIBE, 3)
    inputs = batch_inputs(
        base, adapter, [item.prompt for item in items], [[item.images[0].load()] for item in items]
    )
    texts = adapter.tokenizer.batch_decode(
        generate_new_tokens(base, adapter, inputs, 8), skip_special_tokens=True
    )
    annotator = objects_annotator(config.hallucination_truth, items)
    answers = {item.id: text.strip() for item, text in zip(items, texts, strict=True)}
    expected = chair_scores(answers, annotator.truth, annotator.reader)
    for entry in evaluations:
        for name in LOGGED:
            assert entry[name] == pytest.approx(expected[name.removeprefix("eval_")]), (entry["step"], name)

    events = EventAccumulator(str(next(out.rglob("events.out.tfevents.*")).parent))
    events.Reload()
    for name in LOGGED:
        tag = name.replace("eval_", "eval/", 1)
        assert [event.step for event in events.Scalars(tag)] == [1, 2, 3], tag


def test_recall_floor_keeps_the_best_checkpoint_that_still_describes(tiny_model, tmp_path):
    """metric_for_best_model eval_chair_i (lower is better) with min_eval_recall 0.5.

    Evaluations, by hand: step 1 (CHAIR_i 0.30, recall 0.80) is the best so far; step 2 (0.10,
    0.40) has a lower CHAIR_i but recall under the floor, so it is not; step 3 (0.20, 0.60) beats
    step 1. Best: step 3 with 0.20. Without the floor step 2 (0.10) would have won.
    """
    from chip import ChipConfig, ChipTrainer

    data = write_pairs(tmp_path / "data", n=8)
    truth = _objects_file(tmp_path / "data", 8)

    def best_after(floor):
        config = ChipConfig(
            output_dir=str(tmp_path / f"out{floor}"),
            model_name_or_path=str(tiny_model("llava")),
            report_to="none",
            use_cpu=True,
            metric_for_best_model="eval_chair_i",
            greater_is_better=False,
            eval_strategy="steps",
            save_strategy="steps",
            eval_fraction=0.25,
            eval_hallucination="chair",
            hallucination_truth=str(truth),
            min_eval_recall=floor,
        )
        trainer = ChipTrainer(args=config, train_dataset=str(data))
        for step, (chair_i, recall) in enumerate([(0.3, 0.8), (0.1, 0.4), (0.2, 0.6)], start=1):
            trainer.state.global_step = step
            trainer._determine_best_metric({"eval_chair_i": chair_i, "eval_recall": recall}, None)
        return trainer.state.best_global_step, trainer.state.best_metric

    assert best_after(0.5) == (3, 0.2)
    assert best_after(None) == (2, 0.1)


def test_recall_floor_needs_chair(tmp_path):
    from chip import ChipConfig

    with pytest.raises(ConfigError, match="--min_eval_recall needs --eval_hallucination chair"):
        ChipConfig(output_dir=str(tmp_path), min_eval_recall=0.5, report_to="none")
    with pytest.raises(ConfigError, match="needs --hallucination_truth"):
        ChipConfig(output_dir=str(tmp_path), eval_hallucination="chair", report_to="none")


def test_pope_is_logged_at_every_evaluation(tiny_model, tmp_path):
    """Four POPE questions, labels yes, no, yes, no. The random tiny model writes bytes that hold no
    'no'/'not', which POPE reads as "yes" every time; so, by hand: accuracy 2/4 = 0.5, precision
    2/4, recall 2/2 = 1, F1 = 2 * 0.5 * 1 / 1.5 = 2/3, yes-ratio 4/4 = 1."""
    data = write_pairs(tmp_path / "data", n=8)
    questions = tmp_path / "pope.jsonl"
    questions.write_text(
        "".join(
            json.dumps(
                {"question_id": k, "image": f"data/img{k}.png", "text": "Is there a dog?", "label": label}
            )
            + "\n"
            for k, label in enumerate(["yes", "no", "yes", "no"])
        )
    )
    out = tmp_path / "out"
    settings = dict(max_steps=2, learning_rate=0.0, eval_fraction=0.25, eval_steps=1, eval_strategy="steps")
    pope = dict(eval_hallucination="pope", hallucination_truth=questions, hallucination_max_new_tokens=4)
    train(tiny_model("llava"), data, out, **settings, **pope)

    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    evaluations = [entry for entry in history if "eval_loss" in entry]
    assert [entry["step"] for entry in evaluations] == [1, 2]
    for entry in evaluations:
        assert entry["eval_pope_accuracy"] == pytest.approx(0.5)
        assert entry["eval_pope_f1"] == pytest.approx(2 / 3)
        assert entry["eval_pope_yes_ratio"] == pytest.approx(1.0)
