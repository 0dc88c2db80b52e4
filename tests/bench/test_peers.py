"""The peer trainers of the step benchmark (`bench/peers`): ms-swift's and LLaMA-Factory's DPO.

The default tests need no peer installed: the harness reports a peer it cannot start in the
table and runs the rest, the report's ratios and targets, the log-prob comparison and the
transformers-4 checkpoint are checked on hand-made inputs. The tests that run a peer are slow
(a peer's pipeline takes ~30-60 s to start on a 2-core CPU) and skip, saying why, where
``bash bench/peers/setup.sh`` has not been run.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

import bench.bench_step
import bench.peers.variant as peer_variant
from bench.bench_step import main
from bench.distributions import ResponseLengths
from bench.peers.compat import to_transformers4
from bench.peers.report import peer_summary
from bench.peers.variant import PEERS, PeerUnavailable, PeerVariant, compare_logps
from bench.presets import PRESETS
from bench.variants import Variant
from bench.workload import build_workload
from chip.testing import build_tiny_model

CPU = torch.device("cpu")


def test_a_peer_that_cannot_start_is_reported_and_the_rest_runs(monkeypatch, tmp_path):
    monkeypatch.setattr(peer_variant, "VENVS", tmp_path / "no-venvs")
    out = tmp_path / "report.json"
    report = main(
        [
            "--preset",
            "smoke",
            "--variants",
            "trl-completion,llamafactory-dpo",
            "--warmup",
            "0",
            "--repeats",
            "1",
            "--no-memory",
            "--no-kl-error",
            "--out",
            str(out),
        ]
    )
    peer = report["variants"]["llamafactory-dpo"]
    assert (
        peer["unavailable"]
        == f"{tmp_path / 'no-venvs' / 'llamafactory' / 'bin' / 'python'} not found: run bench/peers/setup.sh"
    )
    assert "step_seconds" not in peer
    assert len(report["variants"]["trl-completion"]["step_seconds"]) == 1
    assert report["peers"] == {"unavailable": {"llamafactory-dpo": peer["unavailable"]}, "ran": []}
    assert (
        json.loads(out.read_text())["variants"]["llamafactory-dpo"]["label"]
        == PEERS["llamafactory-dpo"].label
    )


class DiesOnItsSecondStep(Variant):
    """Stands for a peer whose worker process dies during the run (e.g. the out-of-memory killer)."""

    key, label = "dies", "a peer that dies"

    def __init__(self, workload, settings):
        super().__init__(workload, settings)
        self.steps = 0

    def step(self, index: int) -> float:
        self.steps += 1
        if self.steps == 2:
            raise PeerUnavailable("the worker was killed")
        return 0.7


def test_a_peer_that_dies_during_the_run_is_reported_and_the_rest_finishes(monkeypatch, tmp_path):
    monkeypatch.setitem(bench.bench_step.VARIANTS, "dies", DiesOnItsSecondStep)
    report = main(
        [
            "--preset",
            "smoke",
            "--variants",
            "trl-completion,dies",
            "--warmup",
            "1",
            "--repeats",
            "2",
            "--no-memory",
            "--no-kl-error",
            "--out",
            str(tmp_path / "report.json"),
        ]
    )
    assert report["variants"]["dies"] == {
        "label": "a peer that dies",
        "unavailable": "during the run: the worker was killed",
    }
    assert len(report["variants"]["trl-completion"]["step_seconds"]) == 2


def test_ratios_to_the_fastest_peer_and_the_targets():
    """Peers at 4.0 s / 900 MB and 5.0 s / 800 MB: the fastest is the first, the lowest in memory the
    second. chip DPO 2.0 s -> 0.5 (<= 0.6 met), precomputed 3.6 s -> 0.9 (<= 0.8 not met), live 4.0 s
    -> 1.0 (<= 1.0 met); memory 400 / 800 = 0.5, 880 / 800 = 1.1 (not met). In CPU time the second
    peer is the faster (2.5 s): precomputed 2.25 / 2.5 = 0.9 (not met), DPO 1.0 / 2.5 = 0.4 (met)."""
    results = {
        "swift-dpo": {"median_seconds": 4.0, "median_cpu_seconds": 3.0, "peak_bytes": 900},
        "llamafactory-dpo": {"median_seconds": 5.0, "median_cpu_seconds": 2.5, "peak_bytes": 800},
        "swift-dpo-padding-free": {"label": "x", "unavailable": "ValueError: no flash attention"},
        "chip-dpo": {"median_seconds": 2.0, "median_cpu_seconds": 1.0, "peak_bytes": 400},
        "chip-precomputed": {"median_seconds": 3.6, "median_cpu_seconds": 2.25, "peak_bytes": 880},
        "chip-live": {"median_seconds": 4.0, "median_cpu_seconds": 2.5, "peak_bytes": 800},
    }
    summary = peer_summary(results)
    assert summary["fastest_peer"] == "swift-dpo" and summary["lowest_memory_peer"] == "llamafactory-dpo"
    assert summary["unavailable"] == {"swift-dpo-padding-free": "ValueError: no flash attention"}
    targets = summary["targets"]
    assert targets["chip-dpo"]["time_ratio"] == pytest.approx(0.5) and targets["chip-dpo"]["time_met"]
    assert targets["chip-precomputed"]["time_ratio"] == pytest.approx(0.9)
    assert not targets["chip-precomputed"]["time_met"]
    assert targets["chip-live"]["time_met"] and targets["chip-live"]["memory_met"]
    assert targets["chip-dpo"]["memory_ratio"] == pytest.approx(0.5)
    assert targets["chip-precomputed"]["memory_ratio"] == pytest.approx(1.1)
    assert not targets["chip-precomputed"]["memory_met"]
    assert results["llamafactory-dpo"]["time_ratio_to_fastest_peer"] == pytest.approx(1.25)
    assert summary["fastest_cpu_peer"] == "llamafactory-dpo"
    assert (
        targets["chip-precomputed"]["cpu_ratio"] == pytest.approx(0.9)
        and not targets["chip-precomputed"]["cpu_met"]
    )
    assert targets["chip-dpo"]["cpu_ratio"] == pytest.approx(0.4) and targets["chip-dpo"]["cpu_met"]


def test_compare_logps_takes_the_worst_response():
    """|−10.0 − (−10.001)| = 0.001 (1e-4 relative) is the worst of the four responses."""
    trl = {"chosen": [[-10.0, -20.0]], "rejected": [[-30.0, -40.0]]}
    close = compare_logps({"chosen": [[-10.0, -20.0]], "rejected": [[-30.0, -40.0000001]]}, trl)
    assert close["agree"] and close["responses"] == 4
    far = compare_logps({"chosen": [[-10.001, -20.0]], "rejected": [[-30.0, -40.0]]}, trl)
    assert far["max_abs_diff"] == pytest.approx(1e-3) and far["max_rel_diff"] == pytest.approx(1e-4)
    assert not far["agree"]


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_transformers4_checkpoint_has_the_same_tensors(tmp_path, family):
    source = build_tiny_model(family, tmp_path / "v5")
    target = to_transformers4(source, tmp_path / "v4")
    before, after = load_file(source / "model.safetensors"), load_file(target / "model.safetensors")
    if family == "llava":  # 4.x nests CLIP's weights one level deeper
        before = {
            name.replace("vision_tower.", "vision_tower.vision_model.", 1)
            if name.startswith("vision_tower.")
            else name: t
            for name, t in before.items()
        }
    assert before.keys() == after.keys()
    assert all(torch.equal(before[name], after[name]) for name in before)
    tokenizer = json.loads((target / "tokenizer_config.json").read_text())
    assert tokenizer["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert "image_processor_type" in json.loads((target / "preprocessor_config.json").read_text())
    config = json.loads((target / "config.json").read_text())
    text = config["text_config"]
    assert "rope_parameters" not in text and text["rope_theta"] == 10000.0
    if family == "qwen2_vl":
        assert config["rope_scaling"]["mrope_section"] == text["rope_scaling"]["mrope_section"]


def _installed(venv: str) -> bool:
    return (peer_variant.VENVS / venv / "bin" / "python").exists()


@pytest.fixture(scope="module")
def varlen_workload():
    """The varlen preset's code path on a smoke-sized model; responses of 6+ words, so that no rejected
    response equals its chosen one (ms-swift drops such rows)."""
    sizes = dict(
        num_image_tokens=16,
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
    lengths = ResponseLengths(median_words=10, min_words=6, max_words=30)
    preset = replace(PRESETS["varlen"], sizes=sizes, response_lengths=lengths, prompt_tokens=30)
    work = build_workload(preset, CPU, num_examples=preset.batch_size)
    assert all(example.chosen != example.rejected for example in work.examples)
    return work


@pytest.mark.slow
@pytest.mark.parametrize("key", ["swift-dpo", "llamafactory-dpo"])
def test_peer_scores_the_same_rows_as_trl(varlen_workload, key):
    """On the same weights a peer's summed response log-probs equal TRL's, its first loss is log 2
    (policy = reference), and its decoder carries TRL's real tokens (two rows a pair, two models)."""
    if not _installed(PEERS[key].venv):
        pytest.skip(f"{key}: .venv-peers/{PEERS[key].venv} is absent (bash bench/peers/setup.sh installs it)")
    settings = dict(
        learning_rate=1e-4,
        kl_top_k=64,
        num_batches=1,
        gradient_checkpointing=False,
        output_dir=tempfile.mkdtemp(prefix="peer-test-"),
    )
    peer = PeerVariant(varlen_workload, settings, PEERS[key])
    try:
        assert peer.report["logps_check"]["agree"], peer.report["logps_check"]
        assert peer.report["trainable_parameters"] == peer.report["trainable_parameters_expected"]
        assert peer.step(0) == pytest.approx(math.log(2), abs=1e-5)
        checks = peer.checks([peer.measured["real"]], [0])
        assert checks["first_loss_is_log2"] and checks["real_tokens_match_trl"], checks
        resident, transient = peer.memory(1)
        assert resident > 0 and transient > 0
    finally:
        peer.close()


@pytest.mark.slow
def test_swift_padding_free_is_refused_on_cpu_with_its_own_error(varlen_workload):
    if not _installed("swift"):
        pytest.skip(".venv-peers/swift is absent (bash bench/peers/setup.sh installs it)")
    settings = dict(
        learning_rate=1e-4,
        kl_top_k=64,
        num_batches=1,
        gradient_checkpointing=False,
        output_dir=tempfile.mkdtemp(prefix="peer-test-"),
    )
    with pytest.raises(PeerUnavailable, match='The "padding_free" feature requires a flash attention'):
        PeerVariant(varlen_workload, settings, PEERS["swift-dpo-padding-free"])
