"""Autograd kernels for the log-prob of a target token and the token KL, each in one ``(n, V)`` buffer.

A leaf module: the scores (`chip.modeling.scores`) and the chunked head (`chip.modeling.chunked_head`)
both call these, and neither is imported here.

Every pass over the ``(n, V)`` logits runs a few rows at a time through one small scratch buffer
(`ROW_BYTES`) on a CPU. A temporary as large as the logits (41 MB for 320 tokens of a 32k
vocabulary) is a fresh allocation each time, which the allocator maps from and returns to the
operating system, and filling those fresh pages cost more than the arithmetic on them (~20 ms
against ~9 ms for one subtraction on a CPU); a ~1 MB scratch buffer is reused and stays in cache.
On an accelerator the caching allocator keeps memory, and one call over all rows launches fewer
kernels: there a chunk is every row.

With ``reuse_logits`` a backward writes the gradient into the saved logits' own storage instead
of a new ``(n, V)`` tensor: for the caller that owns the logits and reads nothing from them after
the loss (the scores of `chip.modeling.scores`), one ``(n, V)`` tensor less at the step's peak. A
tensor another autograd node also saved would fail that node's version check (loudly), never
give it wrong numbers.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

ROW_BYTES = 1 << 20  # scratch per chunk of rows on a CPU


def _chunks(values: torch.Tensor) -> Iterator[slice]:
    """Row ranges of ``values`` ``(n, V)``: ~`ROW_BYTES` of it each on a CPU, all rows elsewhere."""
    rows, width = values.shape
    step = max(1, ROW_BYTES // (width * values.element_size())) if values.device.type == "cpu" else rows
    for start in range(0, rows, max(step, 1)):
        yield slice(start, start + step)


def _scratch(values: torch.Tensor) -> torch.Tensor:
    """A buffer the shape of one chunk of ``values`` (``(n, V)``)."""
    return torch.empty_like(values[next(_chunks(values))]) if len(values) else values


def _gradient_buffer(ctx, logits: torch.Tensor) -> torch.Tensor:
    """Where a backward builds the logits' gradient: their own storage with ``reuse_logits``, else new."""
    return logits if ctx.reuse_logits else torch.empty_like(logits)


def logsumexp_rows(values: torch.Tensor) -> torch.Tensor:
    """``torch.logsumexp(values, -1)`` of ``(n, V)`` float values ``(n,)``, without an ``(n, V)`` temporary."""
    out = values.new_empty(values.shape[0])
    scratch = _scratch(values)
    for rows in _chunks(values):
        block = values[rows]
        top = block.amax(-1, keepdim=True)  # (c, 1)
        top.masked_fill_(~torch.isfinite(top), 0.0)  # all -inf (or an inf) rows: as torch.logsumexp
        buffer = torch.sub(block, top, out=scratch[: len(block)]).exp_()  # (c, V)
        out[rows] = buffer.sum(-1).log_().add_(top.squeeze(-1))
    return out


def _softmax_into(out: torch.Tensor, values: torch.Tensor, log_total: torch.Tensor) -> torch.Tensor:
    """``out`` ← ``exp(values − log_total)`` (rows of a softmax, given their logsumexp)."""
    return torch.sub(values, log_total[:, None], out=out).exp_()


class LogSumExpGather(torch.autograd.Function):
    """``(logsumexp(z), z[index])`` of logits ``z`` ``(n, V)`` and an index ``(n, m)``.

    Every log-prob a loss reads off the logits is ``z_v − logsumexp(z)`` for a few ``v``: the target
    token, the reference's top-k tokens. Built from these two outputs by ordinary autograd on
    ``(n, m)`` tensors, nothing of size ``(n, V)`` is kept but the logits; the backward,
    ``g_lse · softmax(z) + scatter(g_index)``, is built in one buffer.
    """

    @staticmethod
    def forward(
        ctx, logits: torch.Tensor, index: torch.Tensor, reuse_logits: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        log_total = logsumexp_rows(logits)  # (n,)
        ctx.save_for_backward(logits, index, log_total)
        ctx.reuse_logits = reuse_logits
        return log_total, logits.gather(-1, index)  # (n,), (n, m)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_total: torch.Tensor, grad_picked: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        logits, index, log_total = ctx.saved_tensors
        grad = _gradient_buffer(ctx, logits)  # (n, V)
        for rows in _chunks(logits):
            _softmax_into(grad[rows], logits[rows], log_total[rows]).mul_(grad_total[rows, None])
        return grad.scatter_add_(-1, index, grad_picked), None, None


class TargetLogProb(torch.autograd.Function):
    """``log_softmax(z)[..., y]`` as ``z_y - logsumexp(z)``, with a backward that allocates one tensor.

    Autograd through ``log_softmax`` + ``gather`` keeps a second ``(n, V)`` tensor (the log-probs)
    for backward and builds two more in it (the scattered gradient and the softmax term). Here only
    the logits (alive anyway) and their logsumexp are kept, and the gradient
    ``g · (onehot(y) − softmax(z))`` is built in place in a single ``(n, V)`` buffer.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, reuse_logits: bool = False) -> torch.Tensor:
        flat = logits.reshape(-1, logits.shape[-1])  # (n, V)
        log_total = logsumexp_rows(flat).view(targets.shape)  # (...)
        ctx.save_for_backward(logits, targets, log_total)
        ctx.reuse_logits = reuse_logits and logits.is_contiguous()
        return logits.gather(-1, targets[..., None]).squeeze(-1) - log_total  # (...)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        logits, targets, log_total = ctx.saved_tensors
        flat, flat_total, flat_grad = (
            logits.reshape(-1, logits.shape[-1]),
            log_total.reshape(-1),
            grad.reshape(-1),
        )
        grad_logits = _gradient_buffer(ctx, flat)  # (n, V)
        for rows in _chunks(flat):  # -g · softmax(z)
            _softmax_into(grad_logits[rows], flat[rows], flat_total[rows]).mul_(-flat_grad[rows, None])
        grad_logits.scatter_add_(-1, targets.reshape(-1, 1), flat_grad[:, None])  # + g · onehot(y)
        return grad_logits.view(logits.shape), None, None


class TargetLogProbAndKL(torch.autograd.Function):
    """``log_softmax(z)[y]`` and KL(π_ref ‖ π_θ) ``= Σ_v p_v (log p_v − log q_v)`` per token, in one pass.

    ``z`` are the policy's logits (q = softmax(z)), ``r`` the reference's (p = softmax(r)), both
    ``(n, V)``; ``ref_log_total`` (optional) is ``logsumexp(r)`` where the caller has it already.
    Separately, the log-prob, the two log-softmaxes and the KL's terms each build and keep
    ``(n, V)`` tensors; here only the logits (alive anyway) and two logsumexps are kept, and the
    gradient ``g_lp·(onehot(y) − q) + g_kl·(q − p)`` is built in one buffer.
    """

    @staticmethod
    def forward(ctx, logits, targets, ref_logits, ref_log_total=None, reuse_logits=False):
        log_total = logsumexp_rows(logits)  # (n,)
        if ref_log_total is None:
            ref_log_total = logsumexp_rows(ref_logits)  # (n,)
        kl = logits.new_empty(logits.shape[0])  # (n,)
        ref_logp, gap = _scratch(ref_logits), _scratch(ref_logits)
        for rows in _chunks(logits):
            log_p = torch.sub(ref_logits[rows], ref_log_total[rows, None], out=ref_logp[: len(kl[rows])])
            gaps = torch.sub(log_p, logits[rows], out=gap[: len(kl[rows])]).add_(log_total[rows, None])
            kl[rows] = torch.linalg.vecdot(log_p.exp_(), gaps)  # Σ_v p_v (log p_v − log q_v)
        ctx.save_for_backward(logits, targets, ref_logits, log_total, ref_log_total)
        ctx.reuse_logits = reuse_logits
        logp = logits.gather(-1, targets[:, None]).squeeze(-1) - log_total  # (n,)
        return logp, kl

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_logp: torch.Tensor, grad_kl: torch.Tensor):
        logits, targets, ref_logits, log_total, ref_log_total = ctx.saved_tensors
        grad, ref_probs = _gradient_buffer(ctx, logits), _scratch(ref_logits)  # (n, V), (c, V)
        for rows in _chunks(logits):
            out = _softmax_into(grad[rows], logits[rows], log_total[rows])  # q
            out.mul_((grad_kl[rows] - grad_logp[rows])[:, None])  # (g_kl − g_lp)·q
            p = _softmax_into(ref_probs[: len(out)], ref_logits[rows], ref_log_total[rows])  # p
            out.sub_(p.mul_(grad_kl[rows, None]))  # − g_kl·p
        grad.scatter_add_(-1, targets[:, None], grad_logp[:, None])  # + g_lp·onehot(y)
        return grad, None, None, None, None
