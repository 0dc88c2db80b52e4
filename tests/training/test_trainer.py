"""`chip train` end to end on tiny models of every family: it learns, saves, resumes, and the
precomputed reference matches the live one."""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from chip.testing.tiny import FAMILIES
from chip.training.cli import parse_config, run_precompute
from tests.train_helpers import train, train_args, write_pairs

LEARN_STEPS = 10


def _learn(tiny_model, tmp_path, family: str, use_peft: bool, reference: str) -> list[dict]:
    data = write_pairs(tmp_path / "data")
    model_dir = tiny_model(family)
    extra = {}
    if reference == "precomputed":
        cache = tmp_path / "cache"
        run_precompute(parse_config(train_args(model_dir, data, tmp_path / "pre", reference_cache=cache)))
        extra = {"reference": "precomputed", "reference_cache": cache}
    elif reference == "none":
        extra = {"reference": "none", "token_weight": 0.0}
    lr = 1e-2 if use_peft else 5e-3
    return train(
        model_dir,
        data,
        tmp_path / "out",
        max_steps=LEARN_STEPS,
        use_peft=use_peft,
        learning_rate=lr,
        lora_r=8,
        lora_alpha=16,
        **extra,
    )


@pytest.mark.parametrize("use_peft", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("family", FAMILIES)
def test_full_chip_learns_eight_pairs(tiny_model, tmp_path, family, use_peft):
    """The full CHiP loss (λ=3, α=0.1, μ=1) with a live reference: loss falls, accuracy reaches 1."""
    history = _learn(tiny_model, tmp_path, family, use_peft, "model")
    assert len(history) == LEARN_STEPS
    assert all(math.isfinite(h["loss"]) for h in history)
    first, last = history[0], history[-1]
    assert last["loss"] < 0.5 * first["loss"]
    assert max(h["rewards/accuracies"] for h in history) == 1.0
    for name in ("visual/margins", "kl/chosen", "kl/rejected", "logps/chosen_corrupt", "rewards/margins"):
        assert name in last

    out = tmp_path / "out"
    saved = AutoProcessor.from_pretrained(out).tokenizer
    assert saved.get_vocab() == AutoProcessor.from_pretrained(tiny_model(family)).tokenizer.get_vocab()
    base = AutoModelForImageTextToText.from_pretrained(tiny_model(family))
    base_weights = {name: p.detach().clone() for name, p in base.state_dict().items()}
    if use_peft:
        from peft import PeftModel

        trained = PeftModel.from_pretrained(base, out).merge_and_unload()
    else:
        trained = AutoModelForImageTextToText.from_pretrained(out)
    changed = [name for name, p in trained.state_dict().items() if not torch.equal(p, base_weights[name])]
    assert changed, "the saved model equals the base model: training saved nothing it learned"


# Every family x {full, LoRA} x {precomputed, none}: LLaVA in the default run, the rest marked slow.
REFERENCE_MATRIX = [
    pytest.param(
        family,
        peft,
        reference,
        marks=() if family == "llava" else pytest.mark.slow,
        id=f"{family}-{'lora' if peft else 'full'}-{reference}",
    )
    for family in FAMILIES
    for peft in (False, True)
    for reference in ("precomputed", "none")
]


@pytest.mark.parametrize(("family", "use_peft", "reference"), REFERENCE_MATRIX)
def test_other_reference_modes_learn(tiny_model, tmp_path, family, use_peft, reference):
    history = _learn(tiny_model, tmp_path, family, use_peft, reference)
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    assert max(h["rewards/accuracies"] for h in history) == 1.0


@pytest.mark.parametrize("chunk", [0, 4], ids=["whole-head", "head-in-chunks"])
def test_precomputed_reference_gives_the_model_reference_loss(tiny_model, tmp_path, chunk):
    """With k = vocabulary the cached KL is exact: one batch scored both ways gives the same loss
    (with the LM head applied whole, or in chunks of 4 positions)."""
    from chip.data import load_preference_rows
    from chip.modeling import VLMAdapter
    from chip.training.collate import ChipCollator
    from chip.training.reference import LiveReference, PrecomputedReference
    from chip.training.reference_cache import ReferenceCache
    from chip.training.trainer import ChipTrainer

    data = write_pairs(tmp_path / "data", n=4)
    model_dir = tiny_model("llava")
    cache_dir = tmp_path / "cache"
    run_precompute(
        parse_config(train_args(model_dir, data, tmp_path / "pre", reference_cache=cache_dir, kl_top_k=0))
    )

    examples, _ = load_preference_rows(data)
    adapter = VLMAdapter.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir)
    # perturb the policy so policy != reference and every term is non-trivial
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    reference = AutoModelForImageTextToText.from_pretrained(model_dir)
    cache = ReferenceCache.open(cache_dir)
    losses = {}
    for mode in ("model", "precomputed"):
        config = parse_config(
            train_args(
                model_dir,
                data,
                tmp_path / mode,
                reference=mode,
                reference_cache=cache_dir,
                logits_chunk_size=chunk,
            )
        )
        collator = ChipCollator(
            adapter,
            seed=config.seed,
            max_length=config.max_length,
            reference_cache=cache if mode == "precomputed" else None,
        )
        trainer = ChipTrainer(
            model=model,
            args=config,
            train_dataset=examples,
            data_collator=collator,
            reference=LiveReference(reference) if mode == "model" else PrecomputedReference(cache),
        )
        model.eval()
        with torch.no_grad():
            losses[mode] = trainer.compute_loss(model, collator(examples))
    torch.testing.assert_close(losses["precomputed"], losses["model"], rtol=1e-5, atol=1e-5)


def test_stale_cache_is_refused(tiny_model, tmp_path):
    from chip.training.reference_cache import StaleCacheError

    data = write_pairs(tmp_path / "data", n=4)
    model_dir = tiny_model("llava")
    cache_dir = tmp_path / "cache"
    run_precompute(parse_config(train_args(model_dir, data, tmp_path / "pre", reference_cache=cache_dir)))
    with pytest.raises(StaleCacheError, match=r"noise_step: 500 -> 400"):
        train(
            model_dir,
            data,
            tmp_path / "out",
            reference="precomputed",
            reference_cache=cache_dir,
            noise_step=400,
        )


def test_resume_from_checkpoint_matches_uninterrupted_run(tiny_model, tmp_path):
    """A run stopped after its step-3 checkpoint and resumed ends like the uninterrupted 6-step run."""
    data = write_pairs(tmp_path / "data")
    model_dir = tiny_model("llava")
    common = dict(max_steps=6, save_strategy="steps", save_steps=3, per_device_train_batch_size=2)
    full = train(model_dir, data, tmp_path / "full", **common)

    out = tmp_path / "resumed"
    train(model_dir, data, out, **common)
    for leftover in ("checkpoint-6", "trainer_state.json", "model.safetensors"):
        path = out / leftover
        if path.is_dir():
            import shutil

            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    resumed = train(model_dir, data, out, resume_from_checkpoint=out / "checkpoint-3", **common)
    assert [h["step"] for h in resumed][-1] == 6
    assert resumed[-1]["loss"] == pytest.approx(full[-1]["loss"], rel=1e-4, abs=1e-6)
    assert resumed[-1]["rewards/margins"] == pytest.approx(full[-1]["rewards/margins"], rel=1e-4, abs=1e-6)


def test_log_history_has_method_metrics(tiny_model, tmp_path):
    data = write_pairs(tmp_path / "data", n=4)
    history = train(tiny_model("llava"), data, tmp_path / "out", max_steps=1)
    state = json.loads((tmp_path / "out" / "trainer_state.json").read_text())
    assert state["global_step"] == 1
    expected = {
        "loss",
        "rewards/chosen",
        "rewards/rejected",
        "rewards/margins",
        "rewards/accuracies",
        "visual/margins",
        "visual/accuracies",
        "kl/chosen",
        "kl/rejected",
        "logps/chosen",
        "logps/rejected",
        "logps/chosen_corrupt",
        "loss/text",
    }
    assert expected <= set(history[0])
