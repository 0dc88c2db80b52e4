"""The shared-prefix layout of `chip.modeling.pairs`: hand-checked masks and indices, and unpacking.

A pair batch ``[prompt, chosen, rejected]`` must mean exactly what the two rows ``[prompt, chosen]``
and ``[prompt, rejected]`` mean; the model-level equivalence is in ``test_equivalence.py``.
"""

from __future__ import annotations

import torch

from chip.modeling import VLMAdapter, scored_lengths
from chip.modeling.pairs import (
    image_inputs,
    pair_attention_mask,
    pair_branches,
    pair_text_positions,
    pair_token_index,
    unpack_pairs,
)

# One row: prompt of 3 tokens, chosen of 2, rejected of 1, then 1 padding position (T = 7).
LENGTHS = torch.tensor([[3, 2, 1]])


def test_branches_and_positions_by_hand():
    """Positions restart after the prompt for the rejected token: p0 p1 p2 c0 c1 r0 pad -> 0 1 2 3 4 3 0."""
    assert pair_branches(LENGTHS, 7).tolist() == [[0, 0, 0, 1, 1, 2, -1]]
    assert pair_text_positions(LENGTHS, 7).tolist() == [[0, 1, 2, 3, 4, 3, 0]]


def test_block_mask_by_hand():
    """Row i lists the keys query i sees: causal, minus chosen keys for the rejected query, minus padding.

    p0: p0 | p1: p0 p1 | p2: p0-p2 | c0: p0-p2 c0 | c1: p0-p2 c0 c1 | r0: p0-p2 r0 (not c0, c1) |
    pad: every earlier real token (never an empty softmax row).
    """
    allowed = pair_attention_mask(LENGTHS, 7, torch.bool)[0, 0].int().tolist()
    assert allowed == [
        [1, 0, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0, 0],
        [1, 1, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 1, 0, 0],
        [1, 1, 1, 0, 0, 1, 0],
        [1, 1, 1, 1, 1, 1, 0],
    ]
    additive = pair_attention_mask(LENGTHS, 7, torch.float32)[0, 0]
    assert torch.equal(additive == 0, torch.tensor(allowed, dtype=torch.bool))
    assert additive.min() == torch.finfo(torch.float32).min


def test_token_index_by_hand():
    """Chosen tokens sit at 3, 4 (predicted from 2, 3); the rejected token at 5 is predicted from 2."""
    positions, predicting, mask = pair_token_index(LENGTHS)
    assert positions.tolist() == [[[3, 4], [5, 0]]]
    assert predicting.tolist() == [[[2, 3], [2, 0]]]
    assert mask.tolist() == [[[True, True], [True, False]]]


def _rows(adapter: VLMAdapter, make_image):
    prompts = [
        adapter.encode_prompt([make_image(0, 32, 32)], "Describe the image."),
        adapter.encode_prompt([make_image(1, 64, 24)], "What is at the top?"),
    ]
    chosen = [adapter.encode_response("A red star."), adapter.encode_response("No")]
    rejected = [adapter.encode_response("Two blue moons at the top."), adapter.encode_response("Yes it is")]
    return prompts, chosen, rejected


def test_unpacking_gives_the_two_row_batch_of_collate(tiny_model_dir, make_image):
    """Unpacked pairs equal `collate` of [prompt, chosen] rows then [prompt, rejected] rows, key by key."""
    adapter = VLMAdapter.from_pretrained(tiny_model_dir)
    prompts, chosen, rejected = _rows(adapter, make_image)
    for max_length in (None, len(max(prompts, key=len)) + 3):
        pairs = adapter.collate_pairs(list(zip(prompts, chosen, rejected)), max_length=max_length)
        rows = adapter.collate(list(zip(prompts + prompts, chosen + rejected)), max_length=max_length)
        unpacked = unpack_pairs(pairs)
        assert scored_lengths(pairs) == scored_lengths(rows) == unpacked["response_mask"].sum(-1).tolist()
        for key, value in unpacked.items():
            if key == "input_ids":  # padding ids differ on purpose; the attention mask hides them
                value, expected = value * rows["attention_mask"], rows[key] * rows["attention_mask"]
            else:
                expected = rows[key]
            assert torch.equal(value, expected), key
        images = image_inputs(pairs)
        for key, value in image_inputs(rows).items():
            assert torch.equal(torch.cat([images[key], images[key]]), value), key
