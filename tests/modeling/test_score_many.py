"""`ResponseScorer.score_many`: the real pairs and the corrupted rows of a step in one packed forward.

The joint forward must give the numbers of scoring each batch alone — log-probs, logits and the
gradients they send back — and the textbook numbers (a plain full-sequence forward of each row,
``log_softmax``, the log-prob of token t read at position t − 1).
"""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close
from transformers import AutoModelForImageTextToText

from chip.modeling import ResponseScorer, VLMAdapter
from chip.modeling import logps as logps_module
from chip.modeling.wrappers import core_model


def _step_batches(model_dir, make_image):
    """A pair batch (two examples) and the rows ``[prompt under another image, chosen]`` of the same examples."""
    adapter = VLMAdapter.from_pretrained(model_dir)
    texts = ["Describe the image.", "What is at the top?"]
    prompts = [adapter.encode_prompt([make_image(i, 32, 32)], text) for i, text in enumerate(texts)]
    corrupt = [adapter.encode_prompt([make_image(i + 5, 32, 32)], text) for i, text in enumerate(texts)]
    chosen = [adapter.encode_response("A red star."), adapter.encode_response("No")]
    rejected = [adapter.encode_response("Two blue moons at the top."), adapter.encode_response("Yes it is")]
    return adapter.collate_pairs(list(zip(prompts, chosen, rejected))), adapter.collate(
        list(zip(corrupt, chosen))
    )


def _textbook_logps(model, rows):
    inputs = {key: value for key, value in rows.items() if key != "response_mask"}
    logps = torch.log_softmax(model(**inputs).logits.float(), -1)  # (B, T, V)
    per_row = []
    for row in range(len(logps)):
        positions = rows["response_mask"][row].nonzero().flatten()
        per_row.append(
            logps[row, positions - 1].gather(-1, rows["input_ids"][row, positions, None]).squeeze(-1)
        )
    return per_row


def _decoder_calls(model):
    decoder = core_model(model).model.language_model
    calls = []
    handle = decoder.register_forward_pre_hook(
        lambda m, a, k: calls.append(tuple(k["inputs_embeds"].shape[:2])), with_kwargs=True
    )
    return calls, handle


@pytest.mark.parametrize("tiny_model_dir", ["llava", "qwen2_vl"], indirect=True)
def test_joint_forward_gives_each_batch_its_own_numbers(tiny_model_dir, make_image):
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir).train()
    pairs, corrupt = _step_batches(tiny_model_dir, make_image)
    calls, handle = _decoder_calls(model)

    def scored(score):
        model.zero_grad()
        real, rows_c = score()
        weights = torch.linspace(0.5, 1.5, real.logps.numel()).view_as(real.logps)
        (weights * real.logps).sum().backward(retain_graph=True)
        (real.logits.square().mean() + rows_c.logps.sum()).backward()
        grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
        return real, rows_c, grads

    joint = scored(lambda: ResponseScorer().score_many(model, [pairs, corrupt], [True, False]))
    real_tokens = int(pairs["pair_lengths"].sum()) + int(corrupt["attention_mask"].sum())
    assert calls == [(1, real_tokens)]  # one decoder call, every real token of both batches, no padding
    calls.clear()
    scorer = ResponseScorer()
    alone = scored(lambda: (scorer(model, pairs, True), scorer(model, corrupt)))
    assert len(calls) == 2
    handle.remove()
    assert_close(joint[0].logps, alone[0].logps, rtol=0, atol=1e-5)
    assert_close(joint[0].logits, alone[0].logits, rtol=1e-5, atol=1e-5)
    assert_close(joint[1].logps, alone[1].logps, rtol=0, atol=1e-5)
    assert joint[2].keys() == alone[2].keys()
    for name, grad in joint[2].items():
        assert_close(grad, alone[2][name], rtol=1e-4, atol=1e-6, msg=name)
    with torch.no_grad():
        expected = _textbook_logps(model, corrupt)
    for row, logps in enumerate(expected):
        assert_close(joint[1].logps[row, : len(logps)], logps, rtol=0, atol=1e-5)


def test_a_failing_joint_forward_falls_back_to_one_forward_per_batch(
    tiny_model, make_image, monkeypatch, caplog
):
    """If the joint forward raises inside the model, the same call scores the batches one by one
    (same numbers), warns once, and later calls do not try again."""
    model_dir = tiny_model("llava")
    model = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
    pairs, corrupt = _step_batches(model_dir, make_image)
    scorer = ResponseScorer()
    with torch.no_grad():
        alone = [scorer(model, pairs), scorer(model, corrupt)]

        def broken(*args, **kwargs):
            raise RuntimeError("joined image inputs do not fit")

        monkeypatch.setattr(logps_module, "joint_inputs", broken)
        calls, handle = _decoder_calls(model)
        first = scorer.score_many(model, [pairs, corrupt], [False, False])
        second = scorer.score_many(model, [pairs, corrupt], [False, False])
        handle.remove()
    assert len(calls) == 4  # two batches, one forward each, in both calls
    assert caplog.text.count("scoring batches in one forward failed") == 1
    for scored in (first, second):
        for before, after in zip(alone, scored, strict=True):
            assert_close(after.logps, before.logps, rtol=0, atol=0)
