"""Device memory: how much this process can still get, giving cached blocks back, and a cap."""
from __future__ import annotations

import torch

__all__ = ["free_device_memory", "obtainable_device_memory", "release_device_memory", "set_memory_limit",
           "device_capability", "usable_device_memory"]

# Per-process caps set through `set_memory_limit` (device index -> fraction), for torch builds without
# `torch.cuda.get_per_process_memory_fraction` (it is missing from some releases).
_FRACTIONS: dict = {}


def set_memory_limit(device, limit_bytes: int) -> None:
    """Cap this process's CUDA memory on `device` (what a card of that size would allow):
    `torch.cuda.set_per_process_memory_fraction`, recorded so that `free_device_memory` sees it."""
    device = torch.device(device)
    index = device.index if device.index is not None else torch.cuda.current_device()
    total = torch.cuda.get_device_properties(index).total_memory
    fraction = min(1.0, max(0.0, limit_bytes / total))
    torch.cuda.set_per_process_memory_fraction(fraction, index)
    _FRACTIONS[index] = fraction


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
    index = device.index if device.index is not None else torch.cuda.current_device()
    free, total = torch.cuda.mem_get_info(index)
    fraction = _memory_fraction(index)
    if fraction < 1.0:
        free = min(free, max(0, int(fraction * total) - torch.cuda.memory_reserved(index)))
    return free


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
    index = device.index if device.index is not None else torch.cuda.current_device()
    return tuple(torch.cuda.get_device_capability(index))


def usable_device_memory(device) -> int | None:
    """Bytes of a CUDA device this process may use in all: its total memory, capped by a per-process memory
    fraction (`set_memory_limit`), i.e. the size of the card it behaves as. None for any other device."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()
    total = torch.cuda.get_device_properties(index).total_memory
    return int(total * min(1.0, _memory_fraction(index)))
