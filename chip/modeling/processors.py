"""Processor loading, including image-only Qwen-VL processors for machines without torchvision.

In transformers 5.x the Qwen2-VL and Qwen2.5-VL processors always carry a video processor, and
every video processor requires torchvision, so without it ``AutoProcessor.from_pretrained``
fails on these families even though chip never feeds videos. The classes here are the stock
processors minus the video part: same tokenizer, same image processor, same image-token
expansion and ``mm_token_type_ids``. They save with their own ``processor_class`` name and are
registered with ``AutoProcessor``, so a folder saved with one loads back through
``AutoProcessor.from_pretrained`` once :mod:`chip.modeling` is imported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import AutoConfig, AutoProcessor, ProcessorMixin
from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor
from transformers.models.qwen2_vl.processing_qwen2_vl import Qwen2VLProcessor
from transformers.utils import is_torchvision_available

from chip.modeling.errors import ModelError, one_line
from chip.modeling.quirks import quirks_for


class Qwen2VLImageOnlyProcessor(Qwen2VLProcessor):
    """Qwen2-VL processor without the video processor (images and text only).

    The sub-processors are read from ``__init__``'s signature, so leaving ``video_processor`` out of
    it is what removes the video part from construction, saving and loading. A ``video_processor``
    entry in a stock checkpoint's ``processor_config.json`` is ignored.
    """

    def __init__(
        self, image_processor: Any = None, tokenizer: Any = None, chat_template: Any = None, **kwargs: Any
    ):
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template)


class Qwen2_5_VLImageOnlyProcessor(Qwen2_5_VLProcessor):
    """Qwen2.5-VL processor without the video processor; see :class:`Qwen2VLImageOnlyProcessor`."""

    def __init__(
        self, image_processor: Any = None, tokenizer: Any = None, chat_template: Any = None, **kwargs: Any
    ):
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template)


IMAGE_ONLY_PROCESSORS: dict[str, type[ProcessorMixin]] = {
    cls.__name__: cls for cls in (Qwen2VLImageOnlyProcessor, Qwen2_5_VLImageOnlyProcessor)
}

# AutoProcessor resolves a saved `processor_class` name through its registered classes. A string
# key registers the classes by name only, leaving the config -> processor mapping of the stock
# families untouched.
for _name, _cls in IMAGE_ONLY_PROCESSORS.items():
    AutoProcessor.register(f"chip:{_name}", _cls, exist_ok=True)


# Loader options that apply to the config as well; the rest of load_processor's kwargs are
# processor options, which AutoConfig would store as config attributes.
HUB_KWARGS = ("trust_remote_code", "revision", "cache_dir", "token", "local_files_only", "subfolder")


def hub_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The subset of loader ``kwargs`` that ``AutoConfig.from_pretrained`` should see."""
    return {key: kwargs[key] for key in HUB_KWARGS if key in kwargs}


def load_processor(path: str | Path, **kwargs: Any) -> ProcessorMixin:
    """Load the processor saved at ``path``, image-only when the stock one would need torchvision.

    Uses ``AutoProcessor`` except for a family whose quirks name an image-only processor on a
    machine without torchvision, where ``AutoProcessor`` cannot build the stock processor at all.
    A processor missing a package (torchvision for most video-capable families) is one
    :class:`~chip.modeling.errors.ModelError` line.
    """
    config = AutoConfig.from_pretrained(path, **hub_kwargs(kwargs))
    image_only = quirks_for(config).image_only_processor
    if image_only is not None and not is_torchvision_available():
        return IMAGE_ONLY_PROCESSORS[image_only].from_pretrained(path, **kwargs)
    try:
        return AutoProcessor.from_pretrained(path, **kwargs)
    except ImportError as error:  # a stock processor needing torchvision, num2words, ...
        raise ModelError(
            f"{path}: the {config.model_type} processor cannot be loaded here: {one_line(error)}"
        ) from error
