"""LLaMA-Factory's DPO (``llamafactory-cli train`` with ``stage: dpo``) on the benchmark's model and rows.

Run by `bench/peers/worker.py`. The trainer is built by LLaMA-Factory's own ``run_exp`` (what
``llamafactory-cli train CONFIG`` calls) from the configuration below: full fine-tuning, vision
tower frozen and projector trained (as chip's and TRL's variants), sigmoid DPO with beta 0.1, the
reference a frozen copy, float32, SDPA attention, no length cut-off, images kept at the size
they come in (LLaMA-Factory downsizes anything over 768 x 768 pixels by default, which would change
the image-token counts against the other variants). LLaMA-Factory has no padding-free DPO: its
collator pads each batch's rows to the longest, rounded up to a multiple of 8.

The tiny models' chat layout is not one LLaMA-Factory ships, so a template with the same text is
registered here, with LLaMA-Factory's own multimodal plugin of the family (image-token expansion
as for the real models).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.peers.compat import checkpoint_for

PLUGINS = {  # the benchmark's family -> LLaMA-Factory's multimodal plugin and its image token
    "llava": ("llava", "<image>"),
    "llava_next": ("llava_next", "<image>"),
    "qwen2_vl": ("qwen2_vl", "<|image_pad|>"),
}


def register_template(family: str) -> str:
    """Register the tiny model's chat layout with LLaMA-Factory's plugin for ``family``; returns its name."""
    from llamafactory.data.formatter import EmptyFormatter, StringFormatter
    from llamafactory.data.mm_plugin import get_mm_plugin
    from llamafactory.data.template import register_template

    name = f"chip_bench_{family}"
    plugin, image_token = PLUGINS[family]
    options: dict[str, Any] = {"mm_plugin": get_mm_plugin(name=plugin, image_token=image_token)}
    if family == "qwen2_vl":
        options["mm_plugin"] = get_mm_plugin(
            name=plugin, image_token=image_token, video_token="<|video_pad|>"
        )
        options.update(
            format_user=StringFormatter(
                slots=["<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n"]
            ),
            format_assistant=StringFormatter(slots=["{{content}}<|im_end|>"]),
        )
    else:  # LLaVA-1.5/1.6 (Vicuna) layout, BOS first
        options.update(
            format_user=StringFormatter(slots=["USER: {{content}} ASSISTANT:"]),
            format_prefix=EmptyFormatter(slots=[{"bos_token"}]),
        )
    register_template(name, **options)
    return name


def write_dataset(spec: dict[str, Any]) -> Path:
    """The rows as a ShareGPT-format ranking dataset, with its ``dataset_info.json``."""
    rows = json.loads(Path(spec["rows"]).read_text())
    folder = Path(spec["work_dir"]) / "lf_data"
    folder.mkdir(exist_ok=True)
    image = "<image>" if spec["family"] == "qwen2_vl" else "<image>\n"  # the tiny chat layouts
    records = [
        {
            "conversations": [{"from": "human", "value": image + row["prompt"]}],
            "chosen": {"from": "gpt", "value": row["chosen"]},
            "rejected": {"from": "gpt", "value": row["rejected"]},
            "images": [row["image"]],
        }
        for row in rows
    ]
    (folder / "bench.json").write_text(json.dumps(records))
    columns = {"messages": "conversations", "chosen": "chosen", "rejected": "rejected", "images": "images"}
    info = {
        "chip_bench": {
            "file_name": "bench.json",
            "formatting": "sharegpt",
            "ranking": True,
            "columns": columns,
        }
    }
    (folder / "dataset_info.json").write_text(json.dumps(info))
    return folder


def config(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "model_name_or_path": checkpoint_for(spec["model_dir"], spec["work_dir"]),
        "stage": "dpo",
        "do_train": True,
        "finetuning_type": "full",
        "freeze_vision_tower": True,
        "freeze_multi_modal_projector": False,
        "freeze_language_model": False,
        "pref_beta": 0.1,
        "pref_loss": "sigmoid",
        "pref_ftx": 0.0,
        "dataset": "chip_bench",
        "dataset_dir": str(write_dataset(spec)),
        "template": register_template(spec["family"]),
        "cutoff_len": 1_000_000,
        "image_max_pixels": 10**9,
        "image_min_pixels": 1,
        "overwrite_cache": True,
        "per_device_train_batch_size": spec["batch_size"],
        "learning_rate": spec["learning_rate"],
        "weight_decay": 0.0,
        "bf16": False,
        "fp16": False,
        "pure_bf16": False,
        "flash_attn": "sdpa",
        "output_dir": spec["work_dir"] + "/lf-out",
        "report_to": "none",
        "save_strategy": "no",
        "logging_steps": 1_000_000,
        "dataloader_num_workers": 0,
        "seed": 0,
        "gradient_checkpointing": False,
        "disable_gradient_checkpointing": True,
        "plot_loss": False,
    }


def run(spec: dict[str, Any]) -> None:
    from llamafactory.train.tuner import run_exp

    run_exp(config(spec))


def logps(trainer: Any, batch: dict[str, Any]) -> tuple[list[float], list[float]]:
    """LLaMA-Factory's own summed log-probs of each chosen and rejected response (its ``concatenated_forward``)."""
    inputs = trainer._prepare_inputs(dict(batch))
    trainer.model.eval()
    output = trainer.concatenated_forward(trainer.model, inputs)
    trainer.model.train()
    return output["chosen_logps"].tolist(), output["rejected_logps"].tolist()
