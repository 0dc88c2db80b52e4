"""`ChipConfig`: every `transformers.TrainingArguments` field plus CHiP's model, data and loss fields.

Used by `chip train` through `HfArgumentParser`, so a YAML file and `--field value` overrides
both work, and Accelerate / DeepSpeed / FSDP options come from `TrainingArguments` unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal

from transformers import TrainingArguments

from chip.corruption import NOISE_STEP, CorruptionKind
from chip.errors import ConfigError, check_bounds
from chip.losses import ChipLossConfig
from chip.modeling.layout import LayoutSettings
from chip.training.bounds import TRAINING_ARGUMENT_BOUNDS
from chip.training.methods import METHOD_NAMES, MethodName, preset

LOSS_GROUP = "CHiP loss (symbols of docs/method.md)"

# Where π_ref comes from; each mode is a strategy in `chip.training.reference.REFERENCES`.
ReferenceMode = Literal["model", "precomputed", "none"]
# What `--eval_hallucination` measures at each evaluation (`chip.training.hallucination`).
HallucinationBench = Literal["none", "chair", "pope"]


def option(default, help_text: str, group: str, bounds: str | None = None):
    """A chip setting: its default, its line in `chip train --help`, the help section it is listed in,
    and for a number the range it must lie in (`chip.errors.within`'s notation: ">= 1", "[0, 1)")."""
    metadata = {"help": help_text, "group": group, **({"bounds": bounds} if bounds else {})}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class ChipConfig(TrainingArguments, ChipLossConfig):
    """Training arguments for CHiP preference optimisation (and DPO and every ablation).

    The loss settings are `ChipLossConfig`'s fields, inherited (declared and validated there once);
    `loss_config` hands them to `chip.losses.chip_loss` as a plain `ChipLossConfig`.
    """

    # ---- model -------------------------------------------------------------------------------
    model_name_or_path: str | None = option(
        None, "Path or hub id of the vision-language model to train.", "model"
    )
    trust_remote_code: bool = option(
        False, "Allow custom modelling code from the checkpoint (off unless asked).", "model"
    )
    model_dtype: Literal["auto", "float32", "bfloat16", "float16"] = option(
        "auto", "Weights dtype; auto: bfloat16 with --bf16, float16 with --fp16, else float32.", "model"
    )
    freeze_vision_tower: bool = option(
        True, "Keep the vision encoder frozen (the authors' recipe trains LLM + projector).", "model"
    )

    # ---- PEFT --------------------------------------------------------------------------------
    use_peft: bool = option(False, "Train a LoRA adapter instead of the full model.", "LoRA")
    lora_r: int = option(16, "LoRA rank (with --use_peft).", "LoRA", bounds=">= 1")
    lora_alpha: int = option(
        32, "LoRA scaling numerator, scale = alpha / r (with --use_peft).", "LoRA", bounds="> 0"
    )
    lora_dropout: float = option(
        0.05, "Dropout on the LoRA input (with --use_peft).", "LoRA", bounds="[0, 1)"
    )
    lora_target_modules: list[str] | None = option(
        None,
        "Module names to adapt (with --use_peft); default: every linear layer of the language model.",
        "LoRA",
    )

    # ---- data --------------------------------------------------------------------------------
    dataset: str | None = option(
        None,
        "Preference data: a .jsonl/.json/.parquet file, a folder of shards, a `datasets` folder, a hub id "
        "(owner/name) or a load_dataset spec (name=parquet,data_files=...,split=train); docs/data.md.",
        "data",
    )
    column_map: list[str] | None = option(
        None,
        "COLUMN=FIELD renames, repeatable or comma-separated (e.g. question=prompt); shown by chip data check.",
        "data",
    )
    dataset_split: str | None = option(
        None, "Split of --dataset when it holds several (default: train, else the only one).", "data"
    )
    image_root: str | None = option(
        None, "Folder image paths are relative to (default: the data file's folder).", "data"
    )
    eval_dataset: str | None = option(
        None,
        "Held-out preference data, evaluated every --eval_steps; refused when it shares rows with --dataset.",
        "data",
    )
    eval_split: str | None = option(
        None,
        "Split of --eval_dataset (default: one named test, validation, val, eval or dev when the folder "
        "has one, else as for --dataset; the log names the split read).",
        "data",
    )
    eval_fraction: float = option(
        0.0,
        "Hold out this fraction of --dataset for evaluation when no --eval_dataset is given.",
        "data",
        bounds="[0, 1)",
    )
    max_length: int = option(
        2048, "Longest prompt + response in tokens; only response tokens are cut.", "data", bounds=">= 1"
    )
    on_bad_row: Literal["error", "skip"] = option(
        "error", "Refuse a dataset with bad rows, or skip them and report the count.", "data"
    )
    allow_outside_root: bool = option(
        False, "Allow image paths that escape image_root (../, absolute paths).", "data"
    )

    # ---- CHiP loss: the fields of `chip.losses.ChipLossConfig` (symbols of docs/method.md), inherited
    method: MethodName | None = option(
        None,
        "A preset that sets every loss weight and the corrupted image of a method (docs/method.md); "
        "settings given explicitly override it.",
        LOSS_GROUP,
    )
    segment_min_match: int = option(
        3,
        "Shortest matching token run that anchors the chosen/rejected alignment.",
        LOSS_GROUP,
        bounds=">= 1",
    )
    mark_insertions: bool = option(
        False, "Also up-weight pure insertions/deletions as changed segments.", LOSS_GROUP
    )

    # ---- corrupted image -----------------------------------------------------------------------
    corruption: CorruptionKind = option(
        "diffusion", "The corrupted image ṽ of the visual preference.", "corrupted image"
    )
    noise_step: int = option(
        NOISE_STEP, "Diffusion step k of the noised image.", "corrupted image", bounds="[0, 999]"
    )

    # ---- reference model -----------------------------------------------------------------------
    reference: ReferenceMode = option(
        "model",
        "model: a frozen copy (or the base under the disabled LoRA adapter); precomputed: a cache; none: reference-free.",
        "reference",
    )
    reference_cache: str | None = option(
        None, "Folder of the precomputed reference cache (with --reference precomputed).", "reference"
    )
    kl_top_k: int = option(
        64,
        "Reference cache: keep the top-k reference log-probs per token for the KL (0 = full vocabulary).",
        "reference",
        bounds=">= 0",
    )

    # ---- speed (docs/performance.md); every switch changes cost only, never the numbers ----------
    share_prefix: bool = option(
        True,
        "One sequence per pair holding image and prompt once (others: two rows).",
        "speed",
    )
    logits_chunk_size: int = option(
        0,
        "LM head on this many response tokens at a time, recomputed in backward (150k "
        "vocabularies); 0 = all at once.",
        "speed",
        bounds=">= 0",
    )
    encode_images_once: bool = option(
        True,
        "When chosen and rejected are scored as two rows, run the vision tower once per example.",
        "speed",
    )
    padding_free: bool = option(
        True,
        "Rows back to back in one sequence, no padding (SDPA models; others: padded).",
        "speed",
    )
    share_frozen_vision: bool = option(
        True,
        "A live reference reuses the policy's frozen vision-tower outputs.",
        "speed",
    )
    fuse_gated_mlp: bool = option(
        True, "SiLU-gated MLPs keep 3 activations for backward, not 4 (same numbers).", "speed"
    )

    # ---- hallucination measured while training (docs/python.md) ---------------------------------
    eval_hallucination: HallucinationBench = option(
        "none", "CHAIR or POPE at every evaluation.", "hallucination"
    )
    hallucination_truth: str | None = option(None, "COCO folder, objects or POPE file.", "hallucination")
    hallucination_images: int = option(
        50, "Images or questions asked each time.", "hallucination", bounds=">= 1"
    )
    hallucination_max_new_tokens: int = option(128, "Longest greedy answer.", "hallucination", bounds=">= 1")
    min_eval_recall: float | None = option(
        None, "Recall floor of the best checkpoint.", "hallucination", bounds="[0, 1]"
    )

    # ---- robustness --------------------------------------------------------------------------
    overwrite_output_dir: bool = option(
        False,
        "Write over an earlier run in --output_dir (refused without it; --resume_from_checkpoint last "
        "continues that run instead).",
        "robustness",
    )
    on_nonfinite: Literal["error", "skip"] = option(
        "error", "On a NaN/inf loss or gradient: stop (after saving state) or skip the batch.", "robustness"
    )

    # ---- TrainingArguments defaults that differ ---------------------------------------------------
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Kept False: the collator needs every field of the preference rows."}
    )

    def __post_init__(self) -> None:
        check_bounds(self, TRAINING_ARGUMENT_BOUNDS)  # every numeric field, before transformers reads them
        if self.output_dir is not None and not str(self.output_dir).strip():
            raise ConfigError("--output_dir is empty: name the folder for the trained model")
        super().__post_init__()  # TrainingArguments' own checks
        # the loss's checks, and `check_choices` of every Literal field here
        ChipLossConfig.__post_init__(self)
        if self.reference == "precomputed" and not self.reference_cache:
            raise ConfigError(
                "reference=precomputed needs --reference_cache DIR (write it with `chip data precompute`)"
            )
        self._check_hallucination()
        if self.reference == "none" and self.token_weight > 0:
            raise ConfigError(
                "the token-level KL needs a reference: set --token_weight 0 with --reference none"
            )
        self._check_rivals()

    def _check_rivals(self) -> None:
        """The method name, and the settings the reference cache and the image anchors cannot serve."""
        if self.method is not None and self.method not in METHOD_NAMES:
            raise ConfigError(f"method must be one of {', '.join(METHOD_NAMES)}; got {self.method!r}")
        if self.reference == "precomputed" and (self.anchored or self.max_rejected != 1):
            raise ConfigError(
                "--reference precomputed caches one rejected response and the chosen one under ṽ: "
                "use --reference model with --max_rejected other than 1 or --image_anchored_weights"
            )
        if self.image_anchored_weights == "reference" and self.reference == "none":
            raise ConfigError(
                "--image_anchored_weights reference needs a reference: use policy with --reference none"
            )
        if self.anchored and self.max_rejected != 1:
            raise ConfigError(
                "--image_anchored_weights weighs one rejected response per prompt: set --max_rejected 1"
            )

    @classmethod
    def for_method(cls, method: MethodName, **fields: Any) -> ChipConfig:
        """The config of a `--method` preset, ``fields`` (any `ChipConfig` field) overriding it."""
        if method not in METHOD_NAMES:
            raise ConfigError(f"method must be one of {', '.join(METHOD_NAMES)}; got {method!r}")
        return cls(method=method, **{**preset(method), **fields})

    @property
    def method_settings(self) -> dict[str, Any]:
        """The resolved method: its name, every loss setting and the corrupted image (logged and saved)."""
        loss = {name: getattr(self, name) for name in ChipLossConfig.field_names()}
        return {"method": self.method, **loss, "corruption": self.corruption, "noise_step": self.noise_step}

    def _check_hallucination(self) -> None:
        if self.eval_hallucination != "none" and not self.hallucination_truth:
            raise ConfigError(
                f"--eval_hallucination {self.eval_hallucination} needs --hallucination_truth "
                "(a COCO annotation folder or an objects file)"
            )
        if self.min_eval_recall is not None and self.eval_hallucination != "chair":
            raise ConfigError("--min_eval_recall needs --eval_hallucination chair (it measures eval_recall)")

    @classmethod
    def default(cls, name: str) -> Any:
        """The default of field ``name``, for classes that take the same setting outside a run's config."""
        return next(f.default for f in fields(cls) if f.name == name)

    @property
    def layout_settings(self) -> LayoutSettings:
        """The speed switches as the one value the trainer hands to its `chip.modeling.ResponseScorer`."""
        return LayoutSettings(
            share_prefix=self.share_prefix,
            encode_images_once=self.encode_images_once,
            chunk_size=self.logits_chunk_size,
            padding_free=self.padding_free,
        )

    @property
    def loss_config(self) -> ChipLossConfig:
        """The loss hyperparameters as the pure-function config of `chip.losses`."""
        return ChipLossConfig(**{name: getattr(self, name) for name in ChipLossConfig.field_names()})
