"""Device memory: how much this process can still get, giving cached blocks back, a cap, a VRAM budget and the
peaks of a window of work.

A VRAM budget (`set_memory_budget`) counts what this process's PyTorch allocator reserves (torch's
``memory_reserved``), never the CUDA context (created before any tensor, outside the allocator; the driver's free
memory has it taken off already, so it is not counted twice). Under a budget every place that sizes its work by
free memory sees `usable_memory`: min(budget - reserved, the device's free memory); past it an allocation fails as
an out-of-memory error (torch's per-process memory fraction), never a silent overrun.
"""
from __future__ import annotations

import torch

__all__ = ["free_device_memory", "obtainable_device_memory", "release_device_memory", "set_memory_limit",
           "device_capability", "usable_device_memory", "usable_memory", "set_memory_budget", "memory_budget",
           "start_peak_window", "reset_peak_memory", "peak_memory"]

# Per-process caps set through `set_memory_limit` (device index -> fraction), for torch builds without
# `torch.cuda.get_per_process_memory_fraction` (it is missing from some releases).
_FRACTIONS: dict = {}
# The VRAM budget of each device (index -> (budget bytes, the memory fraction before it)): `set_memory_budget`.
_BUDGETS: dict = {}
# Peaks folded in before torch's peak counters were reset inside a window (index -> [allocated, reserved]).
_PEAKS: dict = {}


def _index(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


def usable_memory(free_bytes: int, held_bytes: int, cap_bytes: int | None) -> int:
    """Bytes a process may still take: the device's free memory and, under a cap (a VRAM budget or a
    `set_memory_limit`), at most the cap less what its allocator already holds (`held_bytes`). Pure."""
    if cap_bytes is None:
        return int(free_bytes)
    return max(0, min(int(free_bytes), int(cap_bytes) - int(held_bytes)))


def set_memory_limit(device, limit_bytes: int) -> None:
    """Cap this process's CUDA memory on `device` (what a card of that size would allow):
    `torch.cuda.set_per_process_memory_fraction`, recorded so that `free_device_memory` sees it."""
    device = torch.device(device)
    index = _index(device)
    total = torch.cuda.get_device_properties(index).total_memory
    _set_fraction(index, min(1.0, max(0.0, limit_bytes / total)))


def _set_fraction(index: int, fraction: float) -> None:
    torch.cuda.set_per_process_memory_fraction(fraction, index)
    _FRACTIONS[index] = fraction


def set_memory_budget(device, budget_bytes: int | None) -> None:
    """Hold this process to `budget_bytes` of `device` as its allocator reserves them (module docstring): work
    sized by free memory fits under it, and an allocation past it is an out-of-memory error. A budget replaces the
    last one; None lifts it (a `set_memory_limit` cap from before it stays). Cached blocks go back first, so that
    memory held before the budget does not count against it. Nothing happens on other devices."""
    device = torch.device(device)
    if device.type != "cuda":
        return
    index = _index(device)
    if index in _BUDGETS:
        _set_fraction(index, _BUDGETS.pop(index)[1])
    if budget_bytes is None:
        return
    torch.cuda.empty_cache()
    before = _memory_fraction(index)
    total = torch.cuda.get_device_properties(index).total_memory
    _set_fraction(index, min(before, max(0.0, budget_bytes / total)))
    _BUDGETS[index] = (int(budget_bytes), before)


def memory_budget(device) -> int | None:
    """The VRAM budget set on `device` (bytes), or None."""
    device = torch.device(device)
    if device.type != "cuda" or not _BUDGETS:
        return None
    return _BUDGETS.get(_index(device), (None,))[0]


def _memory_fraction(index: int) -> float:
    for getter in (getattr(torch.cuda, "get_per_process_memory_fraction", None),
                   getattr(torch._C, "_cuda_getMemoryFraction", None)):
        if getter is not None:
            try:
                return float(getter(index))
            except Exception:
                pass
    return _FRACTIONS.get(index, 1.0)


def free_device_memory(device: torch.device) -> int | None:
    """Bytes this process can still get on a CUDA device: the driver's free memory, capped by a
    per-process memory fraction (minus what the caching allocator already holds)."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    index = _index(device)
    free, total = torch.cuda.mem_get_info(index)
    fraction = _memory_fraction(index)
    cap = int(fraction * total) if fraction < 1.0 else None
    return usable_memory(free, torch.cuda.memory_reserved(index), cap)


def obtainable_device_memory(device: torch.device) -> int | None:
    """Bytes this process can still allocate on a CUDA device: ``free_device_memory`` plus what the caching
    allocator holds unused (reserved - allocated). None for any other device."""
    free = free_device_memory(device)
    if free is None:
        return None
    device = torch.device(device)
    return free + max(0, torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))


def release_device_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def device_capability(device) -> tuple[int, int] | None:
    """(major, minor) compute capability of a CUDA device; None for any other device."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    return tuple(torch.cuda.get_device_capability(_index(device)))


def usable_device_memory(device) -> int | None:
    """Bytes of a CUDA device this process may use in all: its total memory, capped by a per-process memory
    fraction (`set_memory_limit`), i.e. the size of the card it behaves as. None for any other device."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    index = _index(device)
    total = torch.cuda.get_device_properties(index).total_memory
    return int(total * min(1.0, _memory_fraction(index)))


def start_peak_window(device) -> None:
    """Start measuring `device`'s peak memory (e.g. for one job): `peak_memory` then gives the peak since, also
    across `reset_peak_memory` calls made meanwhile (per-stage peaks). Nothing on other devices."""
    device = torch.device(device)
    if device.type == "cuda":
        index = _index(device)
        torch.cuda.reset_peak_memory_stats(index)
        _PEAKS[index] = [0, 0]


def reset_peak_memory(device) -> None:
    """Reset torch's peak counters of `device` (a stage's own peak starts here), the peaks so far kept for
    `peak_memory`."""
    device = torch.device(device)
    if device.type == "cuda":
        index = _index(device)
        allocated, reserved = _PEAKS.setdefault(index, [0, 0])
        _PEAKS[index] = [max(allocated, torch.cuda.max_memory_allocated(index)),
                         max(reserved, torch.cuda.max_memory_reserved(index))]
        torch.cuda.reset_peak_memory_stats(index)


def peak_memory(device) -> dict | None:
    """{"peak_allocated", "peak_reserved"} bytes of `device` since `start_peak_window`; None for other devices."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    index = _index(device)
    allocated, reserved = _PEAKS.get(index, [0, 0])
    return {"peak_allocated": max(allocated, torch.cuda.max_memory_allocated(index)),
            "peak_reserved": max(reserved, torch.cuda.max_memory_reserved(index))}
