"""Seeded sampling: exact softmax samples, batch-size invariance, kill -9 and resume, more samples later."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from transformers import TemperatureLogitsWarper, TopPLogitsWarper

from chip.cli import main as chip_main
from chip.errors import ConfigError
from chip.pairs.sampling import SamplingSettings, SeededSampler, sample_responses
from chip.pairs.sources import folder_items
from tests.pairs.conftest import PROMPT

PROBS = torch.tensor([0.5, 0.25, 0.15, 0.1])


def draw(temperature: float, top_p: float, rows: int = 20_000) -> torch.Tensor:
    """Token frequencies of `rows` draws from PROBS, one row (key) each, all at step 0."""
    sampler = SeededSampler(range(rows), prompt_length=3, temperature=temperature, top_p=top_p)
    scores = PROBS.log().expand(rows, -1).clone()  # (rows, 4)
    tokens = sampler(torch.zeros(rows, 3, dtype=torch.long), scores).argmax(dim=-1)  # (rows,)
    return torch.bincount(tokens, minlength=4) / rows


@pytest.mark.parametrize(
    ("temperature", "top_p", "expected"),
    [
        (1.0, 1.0, [0.5, 0.25, 0.15, 0.1]),
        # T = 2: p^(1/2) / sum = [0.70711, 0.5, 0.38730, 0.31623] / 1.91063
        (2.0, 1.0, [0.37009, 0.26169, 0.20271, 0.16551]),
        # top-p 0.7 keeps the smallest set reaching 0.7: {0.5, 0.25} (0.75), renormalised
        (1.0, 0.7, [2 / 3, 1 / 3, 0.0, 0.0]),
    ],
)
def test_gumbel_max_draws_the_softmax_by_hand(temperature, top_p, expected) -> None:
    """argmax(logit/T + Gumbel) is a softmax(logit/T) sample; 20,000 draws land within 5 standard
    errors (sqrt(p(1-p)/n) <= 0.0036) of each hand-computed probability."""
    frequencies = draw(temperature, top_p)
    torch.testing.assert_close(frequencies, torch.tensor(expected), atol=5 * 0.0036, rtol=0)
    assert all(frequencies[k] == 0 for k, p in enumerate(expected) if p == 0)


def test_temperature_and_top_p_match_transformers() -> None:
    """Before the noise, the scores are transformers' TemperatureLogitsWarper then TopPLogitsWarper."""
    logits = torch.randn(6, 50, generator=torch.Generator().manual_seed(0))
    ids = torch.zeros(6, 2, dtype=torch.long)
    sampler = SeededSampler(range(6), prompt_length=2, temperature=0.7, top_p=0.8)
    noise = -torch.log(-torch.log(sampler.uniforms(0, 50, logits.device)))
    ours = sampler(ids, logits.clone()) - noise
    theirs = TopPLogitsWarper(0.8)(ids, TemperatureLogitsWarper(0.7)(ids, logits.clone()))
    assert torch.equal(torch.isinf(ours), torch.isinf(theirs))
    torch.testing.assert_close(ours[~torch.isinf(ours)], theirs[~torch.isinf(theirs)])


def test_noise_depends_only_on_key_and_step() -> None:
    batch = SeededSampler([11, 22, 33], prompt_length=0, temperature=1.0, top_p=1.0)
    alone = SeededSampler([33], prompt_length=0, temperature=1.0, top_p=1.0)
    u3 = batch.uniforms(3, 100, torch.device("cpu"))
    assert torch.equal(u3[2], alone.uniforms(3, 100, torch.device("cpu"))[0])
    assert not torch.equal(u3[2], alone.uniforms(4, 100, torch.device("cpu"))[0])
    assert not torch.equal(u3[0], u3[1])
    assert 0 < u3.min() and u3.max() < 1


def settings(**overrides) -> SamplingSettings:
    return SamplingSettings(**{"samples": 3, "max_new_tokens": 40, "batch_size": 4, **overrides})


def test_more_samples_later_and_settings_guard(captioner, coco, tmp_path) -> None:
    """K=2 then K=4 in one file holds the same samples as K=4 at once; other settings are refused."""
    items, _ = folder_items(coco.images, [PROMPT], seed=0)
    model = captioner("llava")
    grown = tmp_path / "grown.ndjson"
    sample_responses(model, items, grown, settings(samples=2), progress=False)
    sample_responses(model, items, grown, settings(samples=4), progress=False)
    direct = tmp_path / "direct.ndjson"
    sample_responses(model, items, direct, settings(samples=4), progress=False)
    assert sorted(grown.read_text().splitlines()) == sorted(direct.read_text().splitlines())
    with pytest.raises(ConfigError, match="other settings"):
        sample_responses(model, items, grown, settings(samples=5, temperature=0.5), progress=False)


def test_kill_and_restart_give_the_same_files(captioner, coco, tmp_path) -> None:
    """`chip pairs` killed with SIGKILL while sampling, then run again: samples and pairs are the same
    bytes as those of an uninterrupted run; a last line torn by a kill is cut and redone."""
    argv = [
        "pairs",
        "--model",
        str(captioner("llava")),
        "--images",
        str(coco.images),
        "--annotations",
        str(coco.annotations),
        "--prompts",
        str(coco.prompts),
        "--samples",
        "6",
        "--max_new_tokens",
        "40",
    ]
    reference = tmp_path / "reference"
    assert chip_main([*argv, "--batch_size", "4", "--output", str(reference)]) == 0

    killed = tmp_path / "killed"
    samples = killed / "samples.ndjson"
    child = subprocess.Popen(
        [sys.executable, "-m", "chip", *argv, "--batch_size", "1", "--output", str(killed)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while (not samples.exists() or samples.read_bytes().count(b"\n") < 2) and time.monotonic() < deadline:
        assert child.poll() is None, "chip pairs ended before it could be killed"
        time.sleep(0.01)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert 2 <= samples.read_bytes().count(b"\n") < 24 and not (killed / "pairs.jsonl").exists()

    assert chip_main([*argv, "--batch_size", "4", "--output", str(killed)]) == 0
    for name in ("samples.ndjson", "pairs.jsonl", "pairs_report.json"):
        assert (killed / name).read_bytes() == (reference / name).read_bytes().replace(
            str(reference).encode(), str(killed).encode()
        ), name

    lines = samples.read_bytes().splitlines(keepends=True)
    samples.write_bytes(b"".join(lines[:-1]) + lines[-1][:30])
    assert chip_main([*argv, "--batch_size", "4", "--output", str(killed)]) == 0
    assert samples.read_bytes() == (reference / "samples.ndjson").read_bytes()
