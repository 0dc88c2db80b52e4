"""Multi-process set-up the stock `Trainer` leaves out: FSDP on CPU processes, layer wrapping, the reference model.

``accelerate launch --config_file configs/accelerate/{ddp,fsdp,deepspeed_zero2,deepspeed_zero3}*.yaml``
runs `chip train` unchanged; `ChipTrainer` calls these at the points noted on each function.
docs/distributed.md lists what was run with which config and what it measured.
"""

from __future__ import annotations

from copy import deepcopy

import torch
import torch.distributed as dist
from accelerate import Accelerator
from torch import nn

from chip.compat import accelerate_shared_state


def enable_fsdp_on_cpu() -> None:
    """Let ``accelerate launch`` with an FSDP config shard over CPU processes (gloo), as it does over GPUs.

    accelerate 1.x turns an FSDP launch into FSDP only for GPU-like process groups: with
    ``--use_cpu true`` its state stays ``MULTI_CPU`` and the FSDP plugin is dropped without a word,
    so the run would be plain DDP. torch's FSDP2 (``fully_shard``) itself runs on CPU tensors over
    gloo; marking the CPU group as a multi-device one before the `Accelerator` is built lets
    accelerate take its ordinary FSDP path (the device stays the CPU). Called before the
    `Accelerator` exists; a no-op for every other launch.
    """
    from accelerate.utils import DistributedType, parse_flag_from_env

    state = accelerate_shared_state()
    if (
        parse_flag_from_env("ACCELERATE_USE_FSDP")
        and state.get("distributed_type") == DistributedType.MULTI_CPU
    ):
        state["distributed_type"] = DistributedType.MULTI_GPU


def wrap_only_present_layers(accelerator: Accelerator, model: nn.Module) -> None:
    """Shard along the ``_no_split_modules`` layer classes the model really holds.

    accelerate's ``TRANSFORMER_BASED_WRAP`` wraps every class named in ``model._no_split_modules``
    and refuses the model when one is absent; composite models inherit names of parts they do not
    have (LLaVA lists ``CLIPTextEmbeddings`` beside its CLIP vision tower), so the shipped FSDP
    config would refuse every LLaVA. An explicit ``fsdp_transformer_layer_cls_to_wrap`` is kept.
    """
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

    plugin = accelerator.state.fsdp_plugin
    if plugin.auto_wrap_policy is not transformer_auto_wrap_policy or plugin.transformer_cls_names_to_wrap:
        return
    present = {type(module).__name__ for module in model.modules()}
    plugin.transformer_cls_names_to_wrap = [
        name for name in getattr(model, "_no_split_modules", None) or [] if name in present
    ]


def place_reference_model(accelerator: Accelerator, ref_model: nn.Module) -> nn.Module:
    """The frozen reference copy, placed for this launch and in evaluation mode.

    - DeepSpeed: initialised as its own inference engine (`deepspeed_reference`): under ZeRO-3
      its parameters are partitioned like the policy's, under ZeRO-1/2 it is replicated.
    - FSDP2: sharded with ``fully_shard`` along the same layer classes as the policy
      (`fsdp2_reference`), so a full fine-tune does not hold a whole second model per device.
    - otherwise (one process, DDP, FSDP1): replicated on the device.
    """
    state = accelerator.state
    if getattr(state, "deepspeed_plugin", None) is not None:
        return deepspeed_reference(ref_model, state.deepspeed_plugin.deepspeed_config)
    if getattr(state, "fsdp_plugin", None) is not None and state.fsdp_plugin.fsdp_version == 2:
        return fsdp2_reference(accelerator, ref_model)
    return ref_model.to(accelerator.device).eval()


def deepspeed_reference(ref_model: nn.Module, policy_config: dict) -> nn.Module:
    """A DeepSpeed inference engine for the reference, as TRL prepares its reference model.

    The policy's DeepSpeed config without its training-only parts (optimizer, scheduler, optimizer
    offload); ZeRO-3 keeps stage 3 with buckets sized to the hidden size, so the reference is
    partitioned too; any other stage becomes 0 (no partitioning: it is not trained).
    """
    import deepspeed

    config = deepcopy(policy_config)
    config.pop("optimizer", None)
    config.pop("scheduler", None)
    zero = config.setdefault("zero_optimization", {})
    zero.pop("offload_optimizer", None)
    if zero.get("stage") == 3:
        text_config = getattr(ref_model.config, "text_config", None) or ref_model.config
        hidden = getattr(text_config, "hidden_size", None)
        if hidden:
            zero.update(
                {
                    "reduce_bucket_size": hidden * hidden,
                    "stage3_param_persistence_threshold": 10 * hidden,
                    "stage3_prefetch_bucket_size": int(0.9 * hidden * hidden),
                }
            )
    else:
        zero["stage"] = 0
    engine, *_ = deepspeed.initialize(model=ref_model, config=config)
    engine.eval()
    return engine


def fsdp2_reference(accelerator: Accelerator, ref_model: nn.Module) -> nn.Module:
    """The reference sharded with FSDP2 like the policy: each wrapped layer class, then the root."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    plugin = accelerator.state.fsdp_plugin
    ref_model = ref_model.to(accelerator.device)
    wrap = set(plugin.transformer_cls_names_to_wrap or ())
    options = {
        "reshard_after_forward": plugin.reshard_after_forward,
        "mp_policy": plugin.mixed_precision_policy or MixedPrecisionPolicy(),  # computes as the policy does
    }
    for module in list(ref_model.modules())[1:]:
        if type(module).__name__ in wrap:
            fully_shard(module, **options)
    fully_shard(ref_model, **options)
    return ref_model.eval()


def on_any_process(flag: bool, device) -> bool:
    """``flag`` or-ed over every process (itself on a single one), so all ranks take the same decision
    before a collective step such as saving."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    value = torch.tensor([float(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)
