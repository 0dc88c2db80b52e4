"""What the language decoder runs in a step: positions, and how many of them hold real tokens.

A batch of examples of different lengths is padded to its longest row, and every padding position
goes through every decoder layer like a real token. How much that costs depends on the layout:
TRL pads ``2B`` rows ``[prompt, response]`` to the longest, chip pads ``B`` rows ``[prompt,
chosen, rejected]``. Rather than recomputing either layout from the collated batch,
:class:`DecoderCount` watches the decoder itself (the text model inside the vision-language
model) with a forward pre-hook and counts, for every call, the positions it is given and the real
tokens among them, read from what the call carries:

- a 2D attention mask ``(B, T)``: its ones (TRL, chip's two-rows-per-pair fallback);
- a 4D mask ``(B, 1, T, T)``, bool (True = attend) or additive (0 = attend): the positions that
  may attend to themselves — a real token always sees itself, a padding key is hidden from every
  query (chip's shared-prefix pair mask, `chip.modeling.pairs.pair_attention_mask`);
- no mask but varlen lengths (``cu_seq_lens_q``, how transformers passes sequences packed into one
  row to flash attention): the last cumulative length — positions after it are padding;
- neither: every position is real (one unpadded row).

So the count stays right whatever layout a trainer picks, packed rows included. Both counts
cover every decoder call of the step: the policy's, and a live reference's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass
class DecoderTotals:
    """Positions the decoder ran and real tokens among them, summed over the calls of a step."""

    calls: int = 0
    positions: int = 0
    real: int = 0

    @property
    def padding_fraction(self) -> float:
        """Share of the positions run that were padding: ``1 - real / positions``."""
        return 1.0 - self.real / self.positions if self.positions else 0.0


def decoder_of(model: nn.Module) -> nn.Module:
    """The language decoder inside a vision-language model (``LlamaModel``, ``Qwen2VLTextModel``, ...)."""
    return model.get_decoder()


def real_positions(inputs: torch.Tensor, attention_mask: torch.Tensor | None, **kwargs: Any) -> torch.Tensor:
    """Real tokens among the ``(B, T)`` positions of one decoder call, as a 0-dim tensor (no device sync).

    ``inputs`` is the call's ``input_ids (B, T)`` or ``inputs_embeds (B, T, H)``; see the module
    docstring for how each form of ``attention_mask`` is read.
    """
    rows, length = inputs.shape[:2]
    if attention_mask is None:
        cumulative = kwargs.get("cu_seq_lens_q")
        if cumulative is not None:
            return cumulative[-1].clone()
        return torch.tensor(rows * length)
    if attention_mask.dim() == 2:  # (B, T), 1 = real token
        return attention_mask.bool().sum()
    if attention_mask.dim() == 4:  # (B, 1 or heads, T, T)
        diagonal = attention_mask[:, 0].diagonal(dim1=-2, dim2=-1)  # (B, T) may position t attend to itself
        allowed = diagonal if diagonal.dtype == torch.bool else diagonal == 0
        return allowed.sum()
    raise ValueError(f"cannot read real tokens from an attention mask of shape {tuple(attention_mask.shape)}")


class DecoderCount:
    """Within ``with``, counts every call of the given decoders into :attr:`totals`.

    Real-token counts stay tensors until the block ends, so the hook never waits for the device.
    """

    def __init__(self, decoders: Sequence[nn.Module]):
        self.decoders = list(decoders)
        self.totals = DecoderTotals()
        self._handles: list[Any] = []
        self._real: list[torch.Tensor] = []

    def _hook(self, module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        if len(args) > 1:  # the mask would be among them, unseen
            raise ValueError("DecoderCount reads the decoder's inputs as keyword arguments only")
        inputs = kwargs.get("inputs_embeds")
        if inputs is None:
            inputs = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
        extra = {key: value for key, value in kwargs.items() if key == "cu_seq_lens_q"}
        self._real.append(real_positions(inputs, kwargs.get("attention_mask"), **extra))
        self.totals.calls += 1
        self.totals.positions += inputs.shape[0] * inputs.shape[1]

    def __enter__(self) -> DecoderCount:
        self.totals, self._real = DecoderTotals(), []
        self._handles = [
            decoder.register_forward_pre_hook(self._hook, with_kwargs=True) for decoder in self.decoders
        ]
        return self

    def __exit__(self, *exc_info: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.totals.real = int(sum(int(real) for real in self._real))
        self._real = []
