"""SDPA for a shared-prefix pair batch that skips what the block mask hides.

The block mask of :mod:`chip.modeling.pairs` is dense: given a mask, SDPA computes every
query-key product and throws the hidden ones away, where ``is_causal`` skips the upper triangle.
For a row ``[prompt P, chosen C, rejected R]`` the same attention needs only

- for the queries of P and C: causal attention over the keys of P and C (``is_causal``; the keys
  of R lie in their future anyway),
- for the queries of R: attention over the keys of P and R, causal within R — an ``(R, P + R)``
  mask, small next to the ``(T, T)`` one since responses are short next to the image prompt,

about half the products of the dense mask. :func:`pair_attention` switches the decoder's
attention to :func:`pair_sdpa` for one forward; it is only a speed-up: outside that block, or for
any call it does not recognise, the same layers run HF's SDPA with the dense mask they are given,
which gives the same numbers.

Under gradient checkpointing the layers run again during backward, after the block has ended:
:func:`pair_sdpa` then finds the pair lengths by the mask tensor the layer is called with (the
same object the forward saw), and the switch stays on after the block (harmless: every call it
does not recognise is plain SDPA), so the recomputation runs exactly what the forward ran.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import nn
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from chip.modeling.quirks import quirks_for

NAME = "chip_pair_sdpa"
_LENGTHS: ContextVar[list[list[int]] | None] = ContextVar("chip_pair_lengths", default=None)
# Pair lengths by id of the dense mask a pair forward was given: what a checkpointed
# layer's recomputation in backward looks them up by. An entry lives as long as its mask.
_BY_MASK: dict[int, list[list[int]]] = {}


def _lengths_for(attention_mask: torch.Tensor | None) -> list[list[int]] | None:
    lengths = _LENGTHS.get()
    if attention_mask is None:
        return lengths
    if lengths is None:
        return _BY_MASK.get(id(attention_mask))
    if id(attention_mask) not in _BY_MASK:  # reentrant checkpointing runs the forward without grad
        _BY_MASK[id(attention_mask)] = lengths
        weakref.finalize(attention_mask, _BY_MASK.pop, id(attention_mask), None)
    return lengths


def pair_sdpa(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """Attention of a pair batch as two SDPA calls per row; HF's SDPA for anything else.

    ``query`` ``(B, heads, T, D)``, ``key``/``value`` ``(B, kv_heads, T, D)``; returns
    ``(B, T, heads, D)`` like HF's attention functions (zeros at padding positions, which no real
    token attends to).
    """
    lengths = _lengths_for(attention_mask)
    if lengths is None or len(lengths) != query.shape[0] or query.shape[2] != key.shape[2]:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    seq_len = query.shape[2]
    rows = []
    for row, (prompt, chosen, rejected) in enumerate(lengths):
        shared = prompt + chosen  # queries that attend causally, as in an ordinary row
        q, k, v = query[row : row + 1], key[row : row + 1], value[row : row + 1]  # (1, h, T, D)
        first, _ = sdpa_attention_forward(
            module, q[:, :, :shared], k[:, :, :shared], v[:, :, :shared], None,
            dropout=dropout, scaling=scaling, is_causal=True,
        )  # fmt: skip  # (1, P + C, h, D)
        own = slice(shared, shared + rejected)
        keys = torch.cat([k[:, :, :prompt], k[:, :, own]], dim=2)  # (1, kv, P + R, D)
        values = torch.cat([v[:, :, :prompt], v[:, :, own]], dim=2)  # (1, kv, P + R, D)
        visible = torch.ones(rejected, prompt + rejected, dtype=torch.bool, device=query.device)
        visible[:, prompt:] = torch.ones(rejected, rejected, dtype=torch.bool, device=query.device).tril()
        second, _ = sdpa_attention_forward(
            module, q[:, :, own], keys, values, visible[None, None], dropout=dropout, scaling=scaling
        )  # (1, R, h, D)
        padding = first.new_zeros(1, seq_len - shared - rejected, *first.shape[2:])  # (1, pad, h, D)
        rows.append(torch.cat([first, second, padding], dim=1))  # (1, T, h, D)
    return torch.cat(rows), None  # (B, T, h, D)


AttentionInterface.register(NAME, pair_sdpa)


def decoder_config(core: PreTrainedModel):
    """The config object the language decoder's attention layers read (their own copy in some families)."""
    trunk = quirks_for(core.config).trunk
    owner = getattr(core, trunk, None) if trunk else None
    decoder = getattr(owner, "language_model", None) or getattr(owner, "text_model", None)
    return decoder.config if decoder is not None else core.config.get_text_config()


@contextmanager
def pair_attention(core: PreTrainedModel, lengths: torch.Tensor) -> Iterator[None]:
    """Within the block, the decoder's SDPA layers attend as :func:`pair_sdpa` for ``lengths`` ``(B, 3)``.

    Models on eager attention keep the dense mask (they asked for eager for a reason, e.g. to
    return attention weights). With gradient checkpointing the switch is left on after the block
    (see the module docstring), so the layers' recomputation in backward runs :func:`pair_sdpa` too.
    """
    config = decoder_config(core)
    if config._attn_implementation not in ("sdpa", NAME):
        yield
        return
    # With checkpointing, a forward with gradients is recomputed in a later backward, possibly after
    # other forwards (a reference without gradients): keep the switch on for the model from then on.
    sticky = _checkpointing(core) or config._attn_implementation == NAME
    token = _LENGTHS.set(lengths.tolist())
    config._attn_implementation = NAME
    try:
        yield
    finally:
        if not sticky:
            config._attn_implementation = "sdpa"
        _LENGTHS.reset(token)


def _checkpointing(core: PreTrainedModel) -> bool:
    # transformers 5.x renamed `is_gradient_checkpointing` (kept, deprecated) to `is_activation_checkpointing`
    if hasattr(type(core), "is_activation_checkpointing"):
        return bool(core.is_activation_checkpointing)
    return bool(core.is_gradient_checkpointing)
