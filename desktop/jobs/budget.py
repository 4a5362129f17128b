"""A job's VRAM budget (the vram_budget setting, GiB): the device held to it while the job runs
(trellis.core.device.set_memory_budget: what PyTorch reserves, the CUDA context on top; past it an allocation is an
out-of-memory error), precision and offloading picked to fit it where they are "auto", and the job's peak device
memory for timings.json ("memory"). A CPU job records its budget and has nothing to hold to it.
"""
from __future__ import annotations

import contextlib
from typing import Optional

import torch

from trellis.core.device import peak_memory, release_device_memory, set_memory_budget, start_peak_window

GiB = 2 ** 30


def budget_bytes(settings) -> Optional[int]:
    """The settings' VRAM budget in bytes, or None."""
    gib = getattr(settings, "vram_budget", None)
    return None if gib is None else int(gib * GiB)


def hold_to_budget(device: str, settings) -> None:
    """Hold `device` to the settings' budget from now on (None lifts an earlier one)."""
    set_memory_budget(torch.device(device), budget_bytes(settings))


@contextlib.contextmanager
def job_memory(device: str, settings, timings: dict):
    """Run the job's body with `device` held to its budget; then timings["memory"]: the budget, the cap on the
    device (None: not held, e.g. a CPU) and the device's peak allocated / reserved bytes while the job ran (None
    on a CPU). The budget is lifted at the end: the next job sets its own."""
    dev = torch.device(device)
    hold_to_budget(device, settings)
    start_peak_window(dev)
    try:
        yield
    finally:
        peaks = peak_memory(dev) or {"peak_allocated": None, "peak_reserved": None}
        budget = budget_bytes(settings)
        timings["memory"] = {"vram_budget_gib": getattr(settings, "vram_budget", None),
                             "held_to_bytes": budget if dev.type == "cuda" else None,
                             "peak_allocated_bytes": peaks["peak_allocated"],
                             "peak_reserved_bytes": peaks["peak_reserved"]}
        with contextlib.suppress(Exception):      # a failed job still ends; the next one sets its own budget
            set_memory_budget(dev, None)


def set_job_policy(pipeline, settings) -> None:
    """The pipeline's precision and offloading for a job: the settings' own, with "auto" ones picked to fit the
    budget (trellis.pipelines.memory.fit_budget) on a GPU; the cache given back so that weights just moved off the
    device do not count against the budget."""
    precision, offload = settings.precision, settings.offload
    budget = budget_bytes(settings)
    device = torch.device(pipeline.device)
    if budget is not None and device.type == "cuda":
        from trellis.pipelines.memory import fit_budget

        policy = fit_budget(device, budget, precision=precision, offload=offload,
                            resident=getattr(pipeline, "RESIDENT_BUDGETS", None))     # the family's own (TRELLIS.2)
        precision, offload = policy.precision, policy.offload
    pipeline.set_memory_policy(precision=precision, offload=offload)
    if budget is not None:
        release_device_memory(device)
