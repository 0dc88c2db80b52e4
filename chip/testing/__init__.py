"""Test helpers shipped with chip: tiny models of each supported family, built offline."""

from chip.testing.tiny import FAMILIES, TinySize, build_tiny_model, tiny_config

__all__ = ["FAMILIES", "TinySize", "build_tiny_model", "tiny_config"]
