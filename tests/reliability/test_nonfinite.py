"""Numerical faults: a NaN/inf loss or gradient stops the run after saving state, or is skipped.

The fault is injected where real ones come from, the model's forward pass: the collator's output
is wrapped so that the pixels of one example's real image are NaN. Its policy and reference
log-probs of W and L become NaN (C uses the separately noised image and stays finite), the loss
follows. With ``--on_nonfinite error`` (the default) the run stops
with one line naming the step, the example id and the term, after writing the state before that
step to ``output_dir/nonfinite-step-N``, which resumes. With ``--on_nonfinite skip`` the batch is
skipped, counted and logged, and the NaN never reaches the weights.

A non-finite *gradient* with a finite loss is injected by a gradient hook on the LM head, active
while the trainer computes POISONED's batch.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

import chip.training.assembly
from chip.training.collate import ChipCollator
from chip.training.trainer import ChipTrainer
from tests.reliability.conftest import Run, assert_one_line_error, log_history
from tests.train_helpers import train_args, write_pairs

POISONED = "ex5"  # the example whose real image gets NaN pixels
STEPS = 4  # 8 pairs, batch 2: one epoch, so the poisoned example is in exactly one step


class Poison:
    """Wraps `ChipCollator.from_config`: records each batch's ids, poisons POISONED's batch.

    Batches are collated one ahead of training (the dataloader prefetches), so the gradient hook
    reads ``training_poisoned``, set by the trainer's `compute_loss` for the batch it computes.
    """

    def __init__(self, where: str) -> None:
        self.where = where  # "pixels": NaN pixels in POISONED's image; "gradient": NaN LM-head gradient
        self.batches: list[list[str]] = []
        self.active = True
        self.training_poisoned = False

    def wrap(self, build: Callable[..., Any]) -> Callable[..., Any]:
        def build_poisoned(*args: Any, **kwargs: Any) -> Callable[[list], dict]:
            collator = build(*args, **kwargs)

            def collate(examples: list) -> dict:
                batch = collator(examples)
                self.batches.append(list(batch["ids"]))
                if self.active and POISONED in batch["ids"] and self.where == "pixels":
                    pixels = batch["real"]["pixel_values"]  # one image per example: (B, ...) or (2B, ...)
                    index, num = batch["ids"].index(POISONED), len(batch["ids"])
                    pixels[[row for row in range(pixels.shape[0]) if row % num == index]] = float("nan")
                return batch

            return collate

        return build_poisoned

    @property
    def step(self) -> int:
        """The 1-based optimizer step whose batch held POISONED (one batch per step here)."""
        return next(i for i, ids in enumerate(self.batches, 1) if POISONED in ids)


@pytest.fixture
def poison(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Iterator[Poison]:
    injector = Poison(getattr(request, "param", "pixels"))
    monkeypatch.setattr(ChipCollator, "from_config", injector.wrap(ChipCollator.from_config))
    if injector.where == "gradient":
        prepare, compute_loss = chip.training.assembly.prepare_policy, ChipTrainer.compute_loss

        def prepare_with_hook(model: Any, *args: Any) -> Any:
            model = prepare(model, *args)
            head = model.get_output_embeddings().weight
            head.register_hook(lambda grad: grad * float("nan") if injector.training_poisoned else grad)
            return model

        def compute_loss_noting_batch(
            self: ChipTrainer, model: Any, inputs: dict, *args: Any, **kwargs: Any
        ) -> Any:
            injector.training_poisoned = injector.active and POISONED in inputs["ids"]
            return compute_loss(self, model, inputs, *args, **kwargs)

        monkeypatch.setattr(chip.training.assembly, "prepare_policy", prepare_with_hook)
        monkeypatch.setattr(ChipTrainer, "compute_loss", compute_loss_noting_batch)
    yield injector


@pytest.fixture
def pairs(tmp_path: Path) -> Path:
    return write_pairs(tmp_path / "data", n=8)


def _train(run_chip: Callable[..., Run], model: Path, data: Path, out: Path, **overrides: Any) -> Run:
    return run_chip(
        ["train", *train_args(model, data, out, max_steps=STEPS, per_device_train_batch_size=2, **overrides)]
    )


def _all_finite(weights: dict[str, torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(tensor).all()) for tensor in weights.values())


def test_nan_loss_stops_after_saving_state_and_names_step_id_and_term(
    poison: Poison, pairs: Path, tmp_path: Path, tiny_model: Callable[..., Path], run_chip: Callable[..., Run]
) -> None:
    out = tmp_path / "out"
    message = assert_one_line_error(_train(run_chip, tiny_model("llava"), pairs, out))

    step = poison.step
    assert message.startswith(
        f"step {step}: non-finite policy_chosen_logps, ref_chosen_logps, kl_chosen, "
        "policy_rejected_logps, ref_rejected_logps, kl_rejected (then "
    )
    assert f"for example ids ['{POISONED}']" in message
    saved = out / f"nonfinite-step-{step}"
    assert f"saved to {saved}" in message
    assert not (out / "model.safetensors").exists()  # the run did not pretend to finish

    report = json.loads((saved / "nonfinite.json").read_text())
    assert report["step"] == step and report["ids"] == [POISONED]
    assert "policy_rejected_logps" in report["terms"] and "chosen_corrupt" not in str(report["terms"])
    assert "loss/text" in report["loss_terms"]
    assert json.loads((saved / "trainer_state.json").read_text())["global_step"] == step - 1
    assert _all_finite(load_file(saved / "model.safetensors"))
    assert (saved / "optimizer.pt").exists() and (saved / "processor_config.json").exists()

    # The saved state is a checkpoint: once the cause is gone, the run continues from it.
    poison.active = False
    resumed = _train(run_chip, tiny_model("llava"), pairs, out, resume_from_checkpoint=saved)
    assert resumed.code == 0, resumed.err[-2000:]
    assert [h["step"] for h in log_history(out)] == list(range(1, STEPS + 1))


def test_nan_loss_with_skip_drops_the_batch_and_keeps_the_weights_finite(
    poison: Poison,
    pairs: Path,
    tmp_path: Path,
    tiny_model: Callable[..., Path],
    run_chip: Callable[..., Run],
    caplog: pytest.LogCaptureFixture,
) -> None:
    out = tmp_path / "out"
    run = _train(run_chip, tiny_model("llava"), pairs, out, on_nonfinite="skip")

    assert run.code == 0 and "Traceback" not in run.err, run.err[-2000:]
    history = log_history(out)
    assert [h["step"] for h in history] == list(range(1, STEPS + 1))
    step = poison.step
    assert history[-1]["skipped_nonfinite_batches"] == 1.0
    assert all("skipped_nonfinite_batches" not in h for h in history[: step - 1])
    [warning] = [r.getMessage() for r in caplog.records if "batch skipped" in r.getMessage()]
    assert warning.startswith(f"step {step}: non-finite policy_chosen_logps, ")
    assert warning.endswith(f" for example ids ['{POISONED}']: batch skipped (1 so far)")
    # 0 × NaN in the backward makes the skipped batch's gradient NaN; the update is dropped too,
    # so no NaN reaches the weights (clipping alone would have spread it to every parameter).
    assert _all_finite(load_file(out / "model.safetensors"))
    assert all(h["loss"] == h["loss"] for h in history[step:])  # later steps train normally (no NaN)


@pytest.mark.parametrize("poison", ["gradient"], indirect=True)
def test_nan_gradient_stops_after_saving_state(
    poison: Poison, pairs: Path, tmp_path: Path, tiny_model: Callable[..., Path], run_chip: Callable[..., Run]
) -> None:
    """The loss is finite; only the gradient is NaN. It is caught before the optimizer applies it."""
    out = tmp_path / "out"
    message = assert_one_line_error(_train(run_chip, tiny_model("llava"), pairs, out))

    step = poison.step
    assert message.startswith(f"step {step}: non-finite gradient (norm nan) for example ids ")
    assert POISONED in message and f"saved to {out / f'nonfinite-step-{step}'}" in message
    assert _all_finite(load_file(out / f"nonfinite-step-{step}" / "model.safetensors"))


@pytest.mark.parametrize("poison", ["gradient"], indirect=True)
def test_nan_gradient_with_skip_drops_only_that_update(
    poison: Poison, pairs: Path, tmp_path: Path, tiny_model: Callable[..., Path], run_chip: Callable[..., Run]
) -> None:
    out = tmp_path / "out"
    run = _train(run_chip, tiny_model("llava"), pairs, out, on_nonfinite="skip")

    assert run.code == 0, run.err[-2000:]
    history = log_history(out)
    assert history[-1]["skipped_nonfinite_updates"] == 1.0 and history[-1]["skipped_nonfinite_batches"] == 0.0
    assert _all_finite(load_file(out / "model.safetensors"))
