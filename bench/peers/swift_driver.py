"""ms-swift's DPO (``swift rlhf --rlhf_type dpo``) on the benchmark's model and rows, run by `bench/peers/worker.py`.

The trainer is built by ms-swift's own RLHF pipeline (``SwiftRLHF``, what the ``swift rlhf``
command runs) from the arguments below: full fine-tuning, vision tower frozen and projector
trained (as chip's and TRL's variants), sigmoid DPO with beta 0.1, the reference a frozen copy,
float32, SDPA attention, padding-free as the spec asks, no shuffling.

The tiny models' chat layout is not one ms-swift ships, so a template with the same text is
registered here, built from ms-swift's own template classes (image-token expansion and collation
as for the real families). Only where ms-swift hard-codes Qwen2-VL's vocabulary ids does the
subclass read them from the tokenizer instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# The benchmark's family -> (ms-swift model type, template class module path, class name, chat layout)
FAMILIES = {
    "llava": ("llava1_5_hf", "llava", "LlavaHfTemplate"),
    "llava_next": ("llava1_6_vicuna_hf", "llava", "Llava1_6HfTemplate"),
    "qwen2_vl": ("qwen2_vl", "qwen", "Qwen2VLTemplate"),
}


def register_template(family: str) -> str:
    """Register the tiny model's chat layout with ms-swift's template class for ``family``; returns its name."""
    import importlib

    from swift.template import TemplateMeta, register_template

    _, module, class_name = FAMILIES[family]
    base = getattr(importlib.import_module(f"swift.template.templates.{module}"), class_name)
    name = f"chip_bench_{family}"
    if family == "qwen2_vl":

        class TinyQwen2VL(base):
            """ms-swift hard-codes Qwen2-VL's vocabulary ids; the tiny tokenizer has its own."""

            @property
            def image_token_id(self) -> int:
                return self.tokenizer.convert_tokens_to_ids("<|image_pad|>")

            @property
            def video_token_id(self) -> int:
                return self.tokenizer.convert_tokens_to_ids("<|video_pad|>")

        meta = TemplateMeta(
            name,
            prefix=[],
            prompt=["<|im_start|>user\n{{QUERY}}<|im_end|>\n<|im_start|>assistant\n"],
            chat_sep=["<|im_end|>\n"],
            suffix=["<|im_end|>"],
            template_cls=TinyQwen2VL,
        )
    else:  # LLaVA-1.5/1.6 (Vicuna) layout; the tokenizer adds no BOS here, the prefix does
        meta = TemplateMeta(
            name,
            prefix=["<s>"],
            prompt=["USER: {{QUERY}} ASSISTANT:"],
            chat_sep=["</s>"],
            suffix=["</s>"],
            template_cls=base,
        )
    register_template(meta)
    return name


def write_dataset(spec: dict[str, Any]) -> Path:
    """The rows in ms-swift's DPO format: messages, ``rejected_response``, images."""
    rows = json.loads(Path(spec["rows"]).read_text())
    path = Path(spec["work_dir"]) / "swift_dpo.jsonl"
    with path.open("w") as out:
        for row in rows:
            messages = [
                {"role": "user", "content": "<image>" + row["prompt"]},
                {"role": "assistant", "content": row["chosen"]},
            ]
            out.write(
                json.dumps(
                    {"messages": messages, "rejected_response": row["rejected"], "images": [row["image"]]}
                )
                + "\n"
            )
    return path


def arguments(spec: dict[str, Any]) -> list[str]:
    model_type = FAMILIES[spec["family"]][0]
    options = {
        "model": spec["model_dir"],
        "model_type": model_type,
        "template": register_template(spec["family"]),
        "rlhf_type": "dpo",
        "loss_type": "sigmoid",
        "beta": 0.1,
        "tuner_type": "full",
        "freeze_vit": True,
        "freeze_aligner": False,
        "freeze_llm": False,
        "dataset": str(write_dataset(spec)),
        "dataset_shuffle": False,
        "split_dataset_ratio": 0,
        "max_length": 1_000_000,
        "lazy_tokenize": True,
        "per_device_train_batch_size": spec["batch_size"],
        "learning_rate": spec["learning_rate"],
        "weight_decay": 0.0,
        "torch_dtype": spec["dtype"],
        "attn_impl": "sdpa",
        "padding_free": spec["padding_free"],
        "gradient_checkpointing": False,
        "output_dir": spec["work_dir"] + "/swift-out",
        "add_version": False,
        "report_to": "none",
        "logging_steps": 1_000_000,
        "save_strategy": "no",
        "dataloader_num_workers": 0,
        "seed": 0,
        "load_from_cache_file": False,
    }
    argv: list[str] = []
    for key, value in options.items():
        argv += [f"--{key}", str(value).lower() if isinstance(value, bool) else str(value)]
    return argv


def run(spec: dict[str, Any]) -> None:
    from swift.pipelines.train.rlhf import SwiftRLHF

    SwiftRLHF(arguments(spec)).main()


def logps(trainer: Any, batch: dict[str, Any]) -> tuple[list[float], list[float]]:
    """ms-swift's own summed log-probs of each chosen and rejected response (its ``concatenated_forward``)."""
    inputs = trainer._prepare_inputs(dict(batch))
    trainer.model.eval()
    with trainer.template.forward_context(trainer.model, inputs):
        output = trainer.concatenated_forward(trainer.model, inputs)
    trainer.model.train()
    return output["chosen_logps"].tolist(), output["rejected_logps"].tolist()
