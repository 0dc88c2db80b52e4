"""The CHiP objective as pure functions of per-token tensors.

CHiP (Fu et al., "CHiP: Cross-modal Hierarchical Direct Preference Optimization for Multimodal
LLMs", ICLR 2025, arXiv 2501.16629) scores a preference pair at three textual granularities and
one visual one:

- response level: DPO on the summed log-ratio of the chosen vs the rejected response;
- segment level: the same sum, with tokens inside *changed segments* weighted ``1 + λ``;
- token level: TDPO's sequential KL (Zeng et al., 2024), ``δ = K(y_l) − sg(K(y_w))``;
- visual: the chosen response must be likelier under the real image than under a corrupted one.

Symbols follow ``docs/method.md``. With ``λ = α = μ = 0`` the loss is exactly sigmoid DPO on
summed log-probs (Rafailov et al., 2023, eq. 7). Nothing here knows about models: the inputs are
per-response-token log-probs already aligned and masked, shapes ``[B, T]``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from chip.errors import ConfigError, check_bounds, check_choices

Combine = Literal["joint", "separate"]
TDPOVariant = Literal["tdpo1", "tdpo2"]
LossType = Literal["sigmoid", "ipo"]
AnchorSource = Literal["off", "reference", "policy"]


def _setting(default, help_text: str, bounds: str | None = None):
    """A loss setting: its default, the one line `chip train --help` shows for it, and for a number
    the range it must lie in (``chip.errors.within``'s notation: "> 0", "[0, 0.5)")."""
    metadata = {"help": help_text} if bounds is None else {"help": help_text, "bounds": bounds}
    return field(default=default, metadata=metadata)


@dataclass
class ChipLossConfig:
    """Hyperparameters of the CHiP loss (defaults: the authors' LLaVA recipe).

    Each setting is declared here once, with its help text and (through its ``Literal`` type) its
    allowed values; `chip train` parses these fields together with `TrainingArguments`.
    """

    beta: float = _setting(0.1, "β, inverse temperature of every sigmoid.", bounds="> 0")
    segment_weight: float = _setting(3.0, "λ: tokens in changed segments weigh 1 + λ.", bounds=">= 0")
    token_weight: float = _setting(
        0.1, "α: weight of the token-level (TDPO) sequential-KL margin δ.", bounds=">= 0"
    )
    tdpo: TDPOVariant = _setting("tdpo2", "tdpo2 stops the gradient through K(y_w); tdpo1 does not.")
    visual_weight: float = _setting(1.0, "μ: weight of the visual preference margin h_vis.", bounds=">= 0")
    combine: Combine = _setting(
        "joint", "One sigmoid over all margins (joint) or one per preference (separate)."
    )
    anchor_weight: float = _setting(0.0, "ρ: weight of mDPO's anchor −log σ(β R(W)).", bounds=">= 0")
    sft_weight: float = _setting(
        0.0, "η: weight of the mean NLL of the chosen response under the real image.", bounds=">= 0"
    )
    length_normalize: bool = _setting(False, "Divide each log-ratio R by its summed token weights.")
    label_smoothing: float = _setting(
        0.0, "ε of conservative DPO, on the sigmoid that holds the text margin.", bounds="[0, 0.5)"
    )
    loss_type: LossType = _setting("sigmoid", "Loss on the text margin: sigmoid (DPO) or ipo (squared).")
    max_rejected: int = _setting(
        1,
        "Rejected responses used per prompt when a row lists several (0 = all); pairwise terms are averaged.",
        bounds=">= 0",
    )
    image_anchored_weights: AnchorSource = _setting(
        "off",
        "Weight each response token by how much the real image raises its log-prob over ṽ (TPO), "
        "measured by the reference or the (detached) policy.",
    )

    def __post_init__(self) -> None:
        check_choices(self)
        check_bounds(self)
        if self.loss_type == "ipo" and self.label_smoothing:
            raise ConfigError("label_smoothing applies to the sigmoid loss, not to loss_type='ipo'")
        if self.max_rejected < 0:
            raise ConfigError(f"max_rejected must be >= 0 (0 = all), got {self.max_rejected}")

    @property
    def needs_corrupt(self) -> bool:
        """Whether the chosen response must be scored under the corrupted image."""
        return self.visual_weight > 0 or self.anchored

    @property
    def anchored(self) -> bool:
        """Whether tokens are weighted by the image (both responses are then scored under ṽ too)."""
        return self.image_anchored_weights != "off"

    @property
    def needs_kl(self) -> bool:
        """Whether the token-level term needs the reference's full distribution."""
        return self.token_weight > 0

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


@dataclass
class TokenScores:
    """One scored response per example, aligned on response tokens; every tensor is ``[B, T]``.

    ``logps``/``ref_logps`` are policy/reference log-probs of the response tokens, ``mask`` marks
    real response tokens (prompt, image and padding are False), ``segment`` marks tokens inside a
    changed segment, ``kl`` is the per-token KL(π_ref ‖ π_θ) over the vocabulary, ``anchor`` an
    extra per-token weight ``a_t`` (`image_anchor_weights`) on the log-ratio and the KL.
    """

    logps: Tensor
    ref_logps: Tensor
    mask: Tensor
    segment: Tensor | None = None
    kl: Tensor | None = None
    anchor: Tensor | None = None

    def __post_init__(self) -> None:
        shape = self.logps.shape
        for name in ("ref_logps", "mask", "segment", "kl", "anchor"):
            value = getattr(self, name)
            if value is not None and value.shape != shape:
                raise ValueError(
                    f"TokenScores.{name} has shape {tuple(value.shape)}, expected {tuple(shape)}"
                )
        if self.logps.dim() != 2:
            raise ValueError(f"TokenScores tensors must be [B, T], got {tuple(shape)}")


def token_kl(policy_logits: Tensor, ref_logits: Tensor) -> Tensor:
    """Per-position KL(π_ref ‖ π_θ) = Σ_v p_ref (log p_ref − log p_θ), shapes ``[..., V] -> [...]``.

    Both distributions come from ``log_softmax`` in float32 (never ``softmax().log()``, which gives
    ``log 0 = −inf`` and then NaN), so any finite logits, even ±1e4, give a finite result.
    """
    policy_logp = F.log_softmax(policy_logits.float(), dim=-1)  # (..., V)
    ref_logp = F.log_softmax(ref_logits.float(), dim=-1)  # (..., V)
    return F.kl_div(policy_logp, ref_logp, log_target=True, reduction="none").sum(-1)  # (...)


def topk_token_kl(policy_logits: Tensor, ref_topk_logps: Tensor, ref_topk_ids: Tensor) -> Tensor:
    """KL(π_ref ‖ π_θ) from a compact reference: its top-k log-probs plus one bucket for the tail.

    The vocabulary is split into the k reference-top tokens and the rest; the KL between the two
    bucketed distributions is ``Σ_topk p (log p − log q) + p_tail (log p_tail − log q_tail)``. By the
    data-processing inequality it is a lower bound of the full KL, exact when k = V (empty tail).
    Shapes: logits ``[..., V]``, top-k ``[..., k]`` -> ``[...]``.
    """
    policy_logp = F.log_softmax(policy_logits.float(), dim=-1)  # (..., V)
    policy_top = policy_logp.gather(-1, ref_topk_ids.long())  # (..., k)
    return topk_kl(ref_topk_logps, policy_top, vocab_size=policy_logp.shape[-1])


def topk_kl(ref_topk_logps: Tensor, policy_topk_logps: Tensor, vocab_size: int) -> Tensor:
    """`topk_token_kl` from the policy's log-probs of the reference's top-k tokens ``[..., k]``
    (``vocab_size`` tells whether a tail is left) -> ``[...]``."""
    ref_top, policy_top = ref_topk_logps.float(), policy_topk_logps.float()  # (..., k) each
    head = (ref_top.exp() * (ref_top - policy_top)).sum(-1)  # (...)
    if ref_top.shape[-1] == vocab_size:
        return head  # k = V: the tail is empty (its float32 rounding residue is not mass)
    ref_tail = log1mexp(torch.logsumexp(ref_top, -1))  # log p_tail, (...)
    policy_tail = log1mexp(torch.logsumexp(policy_top, -1)).clamp_min(-80.0)  # log q_tail, (...)
    tail = torch.where(ref_tail > -80.0, ref_tail.exp() * (ref_tail - policy_tail), 0.0)
    return head + tail


def log1mexp(x: Tensor) -> Tensor:
    """log(1 − e^x) for x ≤ 0, stable at both ends (Mächler, 2012); −inf at x = 0."""
    x = x.clamp_max(0.0)
    return torch.where(x > -0.6931471805599453, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def weighted_logratio(scores: TokenScores, segment_weight: float, length_normalize: bool) -> Tensor:
    """R(y|v) = Σ_t m_t w_t (lp_t − ref_t) with w_t = (1 + λ s_t)·a_t; optionally divided by Σ_t m_t w_t.

    Weights apply per token before summing (the released code weighted an already-summed
    reference log-prob, which saturates the sigmoid). Returns ``[B]``.
    """
    weights = _token_weights(scores, segment_weight)  # (B, T)
    logratio = torch.where(scores.mask.bool(), scores.logps - scores.ref_logps, 0.0)  # (B, T)
    total = (logratio * weights).sum(-1)  # (B,)
    if length_normalize:
        total = total / weights.sum(-1).clamp_min(1.0)
    return total


def sequence_kl(scores: TokenScores) -> Tensor:
    """K(y|v) = Σ_t m_t a_t kl_t, the sequential KL of TDPO (a_t = 1 unless image-anchored). ``[B]``."""
    if scores.kl is None:
        raise ValueError("token_weight > 0 needs TokenScores.kl for the chosen and rejected rows")
    kl = scores.kl if scores.anchor is None else scores.kl * scores.anchor  # (B, T)
    return torch.where(scores.mask.bool(), kl, 0.0).sum(-1)


def summed_logps(scores: TokenScores) -> Tensor:
    """Σ_t m_t lp_t, the policy log-likelihood of each response (what TRL logs). Returns ``[B]``."""
    return torch.where(scores.mask.bool(), scores.logps, 0.0).sum(-1)


def sigmoid_loss(z: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """−(1−ε) log σ(z) − ε log σ(−z): DPO's loss, conservative when ε > 0 (Mitchell, 2023)."""
    loss = -F.logsigmoid(z)
    if label_smoothing:
        loss = (1.0 - label_smoothing) * loss - label_smoothing * F.logsigmoid(-z)
    return loss


def ipo_loss(z: Tensor, beta: float) -> Tensor:
    """(z/β − 1/(2β))²: IPO (Azar et al., 2023, eq. 17) with z = β·margin."""
    return (z / beta - 1.0 / (2.0 * beta)) ** 2


def _token_weights(scores: TokenScores, segment_weight: float) -> Tensor:
    weights = scores.mask.to(scores.logps.dtype)  # (B, T)
    if scores.segment is not None and segment_weight != 0:
        weights = weights * (1.0 + segment_weight * scores.segment.to(scores.logps.dtype))
    if scores.anchor is not None:
        weights = weights * scores.anchor
    return weights


def _text_loss(config: ChipLossConfig) -> Callable[[Tensor], Tensor]:
    if config.loss_type == "ipo":
        return lambda z: ipo_loss(z, config.beta)
    return lambda z: sigmoid_loss(z, config.label_smoothing)


def chip_loss(
    chosen: TokenScores,
    rejected: TokenScores,
    chosen_corrupt: TokenScores | None,
    config: ChipLossConfig,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Per-example CHiP loss ``[B]`` and detached per-example metrics (each ``[B]``).

    With W = (y_w|v), L = (y_l|v), C = (y_w|ṽ):

        h_text = R(W) − R(L)                 response + segment preference
        δ      = K(L) − sg(K(W))             token preference (TDPO2; TDPO1 keeps the gradient)
        h_vis  = R(W) − R(C)                 visual preference

        joint:    −log σ(β (h_text + μ h_vis − α δ))
        separate: −log σ(β (h_text − α δ)) + μ · (−log σ(β h_vis))

    plus ``ρ · (−log σ(β R(W)))`` (anchor) and ``η · mean NLL(W)`` (SFT). Label smoothing and IPO
    replace the sigmoid that holds the text margin.
    """
    beta, lam = config.beta, config.segment_weight
    use_visual = config.visual_weight > 0
    if use_visual and chosen_corrupt is None:
        raise ValueError("visual_weight > 0 needs chosen_corrupt scores (the chosen response under ṽ)")

    reward_chosen = weighted_logratio(chosen, lam, config.length_normalize)  # R(W), (B,)
    reward_rejected = weighted_logratio(rejected, lam, config.length_normalize)  # R(L), (B,)
    h_text = reward_chosen - reward_rejected  # (B,)
    metrics: dict[str, Tensor] = {}
    text_margin = h_text - config.token_weight * _token_margin(chosen, rejected, config, metrics)  # (B,)
    h_vis = None
    if chosen_corrupt is not None:
        h_vis = _visual_margin(chosen_corrupt, reward_chosen, config, metrics)  # (B,)

    text_loss = _text_loss(config)
    if config.combine == "joint":
        margin = text_margin + config.visual_weight * h_vis if use_visual else text_margin
        losses = text_loss(beta * margin)
        metrics["loss/text"] = losses
    else:
        losses = text_loss(beta * text_margin)
        metrics["loss/text"] = losses
        if use_visual:
            visual_loss = sigmoid_loss(beta * h_vis)
            metrics["loss/visual"] = visual_loss
            losses = losses + config.visual_weight * visual_loss
    losses = losses + _regularisers(chosen, reward_chosen, config, metrics)

    metrics.update(
        {
            "rewards/chosen": beta * reward_chosen,
            "rewards/rejected": beta * reward_rejected,
            "rewards/margins": beta * h_text,
            "rewards/accuracies": (h_text > 0).float(),
            "logps/chosen": summed_logps(chosen),
            "logps/rejected": summed_logps(rejected),
        }
    )
    return losses, {name: value.detach() for name, value in metrics.items()}


def _token_margin(
    chosen: TokenScores, rejected: TokenScores, config: ChipLossConfig, metrics: dict[str, Tensor]
) -> Tensor | float:
    """δ = K(L) − sg(K(W)) (TDPO2; TDPO1 keeps the gradient of K(W)), or 0 when α = 0. ``[B]``."""
    if config.token_weight <= 0:
        return 0.0
    kl_chosen = sequence_kl(chosen)  # K(W), (B,)
    kl_rejected = sequence_kl(rejected)  # K(L), (B,)
    metrics["kl/chosen"] = kl_chosen
    metrics["kl/rejected"] = kl_rejected
    return kl_rejected - (kl_chosen.detach() if config.tdpo == "tdpo2" else kl_chosen)


def _visual_margin(
    chosen_corrupt: TokenScores, reward_chosen: Tensor, config: ChipLossConfig, metrics: dict[str, Tensor]
) -> Tensor:
    """h_vis = R(W) − R(C), the chosen response's preference for the real image over ṽ. ``[B]``."""
    reward_corrupt = weighted_logratio(chosen_corrupt, config.segment_weight, config.length_normalize)  # R(C)
    h_vis = reward_chosen - reward_corrupt  # (B,)
    metrics["rewards/chosen_corrupt"] = config.beta * reward_corrupt
    metrics["visual/margins"] = config.beta * h_vis
    metrics["visual/accuracies"] = (h_vis > 0).float()
    metrics["logps/chosen_corrupt"] = summed_logps(chosen_corrupt)
    return h_vis


def _regularisers(
    chosen: TokenScores, reward_chosen: Tensor, config: ChipLossConfig, metrics: dict[str, Tensor]
) -> Tensor | float:
    """ρ · (−log σ(β R(W))) (mDPO's anchor) + η · mean NLL(W) (SFT). ``[B]`` or 0."""
    total: Tensor | float = 0.0
    if config.anchor_weight > 0:
        anchor_loss = sigmoid_loss(config.beta * reward_chosen)
        metrics["loss/anchor"] = anchor_loss
        total = total + config.anchor_weight * anchor_loss
    if config.sft_weight > 0:
        n_tokens = chosen.mask.to(chosen.logps.dtype).sum(-1).clamp_min(1.0)
        sft_loss = -summed_logps(chosen) / n_tokens
        metrics["loss/sft"] = sft_loss
        total = total + config.sft_weight * sft_loss
    return total


def image_anchor_weights(real_logps: Tensor, corrupt_logps: Tensor, preferred: bool) -> Tensor:
    """Per-token weights a_t from how much the real image v raises a token over ṽ (TPO, Gu et al. 2024).

    ``Δ_t = sg(log p(y_t | v) − log p(y_t | ṽ))``; a preferred (chosen) token weighs ``1/2 + σ(Δ_t)``,
    a dispreferred (rejected) one ``3/2 − σ(Δ_t)``: both lie in (1/2, 3/2) and equal 1 where the image
    changes nothing, so image-grounded chosen tokens and image-contradicted rejected tokens count
    most. Shapes ``[B, T]`` -> ``[B, T]``; no gradient flows through the weights.
    """
    delta = (real_logps - corrupt_logps).detach()  # (B, T)
    grounded = torch.sigmoid(delta)  # (B, T)
    return 0.5 + grounded if preferred else 1.5 - grounded


def with_image_anchors(
    chosen: TokenScores,
    rejected: TokenScores,
    chosen_corrupt: TokenScores,
    rejected_corrupt: TokenScores,
    source: AnchorSource,
) -> tuple[TokenScores, TokenScores, TokenScores]:
    """W, L and C with their `image_anchor_weights` (C takes W's: the same tokens), from
    the reference's log-probs (``source="reference"``) or the policy's."""

    def logps(scores: TokenScores) -> Tensor:
        return scores.ref_logps if source == "reference" else scores.logps

    anchor_w = image_anchor_weights(logps(chosen), logps(chosen_corrupt), preferred=True)  # (B, T)
    anchor_l = image_anchor_weights(logps(rejected), logps(rejected_corrupt), preferred=False)  # (B, T)
    return (
        replace(chosen, anchor=anchor_w),
        replace(rejected, anchor=anchor_l),
        replace(chosen_corrupt, anchor=anchor_w),
    )


def select_rows(scores: TokenScores, index: Tensor) -> TokenScores:
    """The rows ``index`` (long ``[P]``) of every tensor of ``scores``: ``[B, T]`` -> ``[P, T]``."""
    picked = {
        name: getattr(scores, name) for name in ("logps", "ref_logps", "mask", "segment", "kl", "anchor")
    }
    return TokenScores(**{name: None if value is None else value[index] for name, value in picked.items()})


def list_loss(
    chosen: TokenScores,
    rejected: TokenScores,
    chosen_corrupt: TokenScores | None,
    example_of: Tensor,
    config: ChipLossConfig,
    chosen_segment: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """`chip_loss` with several rejected responses per example: the mean over them of each pairwise term.

    ``chosen`` and ``chosen_corrupt`` hold one row per example ``[B, T]``; ``rejected`` one row per
    rejected response ``[P, T']``, ``example_of[p]`` (long ``[P]``) naming its example. Example i with
    rejected responses L_i1..L_iK scores ``(1/K) Σ_k ℓ(W_i, L_ik, C_i)``, ℓ the per-pair CHiP loss,
    so an example weighs the same whatever its K. ``chosen_segment`` ``[P, T]`` gives the chosen
    response's changed-segment flags per pair (W's and C's; a derived alignment depends on the
    rejected response). Returns ``[B]`` losses and ``[B]`` metrics (means over each example's pairs).
    """
    pair_chosen = select_rows(chosen, example_of)  # (P, T)
    corrupt = None if chosen_corrupt is None else select_rows(chosen_corrupt, example_of)  # (P, T_c)
    if chosen_segment is not None:
        pair_chosen = replace(pair_chosen, segment=chosen_segment)
        if corrupt is not None:
            corrupt = replace(corrupt, segment=chosen_segment[:, : corrupt.logps.shape[1]])
    pair_losses, pair_metrics = chip_loss(pair_chosen, rejected, corrupt, config)  # (P,)
    num = chosen.logps.shape[0]
    counts = torch.zeros(num, dtype=pair_losses.dtype, device=pair_losses.device).index_add_(
        0, example_of, torch.ones_like(pair_losses)
    )  # (B,)

    def per_example(values: Tensor) -> Tensor:
        total = torch.zeros(num, dtype=values.dtype, device=values.device).index_add(0, example_of, values)
        return total / counts.to(values.dtype)  # (B,)

    return per_example(pair_losses), {name: per_example(value) for name, value in pair_metrics.items()}
