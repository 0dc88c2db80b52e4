"""Held-out data that is really held out (issue 21): a folder's test split is evaluated, not its
train split; the split read is named in the log; an evaluation set sharing rows with the training
set is refused in one line before any weights load."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from chip.data.sources import open_dataset
from chip.training.assembly import load_adapter, load_train_eval
from chip.training.cli import parse_config
from tests.reliability.conftest import assert_one_line_error
from tests.train_helpers import train_args, write_pairs


def split_folder(root: Path, train: int = 6, test: int = 3) -> Path:
    """A folder as the hub lays one out: train.jsonl and test.jsonl, images next to them."""
    write_pairs(root / "a", n=train + test)
    rows = [json.loads(line) for line in (root / "a" / "pairs.jsonl").read_text().splitlines()]
    folder = root / "folder"
    shutil.copytree(root / "a", folder, ignore=shutil.ignore_patterns("*.jsonl"))
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:train]))
    (folder / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[train:]))
    return folder


def loaded(tiny_model, folder: Path, tmp_path: Path, **overrides) -> tuple[list, list]:
    config = parse_config(train_args(tiny_model("llava"), folder, tmp_path / "out", **overrides))
    return load_train_eval(config, load_adapter(config))


def test_folder_with_a_test_split_is_evaluated_on_it(tmp_path, tiny_model, caplog):
    caplog.set_level(logging.INFO, logger="chip")
    folder = split_folder(tmp_path)
    train, held_out = loaded(tiny_model, folder, tmp_path, eval_dataset=folder)
    assert [ex.id for ex in train] == [f"ex{i}" for i in range(6)]
    assert [ex.id for ex in held_out] == ["ex6", "ex7", "ex8"]
    assert "evaluating on its test split" in caplog.text
    assert f"{folder} (split test, 1 .jsonl file(s))" in caplog.text


def test_eval_split_names_the_split(tmp_path, tiny_model):
    """--eval_split train of the training folder is the training set itself: refused, 6 of 6 rows."""
    folder = split_folder(tmp_path)
    with pytest.raises(Exception, match=r"6 of its 6 rows are also in --dataset .*6 by id, e.g. 'ex0'"):
        loaded(tiny_model, folder, tmp_path, eval_dataset=folder, eval_split="train")


def test_spec_with_a_local_folder_and_split(tmp_path):
    folder = split_folder(tmp_path)
    source = open_dataset(f"name={folder},split=test")
    assert source.total == 3 and source.description.startswith("split test")


def test_overlap_by_content_is_refused_on_the_command_line(tmp_path, tiny_model, run_chip, monkeypatch):
    """Two of the held-out rows are training rows under new ids: found by image + prompt + responses."""
    import chip.training.models

    monkeypatch.setattr(chip.training.models, "load_model", lambda *a, **k: pytest.fail("weights loaded"))
    pairs = write_pairs(tmp_path / "data", n=8)
    rows = [json.loads(line) for line in pairs.read_text().splitlines()]
    held = [{**row, "id": f"other{i}"} for i, row in enumerate(rows[:2])]
    held.append({**rows[2], "id": "new", "chosen": "the image is something else ."})
    (tmp_path / "data" / "held.jsonl").write_text("".join(json.dumps(r) + "\n" for r in held))
    argv = train_args(
        tiny_model("llava"), pairs, tmp_path / "out", eval_dataset=tmp_path / "data" / "held.jsonl"
    )
    message = assert_one_line_error(run_chip(["train", *argv]), 1)
    assert "2 of its 3 rows are also in --dataset" in message
    assert "2 by image + prompt + responses, e.g. id 'other0'" in message and "by id" not in message


def test_rows_without_ids_in_two_files_do_not_overlap(tmp_path, tiny_model):
    """Rows without an id get their index as id; two different files share those indices, not rows."""
    pairs = write_pairs(tmp_path / "data", n=8)
    rows = [json.loads(line) for line in pairs.read_text().splitlines()]
    for row in rows:
        del row["id"]
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows[:6]))
    held = tmp_path / "data" / "held.jsonl"
    held.write_text("".join(json.dumps(r) + "\n" for r in rows[6:]))
    train, held_out = loaded(tiny_model, pairs, tmp_path, eval_dataset=held)
    assert [ex.id for ex in held_out] == ["0", "1"] and len(train) == 6
