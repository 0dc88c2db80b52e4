"""`chunked_head_scores`: the plain path's log-probs, KL and gradients, without ``(n, V)`` tensors saved."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from chip.losses import token_kl, topk_token_kl
from chip.modeling.chunked_head import HiddenReference, TopKReference, chunked_head_scores

S, R, H, V = 3, 7, 8, 50


@pytest.fixture
def setup():
    generator = torch.Generator().manual_seed(0)
    head = nn.Linear(H, V, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.randn(V, H, generator=generator))
    ref_head = nn.Linear(H, V, bias=False)
    with torch.no_grad():
        ref_head.weight.copy_(head.weight + 0.1 * torch.randn(V, H, generator=generator))
    hidden = torch.randn(S, R, H, generator=generator)
    ref_hidden = torch.randn(S, R, H, generator=generator)
    targets = torch.randint(V, (S, R), generator=generator)
    mask = torch.ones(S, R, dtype=torch.bool)
    mask[1, 4:] = False  # a shorter row, padded
    mask[2, 1:] = False
    return head, ref_head, hidden, ref_hidden, targets, mask


def _plain(head, hidden, targets, mask, ref_logits=None, topk=None):
    logits = head(hidden).float().masked_fill(~mask[..., None], 0.0)  # (S, R, V)
    logp = torch.log_softmax(logits, -1).gather(-1, targets[..., None]).squeeze(-1).masked_fill(~mask, 0.0)
    if ref_logits is not None:
        return logp, token_kl(logits, ref_logits.masked_fill(~mask[..., None], 0.0)).masked_fill(~mask, 0.0)
    if topk is not None:
        return logp, topk_token_kl(logits, *topk).masked_fill(~mask, 0.0)
    return logp, None


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 100])
@pytest.mark.parametrize("kind", ["none", "hidden", "topk"])
def test_equal_to_the_plain_path_with_gradients(setup, chunk_size, kind):
    head, ref_head, hidden, ref_hidden, targets, mask = setup
    with torch.no_grad():
        ref_logps = torch.log_softmax(ref_head(ref_hidden), -1)
    topk = ref_logps.topk(5, dim=-1)
    reference = {
        "none": None,
        "hidden": HiddenReference(ref_hidden[mask], ref_head),
        "topk": TopKReference(topk.values[mask], topk.indices[mask]),
    }[kind]

    def run(chunked: bool):
        head.zero_grad()
        x = hidden.clone().requires_grad_(True)
        if chunked:
            logp, kl = chunked_head_scores(x[mask], head, targets[mask], chunk_size, reference)  # (n,) each
        else:
            ref_logits = ref_head(ref_hidden).detach() if kind == "hidden" else None
            logp, kl = _plain(
                head, x, targets, mask, ref_logits, (topk.values, topk.indices) if kind == "topk" else None
            )
            logp, kl = logp[mask], None if kl is None else kl[mask]  # the real tokens, (n,) each
        loss = logp.sum() + (0.0 if kl is None else 0.3 * kl.sum())
        loss.backward()
        return logp.detach(), None if kl is None else kl.detach(), x.grad, head.weight.grad.clone()

    expected, got = run(False), run(True)
    for a, b in zip(got, expected):
        if a is None:
            assert b is None
            continue
        assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_no_full_vocabulary_tensor_is_saved_for_backward(setup):
    head, ref_head, hidden, ref_hidden, targets, mask = setup
    saved: list[int] = []

    def pack(tensor):
        saved.append(tensor.numel())
        return tensor

    x = hidden.clone().requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logp, kl = chunked_head_scores(
            x[mask], head, targets[mask], 2, HiddenReference(ref_hidden[mask], ref_head)
        )
    (logp.sum() + kl.sum()).backward()
    # chunks are recomputed in backward: what is kept is far less than one (S, R, V) tensor in all
    # (without the checkpointing the chunks' logits alone would add up to S * R * V)
    assert saved and sum(saved) < S * R * V / 4


def test_no_grad_and_empty_responses():
    head = nn.Linear(H, V)
    with torch.no_grad():
        logp, kl = chunked_head_scores(torch.zeros(0, H), head, torch.zeros(0, dtype=torch.long), 4)
    assert logp.shape == (0,) and kl is None
