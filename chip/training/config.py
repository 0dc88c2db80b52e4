"""`ChipConfig`: every `transformers.TrainingArguments` field plus CHiP's model, data and loss fields.

Used by `chip train` through `HfArgumentParser`, so a YAML file and `--field value` overrides
both work, and Accelerate / DeepSpeed / FSDP options come from `TrainingArguments` unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from transformers import TrainingArguments

from chip.corruption import CorruptionKind
from chip.errors import ConfigError, check_choices
from chip.losses import ChipLossConfig
from chip.training.reference import REFERENCES, ReferenceMode


@dataclass
class ChipConfig(TrainingArguments, ChipLossConfig):
    """Training arguments for CHiP preference optimisation (and DPO and every ablation).

    The loss settings are `ChipLossConfig`'s fields, inherited (declared and validated there once);
    `loss_config` hands them to `chip.losses.chip_loss` as a plain `ChipLossConfig`.
    """

    # ---- model -------------------------------------------------------------------------------
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Path or hub id of the vision-language model to train."}
    )
    trust_remote_code: bool = field(
        default=False,
        metadata={"help": "Allow custom modelling code from the checkpoint (off unless asked)."},
    )
    model_dtype: str = field(
        default="auto",
        metadata={
            "help": "Weights dtype: auto (bf16 when --bf16, fp16 when --fp16, else float32), float32, bfloat16, float16."
        },
    )
    freeze_vision_tower: bool = field(
        default=True,
        metadata={"help": "Keep the vision encoder frozen (the authors' recipe trains LLM + projector)."},
    )

    # ---- PEFT --------------------------------------------------------------------------------
    use_peft: bool = field(
        default=False, metadata={"help": "Train a LoRA adapter instead of the full model."}
    )
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator (scale = alpha / r)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input."})
    lora_target_modules: list[str] | None = field(
        default=None,
        metadata={"help": "Module names to adapt; default: every linear layer of the language model."},
    )

    # ---- data --------------------------------------------------------------------------------
    dataset: str | None = field(
        default=None, metadata={"help": "Preference data: a .jsonl, a .parquet or a `datasets` folder."}
    )
    image_root: str | None = field(
        default=None,
        metadata={"help": "Folder image paths are relative to (default: the data file's folder)."},
    )
    max_length: int = field(
        default=2048, metadata={"help": "Longest prompt + response in tokens; only response tokens are cut."}
    )
    on_bad_row: Literal["error", "skip"] = field(
        default="error",
        metadata={"help": "Refuse a dataset with bad rows, or skip them and report the count."},
    )
    allow_outside_root: bool = field(
        default=False, metadata={"help": "Allow image paths that escape image_root (../, absolute paths)."}
    )

    # ---- CHiP loss: the fields of `chip.losses.ChipLossConfig` (symbols of METHOD.md), inherited ----
    segment_min_match: int = field(
        default=3,
        metadata={"help": "Shortest matching token run that anchors the chosen/rejected alignment."},
    )
    mark_insertions: bool = field(
        default=False, metadata={"help": "Also up-weight pure insertions/deletions as changed segments."}
    )

    # ---- corrupted image -----------------------------------------------------------------------
    corruption: CorruptionKind = field(
        default="diffusion", metadata={"help": "The corrupted image ṽ of the visual preference."}
    )
    noise_step: int = field(default=500, metadata={"help": "Diffusion step k of the noised image (0..999)."})

    # ---- reference model -----------------------------------------------------------------------
    reference: ReferenceMode = field(
        default="model",
        metadata={
            "help": "model: frozen copy (or the base under a disabled adapter); precomputed: a cache; none: reference-free."
        },
    )
    reference_cache: str | None = field(
        default=None, metadata={"help": "Folder of the precomputed reference cache (reference=precomputed)."}
    )
    kl_top_k: int = field(
        default=64,
        metadata={
            "help": "Reference cache: keep the top-k reference log-probs per token for the KL (0 = full vocabulary)."
        },
    )
    on_nonfinite: Literal["error", "skip"] = field(
        default="error", metadata={"help": "On a NaN/inf loss: stop (after saving state) or skip the batch."}
    )

    # ---- speed (docs/performance.md); every switch changes cost only, never the numbers ----------
    share_prefix: bool = field(
        default=True,
        metadata={"help": "Score chosen and rejected in one sequence per pair that holds the image and prompt once "
                  "(block attention mask); models that cannot (flash attention, sliding windows) fall back to two rows."},
    )  # fmt: skip
    encode_images_once: bool = field(
        default=True,
        metadata={
            "help": "When chosen and rejected are scored as two rows, run the vision tower once per example."
        },
    )

    # ---- TrainingArguments defaults that differ ---------------------------------------------------
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Kept False: the collator needs every field of the preference rows."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()  # TrainingArguments' own checks
        ChipLossConfig.__post_init__(self)
        check_choices(self, ("corruption", "reference", "on_bad_row", "on_nonfinite"))
        if self.kl_top_k < 0:
            raise ConfigError(f"kl_top_k must be >= 0, got {self.kl_top_k}")
        REFERENCES[self.reference].check_config(self)

    @property
    def loss_config(self) -> ChipLossConfig:
        """The loss hyperparameters as the pure-function config of `chip.losses`."""
        return ChipLossConfig(**{name: getattr(self, name) for name in ChipLossConfig.field_names()})
