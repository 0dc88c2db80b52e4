"""With λ = α = μ = 0 chip is DPO: its logged log-probs equal TRL's `DPOTrainer` on the same data.

TRL's vision collator tokenises string prompts and completions with ``add_special_tokens=False``
and applies no chat template to them, while chip renders the processor's chat template, lets the
tokenizer add BOS where it does, and appends EOS to each response (so the model learns to stop).
The test therefore hands TRL the exact strings chip builds (BOS + rendered prompt, response + EOS)
and checks first that both sides tokenise the rows identically, then that the log-probs agree.
With conversational rows the two differ on purpose: TRL's completion is the rendered assistant
turn, which for LLaVA's template starts with a space and for Qwen's ends with a newline after EOS.
"""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForImageTextToText

from chip.data import load_preference_rows
from chip.modeling import VLMAdapter
from chip.modeling.pairs import unpack_pairs
from chip.training.cli import parse_config
from chip.training.collate import ChipCollator
from chip.training.reference import LiveReference
from chip.training.trainer import ChipTrainer
from tests.train_helpers import train_args, write_pairs

trl = pytest.importorskip("trl")


def _trl_rows(adapter: VLMAdapter, examples) -> list[dict]:
    tokenizer = adapter.processor.tokenizer
    rows = []
    for ex in examples:
        rows.append(
            {
                "images": ex.load_images(),
                "prompt": adapter.format_prompt(ex.prompt, 1),
                "chosen": ex.chosen + tokenizer.eos_token,
                "rejected": ex.rejected + tokenizer.eos_token,
            }
        )
    return rows


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_dpo_logps_match_trl(tiny_model, tmp_path, family):
    model_dir = tiny_model(family)
    data = write_pairs(tmp_path / "data", n=2)
    examples, _ = load_preference_rows(data)
    adapter = VLMAdapter.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir)
    with torch.no_grad():  # move the policy away from the reference so margins are non-zero
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    reference = AutoModelForImageTextToText.from_pretrained(model_dir)

    # --- chip, plain DPO
    config = parse_config(
        train_args(
            model_dir, data, tmp_path / "chip", segment_weight=0.0, token_weight=0.0, visual_weight=0.0
        )
    )
    collator = ChipCollator(adapter, score_corrupt=False, max_length=config.max_length)
    chip_trainer = ChipTrainer(
        model=model,
        args=config,
        train_dataset=examples,
        data_collator=collator,
        reference=LiveReference(reference),
    )
    model.eval()
    batch = collator(examples)
    with torch.no_grad():
        chip_trainer.compute_loss(model, batch)
    chip_logged = {k: v[-1] for k, v in chip_trainer._stored_metrics["eval"].items()}

    # --- TRL, same model, reference, processor and strings
    trl_rows = _trl_rows(adapter, examples)
    trl_config = trl.DPOConfig(
        output_dir=str(tmp_path / "trl"),
        report_to="none",
        use_cpu=True,
        beta=0.1,
        per_device_train_batch_size=2,
        max_length=None,
    )
    trl_trainer = trl.DPOTrainer(
        model=model,
        ref_model=reference,
        args=trl_config,
        train_dataset=Dataset.from_list(trl_rows),
        processing_class=adapter.processor,
    )
    trl_batch = trl_trainer.data_collator([dict(r) for r in trl_rows])

    # identical tokens: each TRL row, padding removed, is chip's row (its pair batch, unpacked)
    chip_rows = unpack_pairs(batch["real"])
    for i in range(4):
        trl_ids = trl_batch["input_ids"][i][trl_batch["attention_mask"][i].bool()]
        chip_ids = chip_rows["input_ids"][i][chip_rows["attention_mask"][i].bool()]
        assert trl_ids.tolist() == chip_ids.tolist()

    model.eval()
    with torch.no_grad():
        trl_trainer.compute_loss(model, trl_trainer._prepare_inputs(trl_batch))
    trl_logged = {k: v[-1] for k, v in trl_trainer._metrics["eval"].items()}
    # Same tokens, same weights: what is left is float32 noise from TRL's differently padded batch
    # (chip's sums equal an unpadded single-row forward exactly), ~2e-5 relative on sums of ~150
    # tokens. Rewards β(logp − ref) are differences of two such sums, so their tolerance is absolute.
    for name in ("logps/chosen", "logps/rejected"):
        assert chip_logged[name] == pytest.approx(trl_logged[name], rel=1e-4), name
    reward_tolerance = 0.1 * 2 * 1e-4 * abs(trl_logged["logps/rejected"])
    for name in ("rewards/chosen", "rewards/rejected", "rewards/margins"):
        assert chip_logged[name] == pytest.approx(trl_logged[name], abs=reward_tolerance), name
    assert abs(chip_logged["rewards/margins"]) > 1e-3  # the comparison is not between zeros
