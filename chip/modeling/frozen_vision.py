"""The frozen vision tower run once per image set and step, shared by the policy and a live reference.

A CHiP step with a live reference encodes each image twice: the policy scores the real and the
corrupted rows, then the reference scores the same rows. With the vision tower frozen (the
default recipe) the two towers compute the same function — the reference is the policy's copy
made before training, a second load of the same checkpoint, or the policy itself under its
disabled LoRA adapter — so inside :func:`shared_frozen_vision` a tower call whose inputs equal an
earlier call's gets that call's output instead of running the encoder again:

    with shared_frozen_vision(policy, reference_model):   # one training step
        policy_scores = response_logps(policy, rows)       # the tower runs, its output is kept
        ref_scores = response_logps(reference_model, rows)  # the same pixels: the kept output

Only the tower (the encoder) is shared, never the projector after it, which trains in a full
fine-tune and so runs per model. A tower is shared only where the numbers cannot change
(:func:`shareable_towers`): every tower parameter frozen and held whole on this process (not
sharded by FSDP or ZeRO-3), no PEFT layer inside it (a LoRA layer differs between the adapter
enabled and disabled), no dropout or batch statistics while training (the policy trains, a
separate reference is in evaluation mode), and, for a separate reference, the same config and
the same weights (compared once per pair of towers, again after an in-place change). Qwen-VL's
and GLM-4V's ``visual`` holds their merger (a projector): in a full fine-tune the merger trains,
so that tower is not shared; under LoRA it is frozen and shared.

A kept output is served once (the reference's call on the same rows) and dropped; whatever is
left is dropped when the block ends, so no more than one step's tower outputs are ever held.
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import torch
from torch import nn

from chip.modeling.quirks import is_vision_parameter, quirks_for
from chip.modeling.wrappers import core_model


@contextmanager
def shared_frozen_vision(policy: nn.Module, reference: nn.Module | None) -> Iterator[None]:
    """Inside the block, a vision-tower call with the inputs of an earlier call returns its output.

    ``policy`` and ``reference`` may be wrapped (PEFT, DDP, DeepSpeed); ``reference`` None means the
    policy under its disabled adapter. Towers that cannot be shared exactly run as they always do.
    """
    with ExitStack() as stack:
        for tower, twin in shareable_towers(policy, reference):
            cache = _TowerCache(next(tower.parameters()).device.type)
            for module in dict.fromkeys((tower, twin)):  # once when the reference is the policy itself
                stack.enter_context(_forward_through(module, cache))
        yield


def shareable_towers(policy: nn.Module, reference: nn.Module | None) -> list[tuple[nn.Module, nn.Module]]:
    """The (policy tower, reference tower) pairs whose outputs are equal for equal inputs (see the module
    docstring for the conditions); ``reference`` None: the policy under its disabled adapter."""
    core = core_model(policy)
    reference_core = core if reference is None else core_model(reference)
    pairs = []
    for name, tower in vision_towers(core):
        twin = _submodule(reference_core, name)
        if twin is not None and _exactly_shared(tower, twin):
            pairs.append((tower, twin))
    return pairs


def vision_towers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The outermost vision encoders of a transformers model (names from its quirks row), by path."""
    quirks = quirks_for(model.config)
    towers: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        inside = any(name.startswith(f"{outer}.") for outer, _ in towers)
        if not inside and is_vision_parameter(name, quirks):
            towers.append((name, module))
    return towers


def _submodule(model: nn.Module, name: str) -> nn.Module | None:
    try:
        return model.get_submodule(name)
    except AttributeError:
        return None


def _exactly_shared(tower: nn.Module, twin: nn.Module) -> bool:
    towers = dict.fromkeys((tower, twin))
    return all(_frozen_whole_and_plain(module) and _deterministic(module) for module in towers) and (
        tower is twin or (_same_config(tower, twin) and _same_weights(tower, twin))
    )


def _frozen_whole_and_plain(tower: nn.Module) -> bool:
    """Every parameter frozen and held whole here, and no PEFT layer inside.

    A parameter held whole is a plain ``nn.Parameter``: FSDP2 holds DTensor shards, FSDP1 flat
    parameters, ZeRO-3 empty tensors with a ``ds_id``; their weights cannot be compared here.
    PEFT layers are found by their class's package, whatever the PEFT version calls them.
    """
    params = list(tower.parameters())
    whole = all(type(p) is nn.Parameter and not hasattr(p, "ds_id") for p in params)
    peft = any(type(module).__module__.startswith("peft.") for module in tower.modules())
    return bool(params) and whole and not any(p.requires_grad for p in params) and not peft


def _deterministic(tower: nn.Module) -> bool:
    """Whether the tower computes the same in training mode as in evaluation mode, call after call.

    Dropout and drop-path rates of transformers towers live in their config and are applied in
    ``forward`` when training (``attention_dropout``, ``drop_path_rate``), not as modules.
    """
    if not any(module.training for module in tower.modules()):
        return True
    config = getattr(tower, "config", None)
    settings = config.to_dict() if config is not None else {}
    rates = [value for key, value in settings.items() if "drop" in key and isinstance(value, (int, float))]
    stochastic = any(
        (isinstance(module, nn.modules.dropout._DropoutNd) and module.p > 0)
        or isinstance(module, nn.modules.batchnorm._BatchNorm)
        for module in tower.modules()
        if module.training
    )
    return not stochastic and not any(rates)


def _same_config(tower: nn.Module, twin: nn.Module) -> bool:
    """Both towers configured alike, attention implementation included (eager and SDPA attention
    round differently), so equal weights compute equal numbers."""
    return _settings(tower) == _settings(twin)


def _settings(tower: nn.Module) -> tuple[dict, str] | None:
    config = getattr(tower, "config", None)
    return None if config is None else (config.to_dict(), config._attn_implementation)


# policy tower -> {reference tower: (both towers' stamps, same weights)}; weak: entries go with the models.
_SAME_WEIGHTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _same_weights(tower: nn.Module, twin: nn.Module) -> bool:
    """Every parameter and buffer equal: compared at first use, and again only once either tower's
    tensors were replaced, moved or changed in place (a checkpoint load, an optimizer step)."""
    known = _SAME_WEIGHTS.setdefault(tower, weakref.WeakKeyDictionary())
    stamps = (_stamp(tower), _stamp(twin))
    if twin not in known or known[twin][0] != stamps:
        with torch.no_grad():
            known[twin] = (stamps, _equal(_state(tower), _state(twin)))
    return known[twin][1]


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return dict(chain(module.named_parameters(), module.named_buffers()))


def _stamp(module: nn.Module) -> list[tuple[int, int]]:
    """Where each tensor's data lives and its in-place version counter: equal stamps, same weights."""
    return [(tensor.data_ptr(), tensor._version) for tensor in _state(module).values()]


@contextmanager
def _forward_through(tower: nn.Module, cache: _TowerCache) -> Iterator[None]:
    """``tower``'s ``forward`` goes through ``cache`` inside the block.

    Set on the instance, as accelerate's device hooks do: ``nn.Module.__call__`` looks ``forward``
    up there, and hooks registered on the tower itself still run around a served call.
    """
    own = tower.__dict__.get("forward")
    original = tower.forward
    tower.forward = lambda *args, **kwargs: cache(original, args, kwargs)
    try:
        yield
    finally:
        if own is None:
            del tower.forward
        else:
            tower.forward = own


@dataclass(eq=False)  # kept calls are told apart by identity: comparing their tensors is `_equal`'s job
class _Kept:
    """One tower call: its inputs, its output, and the version counter of every tensor in both."""

    inputs: tuple  # (args, kwargs, autocast state)
    output: Any
    versions: list[int] = field(init=False)

    def __post_init__(self) -> None:
        self.versions = _versions((self.inputs, self.output))

    def unchanged(self) -> bool:
        """False once a tensor of the call was changed in place: the output may no longer be its inputs'."""
        return _versions((self.inputs, self.output)) == self.versions


# Keyword arguments that never change a tower's output. `use_cache` only decides whether a decoder
# returns its key-value cache; LLaVA-NeXT fills it from the model's config (which the Trainer sets
# on the policy, not on a reference copy), so it would tell equal calls apart.
_NOT_INPUTS = frozenset({"use_cache"})


class _TowerCache:
    """One step's outputs of a pair of towers by their inputs, each served once to a later equal call."""

    def __init__(self, device_type: str):
        self.device_type = device_type
        self.kept: list[_Kept] = []

    def __call__(self, forward: Callable, args: tuple, kwargs: dict) -> Any:
        # Same inputs under another autocast setting compute in another dtype: a different call.
        autocast = (torch.is_autocast_enabled(self.device_type), torch.get_autocast_dtype(self.device_type))
        inputs = (args, {key: value for key, value in kwargs.items() if key not in _NOT_INPUTS}, autocast)
        self.kept = [kept for kept in self.kept if kept.unchanged()]
        for kept in self.kept:
            if _equal(kept.inputs, inputs):
                self.kept.remove(kept)
                return kept.output
        output = forward(*args, **kwargs)
        if not any(tensor.is_inference() for tensor in _tensors((inputs, output))):  # no version counters
            self.kept.append(_Kept(inputs, _new_container(output)))
        return output


def _new_container(output: Any) -> Any:
    """The same tensors in a new container: callers set fields of the output they get (LLaVA's
    ``get_image_features`` replaces ``pooler_output``), which must not reach the reference."""
    return copy.copy(output) if isinstance(output, (dict, list)) else output


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    """Every tensor in nested tuples, lists and dicts (model outputs are dicts)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


def _versions(value: Any) -> list[int]:
    return [tensor._version for tensor in _tensors(value)]


def _equal(first: Any, second: Any) -> bool:
    """Exact equality of nested call arguments: tensors by shape, dtype, device and every value."""
    if isinstance(first, torch.Tensor) or isinstance(second, torch.Tensor):
        return (
            isinstance(first, torch.Tensor)
            and isinstance(second, torch.Tensor)
            and (first.shape, first.dtype, first.device) == (second.shape, second.dtype, second.device)
            and torch.equal(first, second)
        )
    if type(first) is not type(second):
        return False
    if isinstance(first, (tuple, list)):
        return len(first) == len(second) and all(map(_equal, first, second))
    if isinstance(first, dict):
        return first.keys() == second.keys() and all(_equal(first[key], second[key]) for key in first)
    return bool(first == second)
