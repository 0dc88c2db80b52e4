"""The range of each numeric `transformers.TrainingArguments` field, which transformers does not check.

chip's own settings declare their range beside their default (``bounds`` in `chip.training.config.option`
and `chip.losses.ChipLossConfig`); these are the ranges of the fields chip inherits, in the same
notation (`chip.errors.within`). A test fails when a numeric field has no range anywhere.
"""

from __future__ import annotations

SEED = "[0, 4294967295]"  # numpy's seeds are 32-bit

TRAINING_ARGUMENT_BOUNDS: dict[str, str] = {
    "per_device_train_batch_size": ">= 1",
    "per_device_eval_batch_size": ">= 1",
    "gradient_accumulation_steps": ">= 1",
    "eval_accumulation_steps": ">= 1",
    "num_train_epochs": "> 0",
    "max_steps": "-1 or >= 1",  # -1: as many steps as num_train_epochs take
    "learning_rate": ">= 0",  # 0 trains nothing but is a valid run (the weights and metrics at the start)
    "warmup_steps": ">= 0",  # below 1: a fraction of the steps
    "weight_decay": ">= 0",
    "adam_beta1": "[0, 1)",
    "adam_beta2": "[0, 1)",
    "adam_epsilon": "> 0",
    "max_grad_norm": ">= 0",  # 0: no clipping
    "label_smoothing_factor": "[0, 1)",
    "neftune_noise_alpha": ">= 0",
    "torch_empty_cache_steps": ">= 1",
    "logging_steps": "> 0",  # below 1: a fraction of the steps
    "eval_steps": "> 0",
    "eval_delay": ">= 0",
    "save_steps": "> 0",
    "save_total_limit": ">= 1",
    "seed": SEED,
    "data_seed": SEED,
    "dataloader_num_workers": ">= 0",
    "dataloader_prefetch_factor": ">= 1",
    "ddp_bucket_cap_mb": ">= 1",
    "ddp_timeout": ">= 1",
    "local_rank": "-1 or >= 0",  # -1: not distributed
}
