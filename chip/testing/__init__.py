"""Test helpers shipped with chip: tiny models of each supported family, built offline."""

from chip.testing.families import NEEDS_TORCHVISION, missing_packages
from chip.testing.sizes import TinySize
from chip.testing.tiny import ALL_FAMILIES, FAMILIES, build_tiny_model, tiny_config

__all__ = [
    "ALL_FAMILIES",
    "FAMILIES",
    "NEEDS_TORCHVISION",
    "TinySize",
    "build_tiny_model",
    "missing_packages",
    "tiny_config",
]
