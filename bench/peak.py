"""Peak memory of one step, shared by `bench/measure.py` and the peer workers (`bench/peers/worker.py`).

Kept free of chip imports so that a peer trainer's own environment (another transformers version,
in which chip need not import) measures its steps with the same code as chip's side of the run.
See `bench/measure.py` for what the peak means.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile


def step_peak_bytes(step: Callable[[], Any], device: torch.device) -> int:
    """Highest memory allocated by ``step()`` above what was allocated when it started."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - start
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    # Kineto's raw events carry every allocation (+bytes) and free (-bytes) with its time stamp;
    # the aggregated `prof.events()` attributes most of them to operators instead.
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    running = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        running += event.nbytes()
        peak = max(peak, running)
    return peak


def held_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the storages behind ``tensors``, each storage counted once (tied or shared weights)."""
    seen: dict[int, int] = {}
    for tensor in tensors:
        storage = tensor.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def tensors_in(value: Any) -> Iterator[torch.Tensor]:
    """Every tensor inside nested dicts, lists and tuples (a collated batch)."""
    if torch.is_tensor(value):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from tensors_in(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from tensors_in(item)
