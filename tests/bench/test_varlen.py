"""The variable-length presets of `bench/workload.py` and the decoder count of `bench/padding.py`.

Each preset runs here on a smoke-sized copy: its family, its kinds of draws and its variants, with
a tiny model and tiny images (16-token tiles for LLaVA-NeXT, 16 px per token for Qwen2-VL), so
what is checked is the code path, not the numbers a full run reports.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaModel

from bench.bench_step import main
from bench.distributions import ImageSizes, ResponseLengths
from bench.padding import DecoderCount, DecoderTotals, real_positions
from bench.presets import LLAVA_NEXT_PINPOINTS, PRESETS
from bench.variants import VARIANTS
from bench.workload import build_workload
from chip.modeling import response_logps
from chip.modeling.pairs import pair_attention_mask

TINY = dict(
    vocab_size=512,
    hidden_size=32,
    intermediate_size=64,
    num_layers=1,
    num_heads=2,
    num_kv_heads=2,
    vision_hidden_size=16,
    vision_intermediate_size=32,
    vision_layers=1,
    vision_heads=1,
)
LENGTHS = ResponseLengths(median_words=6, min_words=2, max_words=30)
SMOKE = {
    "varlen": replace(
        PRESETS["varlen"], sizes=dict(TINY, num_image_tokens=16), response_lengths=LENGTHS, prompt_tokens=30
    ),
    "anyres": replace(
        PRESETS["anyres"],
        sizes=dict(TINY, num_image_tokens=16, image_grid_pinpoints=LLAVA_NEXT_PINPOINTS),
        response_lengths=LENGTHS,
        prompt_tokens=30,
        image_sizes=ImageSizes(
            min_pixels=500, max_pixels=20_000, aspect_ratios=(1.0, 2.0, 1 / 2, 3.0, 1 / 3)
        ),
    ),
    "qwen-dynamic": replace(
        PRESETS["qwen-dynamic"],
        sizes=dict(TINY, num_image_tokens=4, min_pixels=256, max_pixels=64 * 256),
        response_lengths=LENGTHS,
        prompt_tokens=30,
        batch_size=4,
        image_sizes=ImageSizes(min_pixels=4 * 256, max_pixels=40 * 256, multiple=16),
    ),
}
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def workloads():
    torch.manual_seed(0)
    return {name: build_workload(preset, CPU, num_examples=12) for name, preset in SMOKE.items()}


@pytest.mark.parametrize("name", sorted(SMOKE))
def test_drawn_lengths_vary_and_match_the_examples(workloads, name):
    work = workloads[name]
    lengths = work.preset.response_lengths
    chosen = [tokens.chosen for tokens in work.tokens]
    rejected = [tokens.rejected for tokens in work.tokens]
    assert len(set(chosen)) > 3 and len(set(rejected)) > 3
    assert any(r < c for c, r in zip(chosen, rejected)) and any(r > c for c, r in zip(chosen, rejected))
    bounds = (lengths.tokens(lengths.min_words), lengths.tokens(lengths.max_words))
    assert all(bounds[0] <= n <= bounds[1] for n in chosen + rejected)
    for example, tokens, row in zip(work.examples, work.tokens, work.trl_rows):
        assert len(work.adapter.encode_response(example.chosen)) == tokens.chosen
        assert len(work.adapter.encode_response(example.rejected)) == tokens.rejected
        assert len(work.adapter.encode_prompt(example.load_images(), example.prompt)) == tokens.prompt
        assert tokens.prompt - tokens.image == work.preset.prompt_tokens
        assert row["chosen"] == example.chosen + work.adapter.tokenizer.eos_token
        assert tokens.real == tokens.prompt + tokens.chosen + tokens.rejected
    assert work.batch_tokens([0, 1]) == work.tokens[0].real + work.tokens[1].real


def test_response_lengths_are_long_tailed():
    lengths = ResponseLengths()
    draws = np.array([lengths.draw(np.random.default_rng(seed)) for seed in range(2000)])  # (N, 2) tokens
    words = draws / lengths.tokens_per_word
    assert 9 <= words.min() and words.max() <= 241
    median, mean = np.median(draws[:, 0]), draws[:, 0].mean()
    assert mean > 1.15 * median  # a long right tail
    assert 0.4 < (draws[:, 1] < draws[:, 0]).mean() < 0.6  # rejected as often shorter as longer


@pytest.mark.parametrize("name", ["anyres", "qwen-dynamic"])
def test_image_token_counts_vary_with_the_image_and_reach_trl(workloads, name):
    work = workloads[name]
    counts = [tokens.image for tokens in work.tokens]
    assert len(set(counts)) > 3
    if (
        name == "qwen-dynamic"
    ):  # one token per 16 x 16 pixels of the drawn size (tiny: 8 px patches, merged 2x2)
        sizes = [example.load_images()[0].size for example in work.examples]
        assert counts == [(width // 16) * (height // 16) for width, height in sizes]
    trl = VARIANTS["trl-completion"](work, _settings())
    image_id = work.adapter.image_token_id
    for ids, batch in zip(work.batches(2), trl.batches):
        per_row = (batch["input_ids"] == image_id).sum(-1).tolist()  # (2B,) chosen rows, then rejected rows
        assert per_row == [work.tokens[i].image for i in ids] * 2


@pytest.mark.parametrize("name", ["anyres", "qwen-dynamic"])
def test_trl_scores_the_same_rows_as_chip(workloads, name):
    """TRL's DPOTrainer reads LLaVA-NeXT's image_sizes and Qwen2-VL's image_grid_thw right: on the
    same weights its mean response log-probs equal chip's, example for example summed."""
    work = workloads[name]
    trl, chip = VARIANTS["trl-completion"](work, _settings()), VARIANTS["chip-dpo"](work, _settings())
    with torch.no_grad():
        scores = response_logps(chip.trainer.model, chip.batches[0]["real"])
    trl.step(0)
    metrics = trl.trainer._metrics["train"]
    sums = scores.logps.sum(-1)  # (2B,) chosen, then rejected
    size = work.preset.batch_size
    torch.testing.assert_close(metrics["logps/chosen"][-1], float(sums[:size].mean()), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(metrics["logps/rejected"][-1], float(sums[size:].mean()), rtol=1e-5, atol=1e-4)


def test_real_positions_reads_each_mask_form():
    """Two rows of 5 and 3 real tokens, padded to T = 5: 8 real of 10 positions."""
    embeds = torch.zeros(2, 5, 4)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    assert int(real_positions(embeds, mask)) == 8
    causal = torch.ones(5, 5, dtype=torch.bool).tril()
    four_d = (causal & mask.bool()[:, None, :])[:, None]  # (2, 1, 5, 5) padding keys hidden
    assert int(real_positions(embeds, four_d)) == 8
    additive = torch.zeros(four_d.shape).masked_fill(~four_d, torch.finfo(torch.float32).min)
    assert int(real_positions(embeds, additive)) == 8
    assert int(real_positions(embeds, None)) == 10
    packed = torch.zeros(1, 10, 4)  # rows of 5 and 3 packed into one, 2 positions of padding after
    assert int(real_positions(packed, None, cu_seq_lens_q=torch.tensor([0, 5, 8]))) == 8


def test_real_positions_of_chip_pair_mask():
    """Pairs [prompt 4, chosen 2, rejected 3] and [prompt 2, chosen 1, rejected 1] in T = 9: 9 + 4 real."""
    lengths = torch.tensor([[4, 2, 3], [2, 1, 1]])
    for dtype in (torch.bool, torch.float32):
        assert int(real_positions(torch.zeros(2, 9), pair_attention_mask(lengths, 9, dtype))) == 13


def test_decoder_count_on_a_padded_batch():
    """A real decoder called twice with rows of 6 and 2 tokens padded to 6: 24 positions, 16 real."""
    decoder = LlamaModel(
        LlamaConfig(
            vocab_size=32,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
        )
    )
    ids = torch.randint(0, 32, (2, 6))
    mask = torch.tensor([[1] * 6, [1, 1, 0, 0, 0, 0]])
    with DecoderCount([decoder]) as count, torch.no_grad():
        decoder(input_ids=ids, attention_mask=mask)
        decoder(inputs_embeds=decoder.embed_tokens(ids), attention_mask=mask)
    assert count.totals == DecoderTotals(calls=2, positions=24, real=16)
    assert count.totals.padding_fraction == pytest.approx(1 / 3)
    decoder(input_ids=ids, attention_mask=mask)  # after the block: not counted
    assert count.totals.calls == 2


def test_variable_preset_runs_and_counts_each_layout(monkeypatch, tmp_path):
    """The anyres preset's whole path; the decoder counts equal what each layout pads by hand:
    TRL runs 2B rows [prompt, response] padded to the longest, chip's padded layout B rows
    [prompt, chosen, rejected], and chip's default packs them without padding."""
    monkeypatch.setitem(PRESETS, "smoke-anyres", SMOKE["anyres"])
    variants = [*SMOKE["anyres"].variants, "chip-dpo-padded"]
    report = main(
        [
            "--preset",
            "smoke-anyres",
            "--warmup",
            "0",
            "--repeats",
            "2",
            "--no-memory",
            "--no-kl-error",
            "--variants",
            ",".join(variants),
            "--out",
            str(tmp_path / "varlen.json"),
        ]
    )
    assert report["num_batches"] == 3 and set(report["variants"]) == set(variants)
    work = build_workload(SMOKE["anyres"], CPU, num_examples=12)
    tokens = [[work.tokens[i] for i in ids] for ids in work.batches(3)[:2]]  # the two timed steps' batches
    real = [sum(t.real for t in batch) for batch in tokens]
    trl_width = [max(t.prompt + max(t.chosen, t.rejected) for t in batch) for batch in tokens]
    pair_width = [max(t.real for t in batch) for batch in tokens]
    trl = report["variants"]["trl-completion"]
    assert trl["batch_tokens"] == real
    assert trl["decoder_positions"] == [2 * 8 * width for width in trl_width]  # policy + reference, 2B rows
    assert trl["decoder_real"] == [
        2 * sum(2 * t.prompt + t.chosen + t.rejected for t in batch) for batch in tokens
    ]
    padded = report["variants"]["chip-dpo-padded"]  # B rows [prompt, chosen, rejected, padding]
    assert padded["decoder_positions"] == [2 * 4 * width for width in pair_width]
    assert padded["decoder_real"] == [2 * r for r in real]
    packed = report["variants"]["chip-dpo"]  # the same rows back to back: real tokens only
    assert packed["decoder_positions"] == packed["decoder_real"] == [2 * r for r in real]
    for name, result in report["variants"].items():
        assert (
            result["padding_fraction"] == 0.0
            if name in ("chip-dpo", "chip-live", "chip-precomputed")
            else (0.0 < result["padding_fraction"] < 1.0)
        )
        assert result["tokens_per_second"] == pytest.approx(sum(real) / sum(result["step_seconds"]))
        assert result["positions_ratio_to_trl_completion"] > 0


def _settings() -> dict:
    return dict(
        learning_rate=1e-4,
        kl_top_k=64,
        num_batches=2,
        gradient_checkpointing=False,
        output_dir=tempfile.mkdtemp(prefix="chip-bench-test-"),
    )
