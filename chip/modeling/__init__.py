"""Model access layer: the one place that knows how each vision-language model family works.

- :class:`VLMAdapter` formats, encodes and batches prompts and responses (``adapter.py``),
- :class:`ResponseScorer` / :func:`response_logps` score response tokens without full-sequence
  logits (``logps.py``), laid out as :class:`LayoutSettings` ask (``layout.py``), a chosen/rejected
  pair in one sequence that holds its image and prompt once (``pairs.py``),
- :func:`adapter_disabled` runs a PEFT model as its own reference model (``wrappers.py``),
- the per-family quirk table (``quirks.py``) and processor loading without torchvision
  (``processors.py``).
"""

from chip.modeling.adapter import PromptInputs, VLMAdapter
from chip.modeling.errors import ModelError
from chip.modeling.layout import LayoutSettings
from chip.modeling.logps import ResponseScorer, response_logps
from chip.modeling.pairs import is_pair_batch, scored_lengths
from chip.modeling.processors import load_processor
from chip.modeling.quirks import QUIRKS, ModelQuirks, quirks_for
from chip.modeling.routes import can_pack, can_share_prefix
from chip.modeling.scores import ResponseScores
from chip.modeling.wrappers import adapter_disabled, core_model, has_adapter

__all__ = [
    "QUIRKS",
    "LayoutSettings",
    "ModelError",
    "ModelQuirks",
    "PromptInputs",
    "ResponseScorer",
    "ResponseScores",
    "VLMAdapter",
    "adapter_disabled",
    "can_pack",
    "can_share_prefix",
    "core_model",
    "has_adapter",
    "is_pair_batch",
    "load_processor",
    "quirks_for",
    "response_logps",
    "scored_lengths",
]
