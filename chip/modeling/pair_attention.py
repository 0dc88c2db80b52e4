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

Packed rows (`chip.modeling.plans.pack`) hold several segments per row; each attends as above,
within itself. On CUDA in half precision the causal ``[prompt, chosen]`` parts of all segments go
to torch's variable-length flash attention (``torch.nn.attention.varlen.varlen_attn``) in one call
per layer instead of one SDPA call each; the rejected tokens keep their per-segment call.

Under gradient checkpointing the layers run again during backward, after the block has ended:
:func:`pair_sdpa` then finds the segments by the mask tensor the layer is called with (the
same object the forward saw), and the switch stays on after the block (harmless: every call it
does not recognise is plain SDPA), so the recomputation runs exactly what the forward ran.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from chip.modeling.quirks import quirks_for

try:  # torch >= 2.9: flash attention over sequences of different lengths, CUDA only
    from torch.nn.attention.varlen import varlen_attn as _VARLEN_ATTN
except ImportError:  # pragma: no cover - older torch
    _VARLEN_ATTN = None

NAME = "chip_pair_sdpa"

# One sequence of a forward: ``(start, prompt, chosen, rejected)`` token counts. A pair row is one
# segment at 0; a packed row (`chip.modeling.packing`) holds every example of the batch back to back;
# a plain ``[prompt, response]`` row is ``(start, length, 0, 0)``.
Segment = tuple[int, int, int, int]


@dataclass
class PairForward:
    """The segments of each row of one forward, and how many attention calls recognised them."""

    rows: list[list[Segment]]
    calls: int = 0


_ACTIVE: ContextVar[PairForward | None] = ContextVar("chip_pair_segments", default=None)
# The forward by id of the mask it was given: what a checkpointed layer's recomputation in backward
# looks its segments up by. An entry lives as long as its mask.
_BY_MASK: dict[int, PairForward] = {}


@contextmanager
def active_segments(rows: list[list[Segment]]) -> Iterator[PairForward]:
    """Inside the block `pair_sdpa` reads ``rows`` as the segments of the forward being run."""
    forward = PairForward(rows)
    token = _ACTIVE.set(forward)
    try:
        yield forward
    finally:
        _ACTIVE.reset(token)


def forward_for(attention_mask: torch.Tensor | None) -> PairForward | None:
    """The forward whose segments ``attention_mask`` belongs to: the active one, or for a layer
    recomputed in backward (after the block), the one that mask was first seen with."""
    active = _ACTIVE.get()
    if attention_mask is None:
        return active
    if active is None:
        return _BY_MASK.get(id(attention_mask))
    if id(attention_mask) not in _BY_MASK:  # reentrant checkpointing runs the forward without grad
        _BY_MASK[id(attention_mask)] = active
        weakref.finalize(attention_mask, _BY_MASK.pop, id(attention_mask), None)
    return active


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
    """Attention of pair or packed rows as one or two SDPA calls per segment; HF's SDPA for anything else.

    ``query`` ``(B, heads, T, D)``, ``key``/``value`` ``(B, kv_heads, T, D)``; returns
    ``(B, T, heads, D)`` like HF's attention functions (zeros at positions no segment covers:
    padding, which no real token attends to).
    """
    forward = forward_for(attention_mask)
    if forward is None or len(forward.rows) != query.shape[0] or query.shape[2] != key.shape[2]:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    forward.calls += 1
    options = dict(dropout=dropout, scaling=scaling)
    if _varlen_usable(query, dropout):
        return _pair_varlen(module, query, key, value, forward.rows, options), None
    if len(query) == 1:  # a packed row: no per-row slicing (each slice's backward is a zeroed full-size copy)
        return _row_attention(module, query, key, value, forward.rows[0], options), None
    rows = zip(query.split(1), key.split(1), value.split(1), forward.rows)  # (1, h, T, D) each
    return torch.cat([_row_attention(module, *row, options) for row in rows]), None  # (B, T, h, D)


def _row_attention(module: nn.Module, q, k, v, segments: list[Segment], options: dict) -> torch.Tensor:
    """One row ``(1, heads, T, D)`` of segments -> ``(1, T, heads, D)``.

    The row is cut once along T (`torch.split`, whose backward is one concatenation) rather than
    sliced per segment and per use: the backward of every slice allocates a zeroed tensor of the
    whole row, and the gradients of all of them are then added up.
    """
    sizes, cursor = [], 0  # along T: the gap before, [prompt, chosen] and rejected, per segment
    for start, prompt, chosen, rejected in segments:
        sizes += [start - cursor, prompt + chosen, rejected]
        cursor = start + prompt + chosen + rejected
    sizes.append(q.shape[2] - cursor)  # padding after the last segment
    qs, ks, vs = (x.split(sizes, dim=2) for x in (q, k, v))
    pieces = []
    for index, (_, prompt, _, rejected) in enumerate(segments):
        gap, shared, own = (3 * index, 3 * index + 1, 3 * index + 2)
        if sizes[gap]:
            pieces.append(q.new_zeros(1, sizes[gap], q.shape[1], q.shape[3]))  # (1, gap, h, D)
        pieces.append(
            sdpa_attention_forward(
                module, qs[shared], ks[shared], vs[shared], None, is_causal=True, **options
            )[0]
        )  # (1, P + C, h, D): causal, as in a plain row
        if rejected:  # keys [prompt, rejected] (1, kv, P + R, D)
            keys = torch.cat([ks[shared][:, :, :prompt], ks[own]], dim=2)
            values = torch.cat([vs[shared][:, :, :prompt], vs[own]], dim=2)
            mask = _rejected_mask(prompt, rejected, q.device)
            pieces.append(
                sdpa_attention_forward(module, qs[own], keys, values, mask, **options)[0]
            )  # (1, R, h, D)
    if sizes[-1]:
        pieces.append(q.new_zeros(1, sizes[-1], q.shape[1], q.shape[3]))  # (1, pad, h, D)
    return torch.cat(pieces, dim=1)  # (1, T, h, D)


def _rejected_mask(prompt: int, rejected: int, device: torch.device) -> torch.Tensor:
    """Which of the keys ``[prompt, rejected]`` each rejected token sees: all of the prompt, causal
    within the rejected tokens; ``(1, 1, R, P + R)`` bool."""
    visible = torch.ones(rejected, prompt + rejected, dtype=torch.bool, device=device)
    visible[:, prompt:] = torch.ones(rejected, rejected, dtype=torch.bool, device=device).tril()
    return visible[None, None]


def _rejected_attention(module: nn.Module, q, k, v, segment: Segment, options: dict) -> torch.Tensor:
    """The rejected tokens of one segment of row ``q``/``k``/``v`` ``(1, heads, T, D)``: attention
    over ``[prompt, rejected]``, causal within the rejected tokens; ``(1, R, heads, D)``."""
    start, prompt, chosen, rejected = segment
    own = slice(start + prompt + chosen, start + prompt + chosen + rejected)
    head = slice(start, start + prompt)
    keys = torch.cat([k[:, :, head], k[:, :, own]], dim=2)  # (1, kv, P + R, D)
    values = torch.cat([v[:, :, head], v[:, :, own]], dim=2)  # (1, kv, P + R, D)
    mask = _rejected_mask(prompt, rejected, q.device)
    return sdpa_attention_forward(module, q[:, :, own], keys, values, mask, **options)[0]


def _varlen_usable(query: torch.Tensor, dropout: float) -> bool:
    """Whether the causal parts can go to the variable-length flash kernel: CUDA (Ampere or later),
    half precision, head size <= 256, no dropout (the kernel takes none)."""
    return (
        _VARLEN_ATTN is not None
        and query.is_cuda
        and query.dtype in (torch.float16, torch.bfloat16)
        and query.shape[-1] <= 256
        and dropout == 0.0
        and torch.cuda.get_device_capability(query.device) >= (8, 0)
    )


def _pair_varlen(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    rows: list[list[Segment]],
    options: dict,
) -> torch.Tensor:
    """`pair_sdpa` with every segment's causal ``[prompt, chosen]`` part in one call of torch's
    variable-length flash attention (sequences back to back, delimited by cumulative lengths); the
    rejected tokens, a small share, keep their per-segment call. Returns ``(B, T, heads, D)``."""
    batch, heads, seq_len, dim = query.shape

    def by_token(x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2).reshape(batch * seq_len, x.shape[1], dim)  # (B·T, h, D)

    spans = [
        (row * seq_len + start, prompt + chosen)
        for row, segments in enumerate(rows)
        for start, prompt, chosen, _ in segments
    ]
    shared = torch.cat([torch.arange(first, first + length) for first, length in spans]).to(query.device)
    bounds = torch.tensor([0, *(length for _, length in spans)]).cumsum(0).to(query.device, torch.int32)
    longest = max(length for _, length in spans)
    q, k, v = by_token(query), by_token(key), by_token(value)
    causal = _VARLEN_ATTN(
        q[shared],
        k[shared],
        v[shared],
        bounds,
        bounds,
        longest,
        longest,
        scale=options["scaling"],
        window_size=(-1, 0),
        enable_gqa=k.shape[1] != q.shape[1],
    )  # (sum P + C, h, D)
    index, outputs = [shared], [causal]
    for row, segments in enumerate(rows):
        one = (query[row : row + 1], key[row : row + 1], value[row : row + 1])  # (1, h, T, D) each
        for segment in segments:
            start, prompt, chosen, rejected = segment
            if rejected:
                first = row * seq_len + start + prompt + chosen
                index.append(torch.arange(first, first + rejected, device=query.device))
                outputs.append(_rejected_attention(module, *one, segment, options)[0])  # (R, h, D)
    out = q.new_zeros(batch * seq_len, heads, dim).index_copy(0, torch.cat(index), torch.cat(outputs))
    return out.view(batch, seq_len, heads, dim)


AttentionInterface.register(NAME, pair_sdpa)


def decoder_config(core: PreTrainedModel):
    """The config object the language decoder's attention layers read (their own copy in some families)."""
    trunk = quirks_for(core.config).trunk
    owner = getattr(core, trunk, None) if trunk else None
    decoder = getattr(owner, "language_model", None) or getattr(owner, "text_model", None)
    return decoder.config if decoder is not None else core.config.get_text_config()


@contextmanager
def pair_attention(core: PreTrainedModel, rows: list[list[Segment]], packed: bool = False) -> Iterator[None]:
    """Within the block, the decoder's SDPA layers attend as :func:`pair_sdpa` over ``rows``.

    For pair rows the dense block mask the forward is given is correct on its own, so models on
    eager attention keep it (they asked for eager for a reason, e.g. to return attention weights).
    ``packed`` rows come with no real mask (`chip.modeling.packing`): they need SDPA, and the block
    checks that every decoder layer recognised them, or raises. With gradient checkpointing the
    switch is left on after the block (see the module docstring), so the layers' recomputation in
    backward runs :func:`pair_sdpa` too.
    """
    config = decoder_config(core)
    if config._attn_implementation not in ("sdpa", NAME):
        if packed:
            raise RuntimeError(f"packed rows need SDPA attention, not {config._attn_implementation!r}")
        yield
        return
    # With checkpointing, a forward with gradients is recomputed in a later backward, possibly after
    # other forwards (a reference without gradients): keep the switch on for the model from then on.
    sticky = _checkpointing(core) or config._attn_implementation == NAME
    config._attn_implementation = NAME
    try:
        with active_segments(rows) as forward:
            yield
    finally:
        if not sticky:
            config._attn_implementation = "sdpa"
    layers = getattr(config, "num_hidden_layers", 1)
    if packed and forward.calls < layers:
        raise RuntimeError(
            f"only {forward.calls} of {layers} decoder layers attended through {NAME}; packed rows "
            "would attend across examples"
        )


def pair_segments(lengths: torch.Tensor) -> list[list[Segment]]:
    """The segments of pair rows ``[prompt, chosen, rejected, padding]``, lengths ``(B, 3)``."""
    return [[(0, prompt, chosen, rejected)] for prompt, chosen, rejected in lengths.tolist()]


def _checkpointing(core: PreTrainedModel) -> bool:
    # transformers 5.x renamed `is_gradient_checkpointing` (kept, deprecated) to `is_activation_checkpointing`
    if hasattr(type(core), "is_activation_checkpointing"):
        return bool(core.is_activation_checkpointing)
    return bool(core.is_gradient_checkpointing)
