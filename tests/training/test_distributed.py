"""Two processes (`accelerate launch`, gloo on CPU) give the same run as one process on the same
global batch: 2 processes x 2 examples vs 1 process x 4 examples, same seed and sampler.

- DDP (``ddp_cpu.yaml``): loss, metrics and gradient norm within 1e-4.
- FSDP2 (``fsdp_cpu.yaml``), full fine-tune with the live reference (sharded like the policy),
  gradient checkpointing, pair attention and ``encode_images_once``: the same, through a sharded
  checkpoint, a SIGKILLed rank and ``--resume_from_checkpoint last``; the final ``output_dir``
  loads with ``from_pretrained`` on one process and holds the one-process weights.
- FSDP2 with LoRA, precomputed reference (default run) and live reference (slow).
- DeepSpeed ZeRO-2 and ZeRO-3 on DeepSpeed's CPU accelerator (slow; need ``deepspeed``).

docs/distributed.md records what each measured. Non-finite agreement across ranks:
tests/reliability/test_nonfinite_distributed.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText

from chip.training.cli import parse_config, run_precompute
from tests.train_helpers import train, train_args, write_pairs
from tests.training.launch_helpers import (
    DEEPSPEED_CONFIGS,
    assert_same_history,
    kill_one_rank,
    launch,
    log_history,
    max_difference,
    needs_deepspeed,
    spawn,
    wait_for_checkpoint,
)

RESUME_STEPS = 6  # 8 pairs, global batch 4: the resumed run crosses into the second epoch
# dropout off: its masks depend on how the batch is split over processes
LORA = {"use_peft": True, "lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "learning_rate": 1e-2}


def _single_and_args(
    model_dir: Path, data: Path, tmp_path: Path, steps: int, **settings
) -> tuple[list[dict], list[str]]:
    """The one-process history (batch 4) and the argv of the same run for two processes (batch 2 each)."""
    single = train(
        model_dir, data, tmp_path / "single", per_device_train_batch_size=4, max_steps=steps, **settings
    )
    args = train_args(
        model_dir, data, tmp_path / "multi", per_device_train_batch_size=2, max_steps=steps, **settings
    )
    return single, args


def _finished(result) -> None:
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count("chip: done") == 2  # both ranks finished


def test_ddp_two_processes_match_one_process(tiny_model, tmp_path):
    data = write_pairs(tmp_path / "data")
    single, args = _single_and_args(tiny_model("llava"), data, tmp_path, steps=3)
    _finished(launch("ddp_cpu.yaml", args))
    history = log_history(tmp_path / "multi")
    print(f"ddp_cpu.yaml full: max relative difference {max_difference(single, history):.1e}")
    assert_same_history(single, history)
    assert [h["step"] for h in single] == [1, 2, 3]


def _killed_and_resumed(config: str, args: list[str], out: Path, first_checkpoint: str) -> None:
    """Run ``args`` two-process, SIGKILL one rank once ``first_checkpoint`` is whole, resume with ``last``."""
    launcher = spawn(config, args, out.parent / "killed.log")
    wait_for_checkpoint(out / first_checkpoint, launcher)
    assert kill_one_rank(launcher) != 0  # the launcher tore the other rank down and failed
    assert not (out / "trainer_state.json").exists(), "the run finished before the kill"
    _finished(launch(config, [*args, "--resume_from_checkpoint", "last"]))


def _assert_loads_as_single(out: Path, single_out: Path) -> None:
    """``output_dir`` loads with `from_pretrained` in one process and holds the one-process weights."""
    loaded = AutoModelForImageTextToText.from_pretrained(out)
    expected = AutoModelForImageTextToText.from_pretrained(single_out).state_dict()
    for name, tensor in loaded.state_dict().items():
        torch.testing.assert_close(tensor, expected[name], rtol=1e-3, atol=1e-4, msg=name)


@pytest.mark.parametrize(
    "config",
    [
        "fsdp_cpu.yaml",
        *(pytest.param(c, marks=[pytest.mark.slow, needs_deepspeed]) for c in DEEPSPEED_CONFIGS),
    ],
)
def test_full_finetune_matches_one_process_through_a_killed_rank_and_resume(config, tiny_model, tmp_path):
    data = write_pairs(tmp_path / "data")
    settings = {"gradient_checkpointing": True, "save_strategy": "steps", "save_steps": 2}
    single, args = _single_and_args(tiny_model("llava"), data, tmp_path, steps=RESUME_STEPS, **settings)
    out = tmp_path / "multi"

    _killed_and_resumed(config, args, out, "checkpoint-2")
    if config.startswith("fsdp"):
        assert (out / "checkpoint-2" / "pytorch_model_fsdp_0").is_dir()  # sharded, one file per rank
        assert not (out / "checkpoint-2" / "model.safetensors").exists()
    history = log_history(out)
    print(f"{config} full: max relative difference {max_difference(single, history):.1e}")
    assert_same_history(single, history)
    _assert_loads_as_single(out, tmp_path / "single")


@pytest.mark.parametrize(
    "config, reference",
    [
        ("fsdp_cpu.yaml", "precomputed"),
        pytest.param("fsdp_cpu.yaml", "model", marks=pytest.mark.slow),
        *(pytest.param(c, "model", marks=[pytest.mark.slow, needs_deepspeed]) for c in DEEPSPEED_CONFIGS),
    ],
)
def test_lora_matches_one_process(config, reference, tiny_model, tmp_path):
    model_dir, data = tiny_model("llava"), write_pairs(tmp_path / "data")
    settings = {**LORA, "gradient_checkpointing": True}
    if reference == "precomputed":
        cache = tmp_path / "cache"
        run_precompute(parse_config(train_args(model_dir, data, tmp_path / "pre", reference_cache=cache)))
        settings.update(reference="precomputed", reference_cache=cache)
    single, args = _single_and_args(model_dir, data, tmp_path, steps=3, **settings)
    _finished(launch(config, args))
    history = log_history(tmp_path / "multi")
    print(f"{config} LoRA {reference}: max relative difference {max_difference(single, history):.1e}")
    assert_same_history(single, history)
    adapter = load_file(tmp_path / "multi" / "adapter_model.safetensors")
    expected = load_file(tmp_path / "single" / "adapter_model.safetensors")
    assert adapter.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(adapter[name], expected[name], rtol=1e-3, atol=1e-4, msg=name)


@pytest.mark.slow
@pytest.mark.parametrize(
    "config, overrides",
    [
        ("ddp.yaml", ()),
        ("fsdp.yaml", ()),
        # DeepSpeed in bf16 needs `--bf16 true`, which TrainingArguments refuses without a GPU
        # ("Your setup doesn't support bf16/gpu"), so on CPU these run in float32.
        *(
            pytest.param(c, ("--mixed_precision", "no"), marks=needs_deepspeed)
            for c in ("deepspeed_zero2.yaml", "deepspeed_zero3.yaml")
        ),
    ],
)
def test_shipped_gpu_configs_run_on_two_cpu_processes(config, overrides, tiny_model, tmp_path):
    """The GPU launch configs as shipped, with two processes instead of 4 or 8 (bf16 autocast on CPU
    for DDP and FSDP): the run finishes, starts at log 2 and saves a model `from_pretrained` loads."""
    model_dir, data = tiny_model("llava"), write_pairs(tmp_path / "data")
    args = train_args(model_dir, data, tmp_path / "multi", per_device_train_batch_size=2, max_steps=3)
    _finished(launch(config, args, overrides=("--num_processes", "2", *overrides)))
    history = log_history(tmp_path / "multi")
    assert history[0]["loss"] == pytest.approx(0.6931, abs=2e-3)  # policy == reference at step 1
    assert history[-1]["loss"] < history[0]["loss"]
    AutoModelForImageTextToText.from_pretrained(tmp_path / "multi")
