"""`pair_sdpa` gives what SDPA gives with the dense block mask, and the decoder really uses it."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.testing import assert_close
from transformers import AttentionInterface, AutoModelForImageTextToText
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from chip.modeling import VLMAdapter, response_logps
from chip.modeling.pair_attention import NAME, active_segments, forward_for, pair_sdpa, pair_segments
from chip.modeling.pairs import PADDING, pair_attention_mask, pair_branches


class _GroupedQueryAttention(nn.Module):
    num_key_value_groups = 2  # 4 query heads share 2 key/value heads
    training = False


def test_two_calls_per_row_equal_one_call_with_the_dense_mask():
    """Rows of different prompt/chosen/rejected lengths, padding included, grouped-query heads."""
    lengths = torch.tensor([[5, 3, 4], [7, 2, 1], [2, 1, 1]])  # (B, 3); rows end at 12, 10, 4 of T = 12
    seq_len = 12
    torch.manual_seed(0)
    query = torch.randn(3, 4, seq_len, 8, dtype=torch.float64)  # (B, heads, T, D)
    key, value = torch.randn(2, 3, 2, seq_len, 8, dtype=torch.float64)  # (B, kv_heads, T, D) each
    module = _GroupedQueryAttention()
    dense, _ = sdpa_attention_forward(
        module, query, key, value, pair_attention_mask(lengths, seq_len, torch.bool)
    )
    with active_segments(pair_segments(lengths)):
        split, _ = pair_sdpa(module, query, key, value, None)
    real = pair_branches(lengths, seq_len) != PADDING  # (B, T)
    assert_close(split[real], dense[real], rtol=0, atol=1e-12)
    assert split[~real].abs().max() == 0


def test_packed_segments_equal_each_row_on_its_own():
    """Pair and plain rows back to back in one sequence attend exactly as each row alone."""
    rows = [(5, 3, 4), (7, 2, 1), (4, 0, 0), (2, 1, 1)]  # (prompt, chosen, rejected); (4, 0, 0) a plain row
    total = sum(map(sum, rows))
    torch.manual_seed(0)
    query = torch.randn(1, 4, total, 8, dtype=torch.float64)  # (1, heads, L, D)
    key, value = torch.randn(2, 1, 2, total, 8, dtype=torch.float64)  # (1, kv_heads, L, D) each
    module = _GroupedQueryAttention()
    segments, start = [], 0
    for row in rows:
        segments.append((start, *row))
        start += sum(row)
    with active_segments([segments]):
        packed, _ = pair_sdpa(module, query, key, value, None)  # (1, L, heads, D)
    for start, *lengths in segments:
        own = slice(start, start + sum(lengths))
        mask = pair_attention_mask(torch.tensor([lengths]), sum(lengths), torch.bool)  # (1, 1, t, t)
        alone, _ = sdpa_attention_forward(module, query[:, :, own], key[:, :, own], value[:, :, own], mask)
        assert_close(packed[:, own], alone, rtol=0, atol=1e-12)


def test_outside_a_pair_forward_it_is_plain_sdpa():
    torch.manual_seed(0)
    query, key, value = torch.randn(3, 2, 1, 6, 4).unbind(0)  # each (B=2, heads=1, T=6, D=4)
    expected, _ = sdpa_attention_forward(nn.Module(), query, key, value, None, is_causal=True)
    got, _ = pair_sdpa(nn.Module(), query, key, value, None, is_causal=True)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_the_decoder_uses_it_under_sdpa_only(tiny_model_dir, make_image, monkeypatch, attention):
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, attn_implementation=attention).eval()
    adapter = VLMAdapter.from_pretrained(tiny_model_dir)
    prompts = [adapter.encode_prompt([make_image(i, 32, 32)], "Describe.") for i in range(2)]
    chosen = [adapter.encode_response(text) for text in ("A red star.", "No")]
    rejected = [adapter.encode_response(text) for text in ("Two blue moons.", "Yes it is")]
    calls: list[int] = []

    def counting(*args, **kwargs):
        calls.append(1)
        return pair_sdpa(*args, **kwargs)

    monkeypatch.setitem(AttentionInterface._global_mapping, NAME, counting)
    with torch.no_grad():
        pairs = response_logps(model, adapter.collate_pairs(list(zip(prompts, chosen, rejected))))
        rows = response_logps(model, adapter.collate(list(zip(prompts + prompts, chosen + rejected))))
    layers = model.config.get_text_config().num_hidden_layers
    assert len(calls) == (2 * layers if attention == "sdpa" else 0)  # the pairs, and the rows packed
    assert model.config.get_text_config()._attn_implementation == attention  # restored
    assert_close(pairs.logps, rows.logps, atol=2e-6, rtol=0)


@pytest.mark.parametrize("reentrant", [False, True])
def test_gradient_checkpointing_runs_pair_attention_with_the_same_gradients(
    tiny_model, make_image, monkeypatch, reentrant
):
    """Checkpointed layers are recomputed in backward, after the pair forward has ended; they find
    the pair lengths by their mask and run `pair_sdpa` again, and the gradients are those of the
    uncheckpointed forward."""
    model_dir = tiny_model("llava")
    adapter = VLMAdapter.from_pretrained(model_dir)
    prompts = [adapter.encode_prompt([make_image(i, 32, 32)], "Describe.") for i in range(2)]
    pairs = adapter.collate_pairs(
        list(zip(prompts, [adapter.encode_response("A red star.")] * 2, [adapter.encode_response("No")] * 2))
    )
    split_calls: list[int] = []

    def counting(module, query, key, value, attention_mask, **kwargs):
        split_calls.append(forward_for(attention_mask) is not None)
        return pair_sdpa(module, query, key, value, attention_mask, **kwargs)

    monkeypatch.setitem(AttentionInterface._global_mapping, NAME, counting)

    def grads(checkpointing: bool) -> dict[str, torch.Tensor]:
        model = AutoModelForImageTextToText.from_pretrained(model_dir).train()
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": reentrant})
        if reentrant:
            model.enable_input_require_grads()
        split_calls.clear()
        response_logps(model, pairs).logps.sum().backward()
        return {name: p.grad for name, p in model.named_parameters() if p.grad is not None}

    plain = grads(False)
    layers = AutoModelForImageTextToText.from_pretrained(model_dir).config.get_text_config().num_hidden_layers
    assert split_calls == [True] * layers
    checkpointed = grads(True)
    assert split_calls == [True] * (2 * layers)  # forward and recomputation, both split per row
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        assert_close(checkpointed[name], plain[name], atol=1e-5, rtol=1e-4, msg=name)


def test_checkpointed_lora_policy_then_its_reference_without_grad(tiny_model, make_image):
    """The LoRA reference (adapter disabled, no gradients) runs between the policy's forward and its
    backward; the recomputation must still run the split attention the forward ran."""
    from peft import LoraConfig, get_peft_model

    from chip.modeling import adapter_disabled

    model_dir = tiny_model("llava")
    adapter = VLMAdapter.from_pretrained(model_dir)
    prompts = [adapter.encode_prompt([make_image(i, 32, 32)], "Describe.") for i in range(2)]
    pairs = adapter.collate_pairs(
        list(zip(prompts, [adapter.encode_response("A red star.")] * 2, [adapter.encode_response("No")] * 2))
    )
    model = AutoModelForImageTextToText.from_pretrained(model_dir).train()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.0))
    policy = response_logps(model, pairs).logps
    with torch.no_grad(), adapter_disabled(model):
        reference = response_logps(model, pairs).logps
    (policy - reference).sum().backward()  # raised CheckpointError when the reference reset the switch
    assert any(p.grad is not None for n, p in model.named_parameters() if "lora_" in n)


def _emulated_varlen(calls: list[int]):
    """torch's ``varlen_attn`` (CUDA only) as this CPU test can run it: each sequence between two
    cumulative bounds attends causally within itself, through plain SDPA."""

    def varlen_attn(query, key, value, cu_q, cu_k, max_q, max_k, *, scale=None, window_size, enable_gqa):
        assert window_size == (-1, 0) and torch.equal(cu_q, cu_k) and cu_q.dtype == torch.int32
        assert query.shape[0] == int(cu_q[-1]) and max_q == max_k == int(cu_q.diff().max())
        calls.append(len(cu_q) - 1)
        outputs = []
        for first, last in zip(cu_q[:-1].tolist(), cu_q[1:].tolist()):
            q, k, v = (x[first:last].transpose(0, 1)[None] for x in (query, key, value))  # (1, h, t, D)
            out = torch.nn.functional.scaled_dot_product_attention(
                q, k, v, is_causal=True, scale=scale, enable_gqa=enable_gqa
            )
            outputs.append(out[0].transpose(0, 1))  # (t, h, D)
        return torch.cat(outputs)

    return varlen_attn


@pytest.mark.parametrize("packed", [True, False], ids=["packed", "pair rows"])
def test_the_variable_length_kernel_path_equals_the_per_segment_calls(monkeypatch, packed):
    """On CUDA the causal parts of all segments go to one variable-length flash call; its
    bookkeeping (gathering, bounds, scattering back, the rejected tokens beside it) gives the
    per-segment path's output, padding zeros included, with grouped-query heads."""
    import chip.modeling.pair_attention as pair_attention

    lengths = [(5, 3, 4), (7, 2, 1), (4, 0, 0), (2, 1, 1)]
    if packed:
        starts = torch.tensor([0, *map(sum, lengths)]).cumsum(0).tolist()
        rows = [[(start, *row) for start, row in zip(starts, lengths)]]
    else:
        rows = [[(0, *row)] for row in lengths]
    seq_len = sum(map(sum, lengths)) if packed else max(map(sum, lengths)) + 2  # + 2: padding
    torch.manual_seed(0)
    query = torch.randn(len(rows), 4, seq_len, 8, dtype=torch.float64)
    key, value = torch.randn(2, len(rows), 2, seq_len, 8, dtype=torch.float64)
    module = _GroupedQueryAttention()
    with active_segments(rows):
        expected, _ = pair_sdpa(module, query, key, value, None)
        calls: list[int] = []
        monkeypatch.setattr(pair_attention, "_VARLEN_ATTN", _emulated_varlen(calls))
        monkeypatch.setattr(pair_attention, "_varlen_usable", lambda query, dropout: True)
        got, _ = pair_sdpa(module, query, key, value, None)
    assert calls == [len(lengths)]  # one call for every segment's causal part
    assert_close(got, expected, rtol=0, atol=1e-12)


def test_a_packed_forward_through_the_variable_length_path(tiny_model_dir, make_image, monkeypatch):
    """A whole packed pair forward and backward with the variable-length path: same log-probs and
    gradients as the per-segment calls, one kernel call per decoder layer."""
    import chip.modeling.pair_attention as pair_attention

    adapter = VLMAdapter.from_pretrained(tiny_model_dir)
    prompts = [adapter.encode_prompt([make_image(i, 32, 32)], "Describe.") for i in range(2)]
    pairs = adapter.collate_pairs(
        list(
            zip(
                prompts,
                [adapter.encode_response(t) for t in ("A red star.", "No")],
                [adapter.encode_response(t) for t in ("Two blue moons.", "Yes it is")],
            )
        )
    )

    def run() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir).train()
        logps = response_logps(model, pairs).logps
        logps.sum().backward()
        return logps.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}

    expected_logps, expected_grads = run()
    calls: list[int] = []
    monkeypatch.setattr(pair_attention, "_VARLEN_ATTN", _emulated_varlen(calls))
    monkeypatch.setattr(pair_attention, "_varlen_usable", lambda query, dropout: True)
    logps, grads = run()
    layers = (
        AutoModelForImageTextToText.from_pretrained(tiny_model_dir).config.get_text_config().num_hidden_layers
    )
    assert calls == [2] * layers
    assert_close(logps, expected_logps, atol=1e-6, rtol=0)
    assert grads.keys() == expected_grads.keys()
    for name, grad in grads.items():
        assert_close(grad, expected_grads[name], atol=1e-6, rtol=1e-5, msg=name)
