"""CHiP loss terms checked against values worked out by hand.

The shared example (β = 0.1), one pair, T = 3 response positions:

    chosen   W: lp = [-1.0, -2.0, pad], ref = [-1.5, -2.0, pad]  -> R(W) = 0.5 + 0.0        =  0.5
    rejected L: lp = [-3.0, -1.0, -2.0], ref = [-2.0, -1.0, -1.0] -> R(L) = -1 + 0 - 1      = -2.0
    corrupt  C: lp = [-2.0, -2.5, pad], ref = [-1.5, -2.0, pad]  -> R(C) = -0.5 - 0.5       = -1.0
    h_text = 2.5, h_vis = R(W) - R(C) = 1.5

Padding positions hold junk values on purpose: they must never leak into a result.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from chip import ChipLossConfig, TokenScores, chip_loss, token_kl
from chip.errors import ConfigError

PAD = 123.0  # junk at padded positions


def softplus(x: float) -> float:
    """−log σ(−x) = log(1 + e^x), written out so the expected values do not call the code under test."""
    return math.log1p(math.exp(x))


def dpo_only(**kw) -> ChipLossConfig:
    return ChipLossConfig(segment_weight=0.0, token_weight=0.0, visual_weight=0.0, **kw)


@pytest.fixture
def pair() -> dict[str, TokenScores]:
    chosen = TokenScores(
        logps=torch.tensor([[-1.0, -2.0, PAD]]),
        ref_logps=torch.tensor([[-1.5, -2.0, -PAD]]),
        mask=torch.tensor([[True, True, False]]),
        segment=torch.tensor([[True, False, True]]),
        kl=torch.tensor([[0.2, 0.3, PAD]]),
    )
    rejected = TokenScores(
        logps=torch.tensor([[-3.0, -1.0, -2.0]]),
        ref_logps=torch.tensor([[-2.0, -1.0, -1.0]]),
        mask=torch.tensor([[True, True, True]]),
        segment=torch.tensor([[False, False, True]]),
        kl=torch.tensor([[0.1, 0.4, 0.5]]),
    )
    corrupt = TokenScores(
        logps=torch.tensor([[-2.0, -2.5, PAD]]),
        ref_logps=torch.tensor([[-1.5, -2.0, PAD]]),
        mask=torch.tensor([[True, True, False]]),
        segment=torch.tensor([[True, False, False]]),
    )
    return {"chosen": chosen, "rejected": rejected, "corrupt": corrupt}


def test_all_weights_zero_is_standard_sigmoid_dpo(pair):
    """λ = α = μ = 0: loss = −log σ(β h_text) = log(1 + e^{−0.25})."""
    losses, metrics = chip_loss(pair["chosen"], pair["rejected"], None, dpo_only())
    assert_close(losses, torch.tensor([softplus(-0.25)]))
    assert_close(metrics["rewards/chosen"], torch.tensor([0.05]))
    assert_close(metrics["rewards/rejected"], torch.tensor([-0.2]))
    assert_close(metrics["rewards/margins"], torch.tensor([0.25]))
    assert_close(metrics["rewards/accuracies"], torch.tensor([1.0]))
    assert_close(metrics["logps/chosen"], torch.tensor([-3.0]))
    assert_close(metrics["logps/rejected"], torch.tensor([-6.0]))
    assert set(metrics) == {
        "rewards/chosen",
        "rewards/rejected",
        "rewards/margins",
        "rewards/accuracies",
        "logps/chosen",
        "logps/rejected",
        "loss/text",
    }


def test_segment_weights_apply_per_token_before_summing(pair):
    """λ = 3: W weights [4, 1] -> R(W) = 4·0.5 + 0 = 2; L weights [1, 1, 4] -> R(L) = −1 + 0 − 4 = −5.

    h_text = 7, loss = log(1 + e^{−0.7}).
    """
    config = ChipLossConfig(segment_weight=3.0, token_weight=0.0, visual_weight=0.0)
    losses, metrics = chip_loss(pair["chosen"], pair["rejected"], None, config)
    assert_close(losses, torch.tensor([softplus(-0.7)]))
    assert_close(metrics["rewards/chosen"], torch.tensor([0.2]))
    assert_close(metrics["rewards/rejected"], torch.tensor([-0.5]))


def test_length_normalisation_divides_by_summed_weights(pair):
    """λ = 3, normalised: R(W) = 2 / (4 + 1) = 0.4, R(L) = −5 / (1 + 1 + 4) = −5/6."""
    config = ChipLossConfig(segment_weight=3.0, token_weight=0.0, visual_weight=0.0, length_normalize=True)
    losses, metrics = chip_loss(pair["chosen"], pair["rejected"], None, config)
    h_text = 0.4 + 5 / 6
    assert_close(losses, torch.tensor([softplus(-0.1 * h_text)]))
    assert_close(metrics["rewards/chosen"], torch.tensor([0.04]))


def test_tdpo_token_margin(pair):
    """K(W) = 0.2 + 0.3 = 0.5 (pad excluded), K(L) = 1.0, δ = 0.5; α = 0.1 -> z = 0.1·(2.5 − 0.05)."""
    config = ChipLossConfig(segment_weight=0.0, token_weight=0.1, visual_weight=0.0)
    losses, metrics = chip_loss(pair["chosen"], pair["rejected"], None, config)
    assert_close(losses, torch.tensor([softplus(-0.1 * 2.45)]))
    assert_close(metrics["kl/chosen"], torch.tensor([0.5]))
    assert_close(metrics["kl/rejected"], torch.tensor([1.0]))


@pytest.mark.parametrize("variant", ["tdpo1", "tdpo2"])
def test_tdpo_gradients_through_kl(pair, variant):
    """z = β(h − α(K(L) − K(W))), loss = softplus(−z), dloss/dz = −σ(−z).

    dloss/dkl_L,t = −σ(−z)·β·(−α) = σ(−z)·β·α on real tokens, 0 on padding.
    dloss/dkl_W,t = −σ(−z)·β·α for TDPO1; exactly 0 for TDPO2 (stop-gradient).
    """
    chosen, rejected = pair["chosen"], pair["rejected"]
    chosen.kl.requires_grad_(True)
    rejected.kl.requires_grad_(True)
    config = ChipLossConfig(segment_weight=0.0, token_weight=0.1, visual_weight=0.0, tdpo=variant)
    losses, _ = chip_loss(chosen, rejected, None, config)
    losses.sum().backward()

    z = 0.1 * 2.45
    g = (1 / (1 + math.exp(z))) * 0.1 * 0.1  # σ(−z)·β·α
    assert_close(rejected.kl.grad, torch.tensor([[g, g, g]]))
    expected_chosen = [0.0, 0.0, 0.0] if variant == "tdpo2" else [-g, -g, 0.0]
    # TDPO2 detaches K(W), so autograd may leave no gradient at all: that is a zero gradient.
    chosen_grad = chosen.kl.grad if chosen.kl.grad is not None else torch.zeros_like(chosen.kl)
    assert_close(chosen_grad, torch.tensor([expected_chosen]))


def test_visual_joint_and_separate(pair):
    """μ = 1. joint: z = 0.1·(2.5 + 1.5) = 0.4. separate: softplus(−0.25) + softplus(−0.15)."""
    base = dict(segment_weight=0.0, token_weight=0.0, visual_weight=1.0)
    joint, metrics = chip_loss(pair["chosen"], pair["rejected"], pair["corrupt"], ChipLossConfig(**base))
    assert_close(joint, torch.tensor([softplus(-0.4)]))
    assert_close(metrics["visual/margins"], torch.tensor([0.15]))
    assert_close(metrics["visual/accuracies"], torch.tensor([1.0]))
    assert_close(metrics["logps/chosen_corrupt"], torch.tensor([-4.5]))

    separate, metrics = chip_loss(
        pair["chosen"], pair["rejected"], pair["corrupt"], ChipLossConfig(combine="separate", **base)
    )
    assert_close(separate, torch.tensor([softplus(-0.25) + softplus(-0.15)]))
    assert_close(metrics["loss/visual"], torch.tensor([softplus(-0.15)]))


def test_full_chip_defaults(pair):
    """Defaults λ = 3, α = 0.1 (TDPO2), μ = 1, joint.

    R(W) = 2, R(L) = −5, R(C) = 4·(−0.5) + (−0.5) = −2.5 -> h_text = 7, h_vis = 4.5, δ = 0.5.
    z = 0.1·(7 + 4.5 − 0.05) = 1.145.
    """
    losses, metrics = chip_loss(pair["chosen"], pair["rejected"], pair["corrupt"], ChipLossConfig())
    assert_close(losses, torch.tensor([softplus(-1.145)]))
    assert_close(metrics["visual/margins"], torch.tensor([0.45]))


def test_anchor_and_sft_terms(pair):
    """ρ = 0.5: + 0.5·softplus(−β R(W)) = 0.5·softplus(−0.05). η = 2: + 2·(3 / 2) (mean NLL of W)."""
    config = dpo_only(anchor_weight=0.5, sft_weight=2.0)
    losses, metrics = chip_loss(pair["chosen"], pair["rejected"], None, config)
    expected = softplus(-0.25) + 0.5 * softplus(-0.05) + 2.0 * 1.5
    assert_close(losses, torch.tensor([expected]))
    assert_close(metrics["loss/sft"], torch.tensor([1.5]))
    assert_close(metrics["loss/anchor"], torch.tensor([softplus(-0.05)]))


def test_label_smoothing_and_ipo(pair):
    """ε = 0.1: 0.9·softplus(−0.25) + 0.1·softplus(0.25). IPO: (h − 1/(2β))² = (2.5 − 5)² = 6.25."""
    smoothed, _ = chip_loss(pair["chosen"], pair["rejected"], None, dpo_only(label_smoothing=0.1))
    assert_close(smoothed, torch.tensor([0.9 * softplus(-0.25) + 0.1 * softplus(0.25)]))
    ipo, _ = chip_loss(pair["chosen"], pair["rejected"], None, dpo_only(loss_type="ipo"))
    assert_close(ipo, torch.tensor([6.25]))


def test_label_smoothing_applies_only_to_text_sigmoid_in_separate_mode(pair):
    """separate, ε = 0.2: text 0.8·softplus(−0.25) + 0.2·softplus(0.25); visual stays softplus(−0.15)."""
    config = ChipLossConfig(
        segment_weight=0.0, token_weight=0.0, visual_weight=1.0, combine="separate", label_smoothing=0.2
    )
    losses, _ = chip_loss(pair["chosen"], pair["rejected"], pair["corrupt"], config)
    expected = 0.8 * softplus(-0.25) + 0.2 * softplus(0.25) + softplus(-0.15)
    assert_close(losses, torch.tensor([expected]))


def _pad(scores: TokenScores, extra: int) -> TokenScores:
    def grow(t, fill):
        return None if t is None else torch.cat([t, torch.full((t.shape[0], extra), fill, dtype=t.dtype)], 1)

    return TokenScores(
        grow(scores.logps, PAD),
        grow(scores.ref_logps, -PAD),
        grow(scores.mask, False),
        grow(scores.segment, True),
        grow(scores.kl, PAD),
    )


def test_padding_and_batching_do_not_change_per_example_losses(pair):
    """Extra junk padding columns and batching with another example leave each loss unchanged."""
    config = ChipLossConfig()
    single, _ = chip_loss(pair["chosen"], pair["rejected"], pair["corrupt"], config)
    padded = {k: _pad(v, 4) for k, v in pair.items()}
    again, _ = chip_loss(padded["chosen"], padded["rejected"], padded["corrupt"], config)
    assert_close(again, single)

    def stack(a: TokenScores, b: TokenScores) -> TokenScores:
        cat = lambda x, y: None if x is None else torch.cat([x, y])  # noqa: E731
        return TokenScores(
            *(cat(getattr(a, f), getattr(b, f)) for f in ("logps", "ref_logps", "mask", "segment", "kl"))
        )

    # The second example is the first with chosen and rejected swapped: margin −h for every term but δ.
    swapped_c = _pad(pair["rejected"], 0)
    batch_c = stack(padded["chosen"], _pad(swapped_c, 4 + 3 - swapped_c.logps.shape[1]))
    batch_r = stack(padded["rejected"], _pad(pair["chosen"], 4))
    batch_v = stack(padded["corrupt"], _pad(pair["corrupt"], 4))
    batched, metrics = chip_loss(batch_c, batch_r, batch_v, config)
    assert batched.shape == (2,)
    assert_close(batched[0], single[0])
    assert_close(metrics["rewards/accuracies"], torch.tensor([1.0, 0.0]))


def test_missing_inputs_and_bad_config_fail_clearly(pair):
    with pytest.raises(ValueError, match="chosen_corrupt"):
        chip_loss(pair["chosen"], pair["rejected"], None, ChipLossConfig())
    no_kl = TokenScores(pair["chosen"].logps, pair["chosen"].ref_logps, pair["chosen"].mask)
    with pytest.raises(ValueError, match="kl"):
        chip_loss(no_kl, pair["rejected"], pair["corrupt"], ChipLossConfig())
    with pytest.raises(ConfigError):
        ChipLossConfig(combine="sum")
    with pytest.raises(ConfigError):
        ChipLossConfig(beta=0)
    with pytest.raises(ValueError, match="shape"):
        TokenScores(torch.zeros(1, 3), torch.zeros(1, 2), torch.ones(1, 3, dtype=torch.bool))


def test_token_kl_hand_example():
    """p_ref = [1/2, 1/2], p_θ = [3/4, 1/4]: KL = ½ log(½/¾) + ½ log(½/¼) = ½ log(4/3)."""
    ref = torch.tensor([[0.0, 0.0]])
    policy = torch.tensor([[math.log(3.0), 0.0]])
    assert_close(token_kl(policy, ref), torch.tensor([0.5 * math.log(4 / 3)]))


def test_token_kl_extreme_logits_finite_and_matches_float64():
    generator = torch.Generator().manual_seed(0)
    policy = torch.randn(2, 5, 11, generator=generator) * 30
    ref = torch.randn(2, 5, 11, generator=generator) * 30
    policy[0, 0, 0], ref[0, 0, 1] = 1e4, -1e4
    policy[1, 2, :], ref[1, 2, 3] = -1e4, 1e4
    kl = token_kl(policy, ref)
    assert torch.isfinite(kl).all()

    # float64 reference from the definition, written without log_softmax/kl_div
    p64, r64 = policy.double(), ref.double()
    log_q = p64 - torch.logsumexp(p64, -1, keepdim=True)
    log_p = r64 - torch.logsumexp(r64, -1, keepdim=True)
    expected = (log_p.exp() * (log_p - log_q)).sum(-1)
    assert_close(kl.double(), expected, rtol=1e-5, atol=1e-3)
    assert (kl >= -1e-4).all()


def test_token_kl_zero_for_identical_and_bf16_input():
    logits = torch.randn(3, 7).to(torch.bfloat16)
    assert_close(token_kl(logits, logits), torch.zeros(3), atol=1e-6, rtol=0)


# Hand example for the compact reference (V = 3):
#   p_ref = [0.5, 0.3, 0.2], q_policy = [0.25, 0.25, 0.5]
#   full KL = 0.5 ln 2 + 0.3 ln 1.2 + 0.2 ln 0.4 = 0.346574 + 0.054697 - 0.183258 = 0.218012
#   k = 1: head 0.5 ln 2 = 0.346574; tail p = 0.5, q = 0.75: 0.5 ln(2/3) = -0.202733 -> 0.143841
#   k = 2: head 0.401271; tail p = 0.2, q = 0.5 (one token, so exact): 0.2 ln 0.4 -> 0.218012
#   k = 3: no tail -> the full KL, 0.218012
P_REF, Q_POLICY = [0.5, 0.3, 0.2], [0.25, 0.25, 0.5]


@pytest.mark.parametrize(("k", "expected"), [(1, 0.143841), (2, 0.218012), (3, 0.218012)])
def test_topk_token_kl_hand_example(k, expected):
    from chip.losses import topk_token_kl

    policy_logits = torch.tensor([Q_POLICY]).log() + 7.0  # any shift: logits, not log-probs
    ref_logps = torch.tensor([P_REF]).log()
    top_logps, top_ids = ref_logps.topk(k, dim=-1)
    assert_close(
        topk_token_kl(policy_logits, top_logps, top_ids), torch.tensor([expected]), atol=1e-6, rtol=0
    )


def test_topk_token_kl_is_exact_at_full_vocabulary_and_a_lower_bound_below():
    from chip.losses import topk_token_kl

    generator = torch.Generator().manual_seed(0)
    policy_logits = 3 * torch.randn(4, 5, 11, generator=generator)  # (B, T, V)
    ref_logits = 3 * torch.randn(4, 5, 11, generator=generator)
    full = token_kl(policy_logits, ref_logits)  # (B, T)
    ref_logps = torch.log_softmax(ref_logits, -1)
    for k in range(1, 12):
        top_logps, top_ids = ref_logps.topk(k, dim=-1)
        bucketed = topk_token_kl(policy_logits, top_logps, top_ids)
        assert bool((bucketed >= -1e-6).all()) and bool((bucketed <= full + 1e-5).all()), k
        if k == 11:
            assert_close(bucketed, full, atol=1e-5, rtol=1e-5)


def test_topk_token_kl_tail_bucket_when_the_reference_tail_is_negligible():
    """A reference with ~all its mass in the top-k: the tail term vanishes instead of giving NaN."""
    from chip.losses import topk_token_kl

    ref_logits = torch.tensor([[90.0, 0.0, 0.0, 0.0]])  # log p_tail = log 3 - 90 < -80: tail term dropped
    policy_logits = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    top_logps, top_ids = torch.log_softmax(ref_logits, -1).topk(1, dim=-1)
    value = topk_token_kl(policy_logits, top_logps, top_ids)
    # head: 1 * (0 - log q_0), q_0 = 1 / (1 + e + e^2 + e^3); tail: p_tail (log p_tail - log q_tail) ~ 1e-25
    expected = -math.log(1 / (1 + math.e + math.e**2 + math.e**3))
    assert_close(value, torch.tensor([expected]), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("x", "expected"),
    [
        (math.log(0.5), math.log(0.5)),  # log(1 - 1/2)
        (-1e-10, math.log(1e-10)),  # near 0: expm1 branch keeps every digit
        (-50.0, -math.exp(-50.0)),  # far below: log1p branch, log(1 - e^-50) = -e^-50 (to 1e-43)
        (math.log(0.9), math.log(0.1)),
    ],
)
def test_log1mexp_hand_values(x, expected):
    from chip.losses import log1mexp

    value = log1mexp(torch.tensor([x], dtype=torch.float64))
    assert_close(value, torch.tensor([expected], dtype=torch.float64), rtol=1e-9, atol=1e-30)


def test_log1mexp_at_zero_is_minus_infinity():
    from chip.losses import log1mexp

    assert log1mexp(torch.tensor([0.0])).item() == -math.inf
