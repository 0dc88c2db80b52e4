"""Images encoded once for the two rows of a pair: the family's own image features, fed to both rows."""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from chip.modeling.batch import for_both_rows
from chip.modeling.quirks import quirks_for
from chip.modeling.wrappers import core_model


def images_once_allowed(model: nn.Module) -> bool:
    """Whether ``model``'s family may take each example's image features once for both rows of a pair:
    marked ``images_once`` in the quirk table, with ``get_image_features`` and ``mm_encoder_outputs``."""
    core = core_model(model)
    quirks = quirks_for(core.config)
    owner = getattr(core, quirks.trunk, None) if quirks.trunk else None
    return (
        quirks.images_once
        and callable(getattr(owner, "get_image_features", None))
        and "mm_encoder_outputs" in inspect.signature(owner.forward).parameters
    )


def shared_image_inputs(core: PreTrainedModel, images: dict[str, torch.Tensor]) -> dict[str, Any] | None:
    """Image inputs for the 2B unpacked rows with each example's vision features computed once.

    The features go in through ``mm_encoder_outputs`` (transformers 5's input for precomputed
    encoder outputs) in the form ``get_image_features`` returns them, with every per-image or
    per-token field repeated for the second B rows; the other image inputs (grids, sizes) are
    repeated so the model's positions and checks see 2B rows. ``None`` when the family's model
    takes no precomputed features.
    """
    quirks = quirks_for(core.config)
    owner = getattr(core, quirks.trunk, None) if quirks.trunk else None
    get_features = getattr(owner, "get_image_features", None)
    if get_features is None:
        return None
    accepted = inspect.signature(get_features).parameters
    features = get_features(**{k: v for k, v in images.items() if k in accepted}, return_dict=True)
    doubled = type(features)(**{name: _twice(name, value) for name, value in features.items()})
    out: dict[str, Any] = {
        key: for_both_rows(value) for key, value in images.items() if key != quirks.pixel_key
    }
    out["mm_encoder_outputs"] = {"image": doubled}
    return out


# Encoder output fields that hold one entry per vision layer (each entry per image or per token).
_PER_LAYER_FIELDS = ("hidden_states", "attentions", "deepstack_features")


def _twice(name: str, value: Any) -> Any:
    """An encoder output field for the images of the 2B scored rows: per image or token, repeated."""
    if isinstance(value, (tuple, list)) and name in _PER_LAYER_FIELDS:
        return type(value)(_twice("", item) for item in value)
    if isinstance(value, (torch.Tensor, tuple, list)):
        return for_both_rows(value)  # (2n, ...)
    return value
