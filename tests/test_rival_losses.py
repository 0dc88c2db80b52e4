"""CHiP's rivals in chip's loss: mDPO against its authors' released loss, the list loss and the
image-anchored token weights against hand computations."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

from chip.losses import (
    ChipLossConfig,
    TokenScores,
    chip_loss,
    image_anchor_weights,
    list_loss,
    with_image_anchors,
)
from chip.training.methods import preset

MDPO_CASES = json.loads((Path(__file__).parent / "reference" / "mdpo" / "expected.json").read_text())["cases"]
PAD = 123.0  # junk at padded positions


def softplus(x: float) -> float:
    """−log σ(−x) = log(1 + e^x), written out so the expected values do not call the code under test."""
    return math.log1p(math.exp(x))


def loss_config(method: str, **overrides) -> ChipLossConfig:
    settings = {k: v for k, v in preset(method).items() if k in ChipLossConfig.field_names()}
    return ChipLossConfig(**{**settings, **overrides})


def scores_of(row: dict) -> TokenScores:
    logps = torch.tensor(row["logps"], dtype=torch.float64)
    mask = torch.arange(logps.shape[1])[None, :] < torch.tensor(row["lengths"])[:, None]
    return TokenScores(logps=logps, ref_logps=torch.tensor(row["ref_logps"], dtype=torch.float64), mask=mask)


@pytest.mark.parametrize("case", MDPO_CASES, ids=[case["name"] for case in MDPO_CASES])
def test_mdpo_preset_equals_the_authors_loss(case):
    """`--method mdpo` on the per-token inputs = mDPOTrainer.dpo_loss on their sums (tests/reference/mdpo)."""
    rows = {name: scores_of(row) for name, row in case["rows"].items()}
    config = loss_config("mdpo", beta=case["beta"])
    losses, metrics = chip_loss(rows["chosen"], rows["rejected"], rows["chosen_corrupt"], config)
    expected = torch.tensor(case["losses"], dtype=torch.float64)
    assert_close(losses, expected, atol=1e-6, rtol=0)
    for ours, theirs in [
        ("rewards/chosen", "chosen_rewards"),
        ("rewards/rejected", "rejected_rewards"),
        ("rewards/chosen_corrupt", "imageless_rewards"),
    ]:
        assert_close(metrics[ours], torch.tensor(case[theirs], dtype=torch.float64), atol=1e-6, rtol=0)


def test_mdpo_preset_uses_their_crop_and_three_unit_terms():
    """mDPO's image corruption is a random resized crop keeping 1–20% of the area; each term weighs 1."""
    settings = preset("mdpo")
    assert settings["corruption"] == "crop"
    assert (settings["visual_weight"], settings["anchor_weight"], settings["combine"]) == (
        1.0,
        1.0,
        "separate",
    )
    assert (settings["segment_weight"], settings["token_weight"], settings["beta"]) == (0.0, 0.0, 0.1)


def rows(logps, mask, ref=None) -> TokenScores:
    logps = torch.tensor(logps, dtype=torch.float64)
    ref = torch.zeros_like(logps) if ref is None else torch.tensor(ref, dtype=torch.float64)
    return TokenScores(logps=logps, ref_logps=ref, mask=torch.tensor(mask))


def test_list_loss_averages_each_pairwise_term_over_the_rejected():
    """Two examples, β = 1, reference log-probs 0 (so R = Σ lp), plain DPO terms.

        example 0: R(W0) = 0.5 + 0.5 = 1.0; rejected L00: R = -1.0 (second token padded), L01: R = 0.5
        example 1: R(W1) = 0.3 - 0.3 = 0.0; rejected L10: R = 0.2 - 0.2 = 0.0
        rejected rows in the order [L00, L10, L01], example_of = [0, 1, 0]

        loss_0 = (softplus(-(1 - -1)) + softplus(-(1 - 0.5))) / 2 = (softplus(-2) + softplus(-0.5)) / 2
        loss_1 = softplus(0) = log 2
        rewards/rejected_0 = (-1.0 + 0.5) / 2 = -0.25;  rewards/margins_0 = (2 + 0.5) / 2 = 1.25

    With the anchor term ρ = 1 (no rejected response in it) each example adds softplus(-R(W)) once:
    loss_0 += softplus(-1), loss_1 += softplus(0).
    """
    chosen = rows([[0.5, 0.5], [0.3, -0.3]], [[True, True], [True, True]])
    rejected = rows([[-1.0, PAD], [0.2, -0.2], [0.25, 0.25]], [[True, False], [True, True], [True, True]])
    example_of = torch.tensor([0, 1, 0])
    config = loss_config("dpo", beta=1.0)
    losses, metrics = list_loss(chosen, rejected, None, example_of, config)
    expected = [(softplus(-2.0) + softplus(-0.5)) / 2, math.log(2.0)]
    assert_close(losses, torch.tensor(expected, dtype=torch.float64))
    assert_close(metrics["rewards/rejected"], torch.tensor([-0.25, 0.0], dtype=torch.float64))
    assert_close(metrics["rewards/margins"], torch.tensor([1.25, 0.0], dtype=torch.float64))

    anchored, _ = list_loss(
        chosen, rejected, None, example_of, loss_config("dpo", beta=1.0, anchor_weight=1.0)
    )
    assert_close(
        anchored,
        torch.tensor([expected[0] + softplus(-1.0), expected[1] + math.log(2.0)], dtype=torch.float64),
    )


def test_list_loss_keeps_the_visual_term_inside_each_joint_sigmoid():
    """Joint mode, β = 1, μ = 1: example 0 of the test above with C: R(C0) = 0.25 + 0.25 = 0.5, h_vis = 0.5.

    loss_0 = (softplus(-(2 + 0.5)) + softplus(-(0.5 + 0.5))) / 2 — the mean of the pairwise joint losses.
    """
    chosen = rows([[0.5, 0.5]], [[True, True]])
    corrupt = rows([[0.25, 0.25]], [[True, True]])
    rejected = rows([[-1.0, PAD], [0.25, 0.25]], [[True, False], [True, True]])
    config = loss_config("dpo", beta=1.0, visual_weight=1.0)
    losses, metrics = list_loss(chosen, rejected, corrupt, torch.tensor([0, 0]), config)
    assert_close(losses, torch.tensor([(softplus(-2.5) + softplus(-1.0)) / 2], dtype=torch.float64))
    assert_close(metrics["visual/margins"], torch.tensor([0.5], dtype=torch.float64))


def test_image_anchor_weights_by_hand():
    """Δ = real − corrupt log-probs; chosen a = 1/2 + σ(Δ), rejected a = 3/2 − σ(Δ).

    chosen:   real [-1, -2], corrupt [-1, -3] -> Δ = [0, 1]  -> a = [1.0, 0.5 + σ(1)] = [1.0, 1.2310586]
    rejected: real [-2, -1], corrupt [-1, -1] -> Δ = [-1, 0] -> a = [1.5 - σ(-1), 1.0] = [1.2310586, 1.0]
    """
    sigma1 = 1.0 / (1.0 + math.exp(-1.0))
    chosen = image_anchor_weights(torch.tensor([[-1.0, -2.0]]), torch.tensor([[-1.0, -3.0]]), preferred=True)
    rejected = image_anchor_weights(
        torch.tensor([[-2.0, -1.0]]), torch.tensor([[-1.0, -1.0]]), preferred=False
    )
    assert_close(chosen, torch.tensor([[1.0, 0.5 + sigma1]]))
    assert_close(rejected, torch.tensor([[1.5 - (1.0 - sigma1), 1.0]]))


def test_image_anchored_weights_enter_the_log_ratio_and_the_segment_weight():
    """The weights of the test above (from the reference's log-probs), in plain DPO then with λ = 1.

    W: lp = [-0.5, -1.0], ref = [-1, -2] -> ratios [0.5, 1.0]; a_W = [1, 1.2310586]
       R(W) = 0.5 + 1.2310586 = 1.7310586
    L: lp = [-2.5, -1.5], ref = [-2, -1] -> ratios [-0.5, -0.5]; a_L = [1.2310586, 1]
       R(L) = -0.5·1.2310586 - 0.5 = -1.1155293
    loss = softplus(-β (R(W) - R(L))) with β = 0.1
    with λ = 1 and W's second token in a changed segment: R(W) = 0.5 + 2·1.2310586 = 2.9621172
    C (the chosen under ṽ) takes W's weights: R(C) with ratios [0.0, 0.5] = 0.5·1.2310586 = 0.6155293
    """
    a = 0.5 + 1.0 / (1.0 + math.exp(-1.0))
    chosen = rows([[-0.5, -1.0]], [[True, True]], ref=[[-1.0, -2.0]])
    rejected = rows([[-2.5, -1.5]], [[True, True]], ref=[[-2.0, -1.0]])
    chosen_corrupt = rows([[-1.0, -2.5]], [[True, True]], ref=[[-1.0, -3.0]])
    rejected_corrupt = rows([[-1.0, -1.0]], [[True, True]], ref=[[-1.0, -1.0]])
    w, lose, c = with_image_anchors(chosen, rejected, chosen_corrupt, rejected_corrupt, "reference")
    reward_w, reward_l = 0.5 + a, -0.5 * a - 0.5
    losses, metrics = chip_loss(w, lose, None, loss_config("dpo"))
    assert_close(losses, torch.tensor([softplus(-0.1 * (reward_w - reward_l))], dtype=torch.float64))

    w.segment, lose.segment = torch.tensor([[False, True]]), torch.tensor([[False, False]])
    _, metrics = chip_loss(w, lose, c, loss_config("dpo", segment_weight=1.0, visual_weight=1.0))
    assert_close(metrics["rewards/chosen"], torch.tensor([0.1 * (0.5 + 2 * a)], dtype=torch.float64))
    # C shares W's segment flags only through its own field (None here): its weights are a_W alone.
    assert_close(metrics["rewards/chosen_corrupt"], torch.tensor([0.1 * 0.5 * a], dtype=torch.float64))


def test_image_anchors_from_the_policy_carry_no_gradient():
    """With source="policy" the weights come from the policy's own log-probs, detached."""
    logps = torch.tensor([[-0.5, -1.0]], requires_grad=True)
    chosen = TokenScores(logps=logps, ref_logps=torch.zeros(1, 2), mask=torch.ones(1, 2, dtype=torch.bool))
    corrupt = TokenScores(logps=logps.detach() - 1.0, ref_logps=torch.zeros(1, 2), mask=chosen.mask)
    w, _, _ = with_image_anchors(chosen, chosen, corrupt, corrupt, "policy")
    assert not w.anchor.requires_grad
    assert_close(w.anchor, torch.full((1, 2), 0.5 + 1.0 / (1.0 + math.exp(-1.0))))
