"""Properties of the CHiP loss (chip.losses.chip_loss) that must hold for every input, via hypothesis.

- finite: finite log-probs and KLs give a finite loss, finite metrics and finite gradients, for
  every configuration (sigmoid or IPO, label smoothing, joint or separate, every weight);
- direction: with the sigmoid loss and no label smoothing, raising a chosen log-prob never raises
  the loss, raising a rejected one (or the chosen one under the corrupted image) never lowers it:
  ∂L/∂logp(y_w|v) ≤ 0, ∂L/∂logp(y_l|v) ≥ 0, ∂L/∂logp(y_w|ṽ) ≥ 0 at every token. (Label
  smoothing deliberately breaks this: conservative DPO pushes back on a margin that grows too large.)
- padding: extra masked columns, whatever they hold (NaN and inf included), change neither the
  loss nor the gradient of the real tokens, and receive a zero gradient;
- batch composition: an example's loss does not depend on the other rows of its batch or their order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from chip.losses import ChipLossConfig, TokenScores, chip_loss

SETTINGS = settings(max_examples=60, deadline=None)
LOGP = st.floats(-30.0, 0.0, width=32)  # log-probs of real tokens
KL = st.floats(0.0, 20.0, width=32)
JUNK = st.one_of(st.floats(width=32), st.sampled_from([float("nan"), float("inf"), -float("inf"), 1e30]))


@st.composite
def configs(draw: st.DrawFn, monotone: bool = False) -> ChipLossConfig:
    """Any valid config; ``monotone`` keeps to the sigmoid loss without label smoothing."""
    loss_type = "sigmoid" if monotone else draw(st.sampled_from(["sigmoid", "ipo"]))
    smoothing = 0.0 if monotone or loss_type == "ipo" else draw(st.sampled_from([0.0, 0.1, 0.49]))
    weight = st.sampled_from([0.0, 0.1, 1.0, 3.0])
    return ChipLossConfig(
        beta=draw(st.sampled_from([0.01, 0.1, 1.0, 5.0])),
        segment_weight=draw(weight),
        token_weight=draw(weight),
        tdpo=draw(st.sampled_from(["tdpo1", "tdpo2"])),
        visual_weight=draw(weight),
        combine=draw(st.sampled_from(["joint", "separate"])),
        anchor_weight=draw(weight),
        sft_weight=draw(weight),
        length_normalize=draw(st.booleans()),
        label_smoothing=smoothing,
        loss_type=loss_type,
    )


@dataclass
class Batch:
    """Plain tensors of W, L and C: ``[B, T]`` each (C shares W's tokens but has its own log-probs)."""

    logps: dict[str, torch.Tensor]  # "chosen", "rejected", "chosen_corrupt"
    ref_logps: dict[str, torch.Tensor]
    kl: dict[str, torch.Tensor]  # "chosen", "rejected"
    mask: dict[str, torch.Tensor]
    segment: dict[str, torch.Tensor]

    def grad(self, role: str) -> torch.Tensor:
        """The gradient reaching ``role``'s log-probs after a backward (zero when the loss ignores them)."""
        leaf = self.leaves[role]
        return leaf.grad if leaf.grad is not None else torch.zeros_like(leaf)

    def double(self) -> Batch:
        """The same batch in float64 (masks unchanged)."""
        cast = lambda values: {k: v.double() for k, v in values.items()}  # noqa: E731
        return Batch(cast(self.logps), cast(self.ref_logps), cast(self.kl), self.mask, self.segment)

    def scores(self, requires_grad: bool = False) -> tuple[TokenScores, TokenScores, TokenScores]:
        logps = {key: value.clone().requires_grad_(requires_grad) for key, value in self.logps.items()}
        self.leaves = logps
        out = []
        for role in ("chosen", "rejected", "chosen_corrupt"):
            mask_role = "chosen" if role == "chosen_corrupt" else role
            out.append(
                TokenScores(
                    logps[role],
                    self.ref_logps[role],
                    self.mask[mask_role],
                    self.segment[mask_role],
                    self.kl.get(role),
                )
            )
        return out[0], out[1], out[2]


@st.composite
def batches(draw: st.DrawFn, rows: int | None = None, width: int | None = None) -> Batch:
    b = rows or draw(st.integers(1, 3))
    t = width or draw(st.integers(1, 6))

    def tensor(elements: st.SearchStrategy, dtype: str = "float32") -> torch.Tensor:
        return torch.from_numpy(draw(arrays(dtype, (b, t), elements=elements)).copy())

    roles = ("chosen", "rejected", "chosen_corrupt")
    return Batch(
        logps={role: tensor(LOGP) for role in roles},
        ref_logps={role: tensor(LOGP) for role in roles},
        kl={role: tensor(KL) for role in ("chosen", "rejected")},
        mask={role: tensor(st.booleans(), "bool") for role in ("chosen", "rejected")},
        segment={role: tensor(st.booleans(), "bool") for role in ("chosen", "rejected")},
    )


def loss_of(batch: Batch, config: ChipLossConfig, requires_grad: bool = False) -> tuple[torch.Tensor, dict]:
    chosen, rejected, corrupt = batch.scores(requires_grad)
    return chip_loss(chosen, rejected, corrupt, config)


@SETTINGS
@given(batch=batches(), config=configs())
def test_finite_inputs_give_finite_loss_metrics_and_gradients(batch: Batch, config: ChipLossConfig) -> None:
    losses, metrics = loss_of(batch, config, requires_grad=True)
    assert torch.isfinite(losses).all()
    assert all(torch.isfinite(value).all() for value in metrics.values()), metrics
    losses.sum().backward()
    assert all(torch.isfinite(batch.grad(role)).all() for role in batch.leaves)


@SETTINGS
@given(batch=batches(), config=configs(monotone=True))
def test_gradients_push_chosen_up_and_rejected_and_corrupt_down(batch: Batch, config: ChipLossConfig) -> None:
    losses, _ = loss_of(batch, config, requires_grad=True)
    losses.sum().backward()
    grads = {role: batch.grad(role) for role in batch.leaves}
    assert (grads["chosen"] <= 0).all(), grads["chosen"]
    assert (grads["rejected"] >= 0).all(), grads["rejected"]
    assert (grads["chosen_corrupt"] >= 0).all(), grads["chosen_corrupt"]
    for role, mask_role in (("chosen", "chosen"), ("rejected", "rejected"), ("chosen_corrupt", "chosen")):
        assert (grads[role][~batch.mask[mask_role]] == 0).all()  # padding gets no gradient


def _pad(batch: Batch, extra: int, draw: st.DrawFn) -> Batch:
    """The same batch with ``extra`` masked columns of junk appended to every tensor."""

    def widen(value: torch.Tensor, elements: st.SearchStrategy, dtype: str) -> torch.Tensor:
        junk = torch.from_numpy(draw(arrays(dtype, (value.shape[0], extra), elements=elements)).copy())
        return torch.cat([value, junk], dim=1)

    return Batch(
        logps={k: widen(v, JUNK, "float32") for k, v in batch.logps.items()},
        ref_logps={k: widen(v, JUNK, "float32") for k, v in batch.ref_logps.items()},
        kl={k: widen(v, JUNK, "float32") for k, v in batch.kl.items()},
        mask={
            k: torch.cat([v, torch.zeros(v.shape[0], extra, dtype=torch.bool)], 1)
            for k, v in batch.mask.items()
        },
        segment={k: widen(v, st.booleans(), "bool") for k, v in batch.segment.items()},
    )


@SETTINGS
@given(batch=batches(), config=configs(), extra=st.integers(1, 4), data=st.data())
def test_masked_padding_changes_nothing_whatever_it_holds(
    batch: Batch, config: ChipLossConfig, extra: int, data: st.DataObject
) -> None:
    # float64: padding reorders float32 sums (vectorised reductions group by width), a rounding
    # effect of ~1e-6 relative that this property is not about
    batch = batch.double()
    padded = _pad(batch, extra, data.draw).double()
    losses, metrics = loss_of(batch, config, requires_grad=True)
    padded_losses, padded_metrics = loss_of(padded, config, requires_grad=True)

    torch.testing.assert_close(padded_losses, losses, rtol=1e-6, atol=1e-6)
    for name, value in metrics.items():
        torch.testing.assert_close(padded_metrics[name], value, rtol=1e-6, atol=1e-6)
    losses.sum().backward()
    padded_losses.sum().backward()
    width = batch.logps["chosen"].shape[1]
    for role in padded.leaves:
        torch.testing.assert_close(padded.grad(role)[:, :width], batch.grad(role), rtol=1e-6, atol=1e-6)
        assert (padded.grad(role)[:, width:] == 0).all()


def _rows(batch: Batch, index: list[int]) -> Batch:
    pick = lambda values: {k: v[index] for k, v in values.items()}  # noqa: E731
    return Batch(
        pick(batch.logps), pick(batch.ref_logps), pick(batch.kl), pick(batch.mask), pick(batch.segment)
    )


@SETTINGS
@given(batch=batches(rows=4), config=configs(), order=st.permutations(range(4)))
def test_an_examples_loss_ignores_the_rest_of_its_batch(
    batch: Batch, config: ChipLossConfig, order: list[int]
) -> None:
    losses, _ = loss_of(batch, config)
    shuffled, _ = loss_of(_rows(batch, list(order)), config)
    torch.testing.assert_close(shuffled, losses[list(order)], rtol=1e-6, atol=1e-6)
    for row in range(4):
        alone, _ = loss_of(_rows(batch, [row]), config)
        torch.testing.assert_close(alone, losses[row : row + 1], rtol=1e-6, atol=1e-6)
