"""Model access layer: the one place that knows how each vision-language model family works.

- :class:`VLMAdapter` formats, encodes and batches prompts and responses (``adapter.py``),
- :func:`response_logps` scores response tokens without full-sequence logits (``logps.py``),
- :func:`adapter_disabled` runs a PEFT model as its own reference model (``logps.py``),
- the per-family quirk table (``quirks.py``) and processor loading without torchvision
  (``processors.py``).
"""

from chip.modeling.adapter import PromptInputs, VLMAdapter
from chip.modeling.logps import ResponseScores, adapter_disabled, core_model, has_adapter, response_logps
from chip.modeling.processors import load_processor
from chip.modeling.quirks import QUIRKS, ModelQuirks, quirks_for

__all__ = [
    "QUIRKS",
    "ModelQuirks",
    "PromptInputs",
    "ResponseScores",
    "VLMAdapter",
    "adapter_disabled",
    "core_model",
    "has_adapter",
    "load_processor",
    "quirks_for",
    "response_logps",
]
