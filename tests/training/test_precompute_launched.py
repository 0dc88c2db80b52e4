"""`chip data precompute` under `accelerate launch` with two CPU processes (gloo) writes the
one-process reference cache, also through a SIGKILLed rank and a restarted launch; `chip data
precompute` and `chip train` launched as two machines on this host (machine ranks 0 and 1 meeting
at 127.0.0.1) give the one-process cache and losses. All slow: several launches each."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from chip.training.cli import parse_config, run_precompute
from tests.launch_chip import finished, kill_one_rank_when, run_launch, run_two_machines
from tests.train_helpers import train, train_args, write_pairs
from tests.training.launch_helpers import assert_same_history, log_history


def _cache_equal(expected: Path, got: Path) -> None:
    manifest = json.loads((expected / "manifest.json").read_text())
    assert json.loads((got / "manifest.json").read_text()) == manifest
    for shard in manifest["shards"]:
        one, two = load_file(expected / shard["file"]), load_file(got / shard["file"])
        assert one.keys() == two.keys()
        for name in one:
            torch.testing.assert_close(two[name], one[name], rtol=0, atol=1e-6, msg=name)


@pytest.mark.slow
def test_precompute_two_processes_killed_and_restarted_equal_one(tiny_model, tmp_path) -> None:
    """8 pairs in shards of one: a rank is killed once 3 shards are on disk; the restarted launch
    keeps them and the cache equals the one-process cache (log-probs and top-k within 1e-6)."""
    model, data = tiny_model("llava"), write_pairs(tmp_path / "data")
    env = {"CHIP_REFERENCE_SHARD_SIZE": "1"}
    single = tmp_path / "single"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CHIP_REFERENCE_SHARD_SIZE", "1")
        run_precompute(parse_config(train_args(model, data, tmp_path / "o", reference_cache=single)))
    multi = tmp_path / "multi"
    args = ["data", "precompute", *train_args(model, data, tmp_path / "o2", reference_cache=multi)]
    code = kill_one_rank_when(
        args, lambda: len(list(multi.glob("shard-*.ids.json"))) >= 3, tmp_path / "killed.log", env
    )
    assert code != 0 and not (multi / "manifest.json").exists()
    kept = {file.name: file.stat().st_mtime_ns for file in multi.glob("shard-*.safetensors")}
    assert 3 <= len(kept) < 8

    result = run_launch(args, env=env)
    finished(result)
    assert "process 0 of 2: shards" in result.stderr and "process 1 of 2: shards" in result.stderr
    _cache_equal(single, multi)
    assert all((multi / name).stat().st_mtime_ns == time for name, time in kept.items())  # not redone


@pytest.mark.slow
def test_precompute_on_two_machines_equals_one_process(tiny_model, tmp_path) -> None:
    """Machine ranks 0 and 1 on this host write into one folder (a shared file system): the cache
    is the one-process cache."""
    model, data = tiny_model("llava"), write_pairs(tmp_path / "data")
    single, multi = tmp_path / "single", tmp_path / "multi"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CHIP_REFERENCE_SHARD_SIZE", "2")
        run_precompute(parse_config(train_args(model, data, tmp_path / "o", reference_cache=single)))
    args = ["data", "precompute", *train_args(model, data, tmp_path / "o2", reference_cache=multi)]
    outputs = run_two_machines(lambda rank: args, env={"CHIP_REFERENCE_SHARD_SIZE": "2"})
    assert "process 0 of 2: shards [0, 2]" in outputs[0] and "process 1 of 2: shards [1, 3]" in outputs[1]
    _cache_equal(single, multi)


@pytest.mark.slow
@pytest.mark.parametrize("save_on_each_node", [False, True])
def test_training_on_two_machines_equals_one_process(save_on_each_node, tiny_model, tmp_path) -> None:
    """Two machines x batch 2 against one process x batch 4, 3 steps: the same losses and metrics.

    A shared file system: one output_dir, written once by global rank 0. Per-node file systems (an
    output_dir per machine, `--save_on_each_node`): transformers 5.24 writes the processor and the
    training arguments on each machine but the weights and trainer_state.json on global rank 0
    only (`PreTrainedModel.should_save_on_this_rank` checks the global rank), which
    docs/distributed.md tells users; this pins that behaviour so an upgrade that changes it shows.
    """
    model, data = tiny_model("llava"), write_pairs(tmp_path / "data")
    single = train(model, data, tmp_path / "single", per_device_train_batch_size=4, max_steps=3)

    def out(rank: int) -> Path:
        return tmp_path / (f"node{rank}" if save_on_each_node else "shared")

    def args(rank: int) -> list[str]:
        settings = {"per_device_train_batch_size": 2, "max_steps": 3, "save_on_each_node": save_on_each_node}
        return ["train", *train_args(model, data, out(rank), **settings)]

    run_two_machines(args)
    assert_same_history(single, log_history(out(0)))
    assert (out(0) / "model.safetensors").is_file()
    if save_on_each_node:
        assert (out(1) / "training_args.bin").is_file() and (out(1) / "tokenizer.json").is_file()
        assert not (out(1) / "model.safetensors").exists() and not (out(1) / "trainer_state.json").exists()
    else:
        assert sorted(path.name for path in tmp_path.iterdir()) == ["data", "shared", "single"]
