"""Tiny models of the other families of transformers' image-text-to-text mapping: stock configs, shrunk.

Each family of :data:`chip.testing.families.FAMILIES` is built from its *default* config
(``AutoConfig.for_model``) with every width, depth and vocabulary shrunk (:func:`shrink`) and the
vision geometry (image size, patch size, image tokens per image) kept or lowered just enough to
stay cheap, so the family's stock processor and its model agree on the number of image tokens the
same way a real checkpoint's do. The processor is the family's stock class around a byte-level
tokenizer holding the family's real special tokens; the chat template is a plain
``<|role|> … eos`` layout that writes each image as the family's placeholder.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from transformers import AutoConfig, PretrainedConfig, PreTrainedTokenizerFast, ProcessorMixin

from chip.testing.families import FAMILIES
from chip.testing.sizes import TinyFamily, TinySize, vocab_size

# Shrunk values of the size fields every family's text and vision configs name the same way.
TEXT_SIZES: dict[str, int] = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    global_head_dim=16,
    moe_intermediate_size=32,
    shared_expert_intermediate_size=32,
    num_experts=4,
    num_local_experts=4,
    num_experts_per_tok=2,
    n_routed_experts=4,
    n_shared_experts=1,
    max_position_embeddings=4096,
    hidden_size_per_layer_input=8,
    linear_num_value_heads=4,
    linear_num_key_heads=2,
    linear_key_head_dim=16,
    linear_value_head_dim=16,
    first_k_dense_replace=1,
    num_kv_shared_layers=0,
    kv_lora_rank=16,
    q_lora_rank=16,
    qk_rope_head_dim=8,
    qk_nope_head_dim=8,
    v_head_dim=16,
)
VISION_SIZES: dict[str, int] = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_heads=2,
    head_dim=16,
    depth=2,
    embed_dim=32,
    num_key_value_heads=2,
    projection_dim=64,
    out_hidden_size=64,
    vision_output_dim=64,
    num_global_layers=1,
)


def shrink(config: dict[str, Any], sizes: dict[str, int]) -> dict[str, Any]:
    """``config`` (a config dict) with every size field that ``sizes`` names set to the small value.

    ``layer_types`` keeps each kind of layer the family mixes (sliding/full attention, linear
    attention), cycled over the fewer layers and ending with the family's last kind, so the tiny
    model still exercises all of them. Fields derived from the layer layout are dropped, so the
    config class derives them again.
    """
    small = {k: v for k, v in config.items() if k not in DERIVED}
    for name, value in sizes.items():
        if isinstance(small.get(name), int) and not isinstance(small.get(name), bool):
            small[name] = value
    layer_types = small.get("layer_types")
    if layer_types and "num_hidden_layers" in small:
        kinds = list(dict.fromkeys(reversed(layer_types)))
        small["layer_types"] = [kinds[i % len(kinds)] for i in range(small["num_hidden_layers"])][::-1]
    return small


# Top-level size fields of composite configs (PaliGemma's projection width).
TOP_SIZES = {"projection_dim": 64, "hidden_size": 64}

# Config fields the config class derives from others (Gemma-4's per-layer overrides) or writes itself.
DERIVED = ("per_layer_config", "transformers_version", "architectures", "model_type", "dtype")


def _template(image_text: str, eos: str, bos: str = "") -> str:
    content = (
        "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
        "{% for block in message['content'] %}{% if block['type'] == 'image' %}" + image_text + "{% elif "
        "block['type'] == 'text' %}{{ block['text'] }}{% endif %}{% endfor %}{% endif %}"
    )
    return (
        bos + "{% for message in messages %}<|{{ message['role'] }}|>\n" + content + eos + "\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
    )


def build_shrunk(
    model_type: str, size: TinySize, tok: PreTrainedTokenizerFast
) -> tuple[ProcessorMixin, PretrainedConfig]:
    """The stock processor and a shrunk config of ``model_type`` (a key of `FAMILIES`); of ``size``
    only ``vocab_size`` counts."""
    spec = FAMILIES[model_type]
    template = _template(spec.image_text, spec.tokens.eos, "{{ bos_token }}" if spec.template_bos else "")
    processor = spec.processor(tok, template)
    defaults = AutoConfig.for_model(model_type).to_dict()
    text = {
        **shrink(defaults["text_config"], TEXT_SIZES),
        **spec.text,
        "vocab_size": vocab_size(size, tok),
        "pad_token_id": tok.pad_token_id,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
    }
    if "vocab_size_per_layer_input" in text:  # Gemma-4's per-layer embeddings
        text["vocab_size_per_layer_input"] = text["vocab_size"]
    parts: dict[str, Any] = {"text_config": text}
    vision = defaults.get("vision_config") or (
        AutoConfig.for_model(spec.vision_type).to_dict() if spec.vision_type else None
    )
    if vision is not None:
        parts["vision_config"] = {**shrink(vision, VISION_SIZES), **spec.vision}
    top = {
        k: v
        for k, v in shrink(defaults, TOP_SIZES).items()
        if not isinstance(v, dict) or k == "perceiver_config"
    }
    ids = {name: tok.convert_tokens_to_ids(token) for name, token in spec.token_ids.items()}
    config = AutoConfig.for_model(model_type, **{**top, **parts, **spec.config, **ids})
    # A save/load round trip re-derives what constructors copy between sub-configs (projector widths).
    return processor, type(config).from_dict(config.to_dict())


SHRUNK: dict[str, TinyFamily] = {
    name: TinyFamily(spec.tokens, partial(build_shrunk, name), sized=False) for name, spec in FAMILIES.items()
}
