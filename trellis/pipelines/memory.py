"""Memory policy: precision and offload chosen at run time, plus per-stage time / peak-memory tracking.

precision: "fp16" (the checkpoints' own fp16 torsos), "bf16" (same layers in bfloat16: more range,
less mantissa; outputs drift further from the reference, spec §3.6), "fp32" (everything fp32).
offload: "none" (all networks stay on the device) or "model" (each network, DINOv2 included, is on
the device only while it runs; the rest wait in CPU memory). Both switch without reloading weights.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, field

import torch

# The device-memory helpers live in the bottom layer; this module re-exports them for older callers.
from ..core.device import free_device_memory, release_device_memory, set_memory_limit

__all__ = ["PRECISIONS", "OFFLOADS", "RESIDENT_BUDGET_BYTES", "MemoryPolicy", "pick_preset", "StageStat", "StageTracker",
           "HostWeights", "free_device_memory", "release_device_memory", "set_memory_limit"]

PRECISIONS = ("auto", "fp16", "bf16", "fp32")
OFFLOADS = ("auto", "none", "model")
_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}

# Peak allocated memory of the default chain with everything resident (fp16 torsos, measured on the
# GPU with a ~20 000-voxel structure; see docs/BENCHMARKS.md), with head room.
RESIDENT_BUDGET_BYTES = 10 * 2 ** 30


@dataclass
class MemoryPolicy:
    precision: str = "auto"
    offload: str = "auto"
    cfg_batch: bool | None = None      # conditional + unconditional passes as one batch (None: auto)
    cuda_graphs: bool | None = None    # replay the flows' forwards as CUDA graphs, CUDA only (None: auto)

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.offload not in OFFLOADS:
            raise ValueError(f"offload must be one of {', '.join(OFFLOADS)}, got {self.offload!r}")

    def resolve(self, device: torch.device) -> "MemoryPolicy":
        """Replace "auto" by concrete choices for `device`."""
        preset = pick_preset(device)
        return MemoryPolicy(precision=preset.precision if self.precision == "auto" else self.precision,
                            offload=preset.offload if self.offload == "auto" else self.offload,
                            cfg_batch=preset.cfg_batch if self.cfg_batch is None else self.cfg_batch,
                            cuda_graphs=preset.cuda_graphs if self.cuda_graphs is None else self.cuda_graphs)

    @property
    def dtype(self) -> torch.dtype:
        return _DTYPES[self.precision]


def pick_preset(device: torch.device, free_bytes: int | None = None) -> MemoryPolicy:
    """A precision/offload preset for the device: fp32 on the CPU; on a GPU fp16, offloading when small."""
    device = torch.device(device)
    if device.type != "cuda":
        return MemoryPolicy("fp32", "none", cfg_batch=True, cuda_graphs=False)
    free = free_device_memory(device) if free_bytes is None else free_bytes
    # CUDA graphs stay opt-in: at 12 + 12 steps the flows are GPU-bound and replays measured within
    # noise of eager mode (docs/BENCHMARKS.md), while their memory pools cost activation memory.
    if free < RESIDENT_BUDGET_BYTES:
        return MemoryPolicy("fp16", "model", cfg_batch=free >= 6 * 2 ** 30, cuda_graphs=False)
    return MemoryPolicy("fp16", "none", cfg_batch=True, cuda_graphs=False)


@dataclass
class StageStat:
    stage: str
    seconds: float
    peak_allocated_bytes: int | None = None
    peak_reserved_bytes: int | None = None


@dataclass
class StageTracker:
    """Wall time and CUDA peak memory of each stage of one run."""

    device: torch.device
    stats: list[StageStat] = field(default_factory=list)

    @contextlib.contextmanager
    def stage(self, name: str):
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            if cuda:
                torch.cuda.synchronize(self.device)
            stat = StageStat(name, time.perf_counter() - t0)
            if cuda:
                stat.peak_allocated_bytes = torch.cuda.max_memory_allocated(self.device)
                stat.peak_reserved_bytes = torch.cuda.max_memory_reserved(self.device)
            self.stats.append(stat)

    def as_dicts(self) -> list[dict]:
        return [asdict(s) for s in self.stats]


class HostWeights:
    """A model whose weights live in (pinned) CPU memory and visit the GPU only while it runs.

    Moving to the GPU is an asynchronous copy from pinned memory; moving back just points the
    parameters at the host copies again (weights never change at inference), so it costs nothing.
    Call `refresh()` after changing the model's dtypes.
    """

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.refresh()

    def _tensors(self):
        yield from self.model.named_parameters()
        yield from self.model.named_buffers()

    def refresh(self) -> None:
        pin = torch.cuda.is_available()
        self.host = {}
        for name, t in self._tensors():
            h = t.detach().to("cpu")
            if pin and not h.is_pinned():
                h = h.pin_memory()
            self.host[name] = h
            t.data = h

    def to_device(self, device: torch.device) -> None:
        for name, t in self._tensors():
            t.data = self.host[name].to(device, non_blocking=True)

    def to_host(self) -> None:
        for name, t in self._tensors():
            t.data = self.host[name]
