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


def release_device_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


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
