"""Memory policy: precision and offload chosen at run time, plus per-stage time / peak-memory tracking.

precision: "fp16" (the checkpoints' own fp16 torsos), "bf16" (same layers in bfloat16: more range,
less mantissa; outputs drift further from the reference, spec §3.6), "fp32" (everything fp32).
offload: "none" (all networks stay on the device) or "model" (each network, DINOv2 included, is on
the device only while it runs; the rest wait in CPU memory). Both switch without reloading weights.
"auto" precision follows the card: `precision_for(compute capability, memory)` (fp32 on Pascal and older
when it fits, fp16 elsewhere; bf16 only when asked for).
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import asdict, dataclass, field

import torch

# The device-memory helpers live in the bottom layer; this module re-exports them for older callers.
from ..core.device import (device_capability, free_device_memory, memory_budget, release_device_memory,
                           reset_peak_memory, set_memory_limit, usable_device_memory)
from ..modules.attention import kernel_log

__all__ = ["PRECISIONS", "OFFLOADS", "STRUCTURE_GRAPHS", "COMPILE_ENV", "compile_default", "RESIDENT_BUDGET_BYTES", "MemoryPolicy", "pick_preset", "precision_for",
           "FP32_MIN_GIB", "RESIDENT_BUDGET_FP32_BYTES", "StageStat", "StageTracker", "budget_policy",
           "StageOutOfMemoryError", "naming_stage",
           "fit_budget",
           "HostWeights", "free_device_memory", "release_device_memory", "set_memory_limit"]

PRECISIONS = ("auto", "fp16", "bf16", "fp32")
OFFLOADS = ("auto", "none", "model")
# MemoryPolicy.compile's default when a pipeline's policy leaves it unset: on / off (default off).
COMPILE_ENV = "TRELLIS_COMPILE_FLOWS"
_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}

# Peak allocated memory of the default chain with everything resident (fp16 torsos, a ~20 000-voxel structure;
# docs/benchmarks/memory.md#resident-peak), with head room.
RESIDENT_BUDGET_BYTES = 10 * 2 ** 30
# The same in fp32 (docs/benchmarks/memory.md#resident-peak, the same head room), and the free memory from which
# conditional + unconditional passes run as one batch (activations double in fp32).
RESIDENT_BUDGET_FP32_BYTES = 16 * 2 ** 30
CFG_BATCH_MIN_BYTES = 6 * 2 ** 30
# Card size from which a GPU without fast fp16 runs in fp32: fp32 with model offload peaks at the mesh decoder
# (docs/benchmarks/memory.md#each-network-alone), plus the CUDA context and the export. An "8 GB" card reports
# 7.9-8.0 GiB.
FP32_MIN_GIB = 7.5


def precision_for(capability: tuple[int, int] | None, vram_gib: float | None) -> str:
    """The precision "auto" picks on a CUDA GPU of compute `capability` (major, minor) with `vram_gib` GiB
    that this process may use (the card's memory, or a `set_memory_limit` cap). Pure: no device is touched.

    ======================  ============================  ==========  ======================================
    compute capability      cards                         memory      precision
    ======================  ============================  ==========  ======================================
    unknown (None)          -                             any         fp16 (the reference's own torso dtype)
    < 7.0: Maxwell, Pascal  GTX 9xx/10xx, P40, P100       >= 7.5 GiB  fp32
    < 7.0                   GTX 1060 6 GB, 1050 Ti, ...   < 7.5 GiB   fp16 (storage; maths in fp32, below)
    7.x: Volta, Turing      V100, T4, RTX 20xx, GTX 16xx  any         fp16
    >= 8.0: Ampere and on   A100, RTX 30-50xx, H100, B200 any         fp16 (never bf16)
    ======================  ============================  ==========  ======================================

    Why. Pascal has no tensor cores, and consumer Pascal (6.1) does native fp16 arithmetic at 1/64 of its fp32
    rate (CUDA C++ Programming Guide, arithmetic throughput table): fp16 can only save memory there, never time,
    so fp32 — the exact maths — runs when it fits (with model offload below RESIDENT_BUDGET_FP32_BYTES free). When
    it does not, fp16 still works at about fp32 speed: PyTorch stores half tensors but computes in fp32
    (its cuBLAS half GEMMs, most of the work, ask for a 32-bit compute type; elementwise kernels compute in
    float), so "fp16" there is fp16 storage with fp32 compute and no native-fp16 penalty. Volta and newer run
    fp16 on tensor cores: several times fp32's speed (docs/benchmarks/pipeline.md#precision). bf16 runs
    at exactly fp16's tensor-core rate on 8.0+, so it buys no speed, and it keeps 8 mantissa bits to fp16's 11,
    drifting further from the reference, whose torsos are fp16 (spec §3.6); it stays a manual choice (its extra
    range is the only reason to pick it).
    """
    if capability is None or tuple(capability) >= (7, 0):
        return "fp16"
    return "fp32" if vram_gib is not None and vram_gib >= FP32_MIN_GIB else "fp16"


def compile_default() -> bool:
    """Whether the flows' blocks are compiled when the policy does not say (``$TRELLIS_COMPILE_FLOWS``: on /
    1 / true / yes, or off / 0 / false / no / unset). It still only happens where the fast paths allow
    (``fastpaths`` "flow_block": Triton on CUDA, fast paths on)."""
    raw = os.environ.get(COMPILE_ENV, "")
    value = raw.strip().lower()
    if value in ("", "0", "off", "false", "no"):
        return False
    if value in ("1", "on", "true", "yes"):
        return True
    raise ValueError(f"{COMPILE_ENV}={raw!r} is not a known value: use on or off")


STRUCTURE_GRAPHS = "structure"


@dataclass
class MemoryPolicy:
    precision: str = "auto"
    offload: str = "auto"
    cfg_batch: bool | None = None      # conditional + unconditional passes as one batch (None: auto)
    # Replay the flows' forwards as CUDA graphs, CUDA only: True both flows (each run captures anew; the sparse-
    # structure flow's graphs are kept from job to job), "structure" only the sparse-structure flow's, kept from job
    # to job (its inputs have the same shapes in every job), False none; None: auto (the preset's).
    cuda_graphs: bool | str | None = None
    # The flows' transformer blocks through torch.compile (a fast path: Triton, CUDA; the eager blocks are its
    # twin). None: $TRELLIS_COMPILE_FLOWS (default off: the first run of a process compiles for tens of seconds,
    # docs/benchmarks/pipeline.md#compiled-blocks).
    compile: bool | None = None

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.offload not in OFFLOADS:
            raise ValueError(f"offload must be one of {', '.join(OFFLOADS)}, got {self.offload!r}")
        if self.cuda_graphs not in (None, True, False, STRUCTURE_GRAPHS):
            raise ValueError(f"cuda_graphs must be True, False, {STRUCTURE_GRAPHS!r} or None (auto), "
                             f"got {self.cuda_graphs!r}")

    def resolve(self, device: torch.device, resident: tuple[int, int] | None = None) -> "MemoryPolicy":
        """Replace "auto" by concrete choices for `device` (`resident`: the pipeline's resident budgets,
        pick_preset)."""
        preset = pick_preset(device, precision=None if self.precision == "auto" else self.precision,
                             resident=resident)
        return MemoryPolicy(precision=preset.precision if self.precision == "auto" else self.precision,
                            offload=preset.offload if self.offload == "auto" else self.offload,
                            cfg_batch=preset.cfg_batch if self.cfg_batch is None else self.cfg_batch,
                            cuda_graphs=preset.cuda_graphs if self.cuda_graphs is None else self.cuda_graphs,
                            compile=compile_default() if self.compile is None else self.compile)

    @property
    def dtype(self) -> torch.dtype:
        return _DTYPES[self.precision]

    def keeps_graphs(self, device) -> bool:
        """Whether this (resolved) policy keeps the CUDA graphs of a flow whose inputs never change shape from job to
        job on `device`: graphs asked for, eager blocks, the weights resident on a CUDA device."""
        return bool(self.cuda_graphs) and not self.compile and self.offload != "model" \
            and torch.device(device).type == "cuda"


def pick_preset(device: torch.device, free_bytes: int | None = None, capability: tuple[int, int] | None = None,
                total_bytes: int | None = None, precision: str | None = None,
                resident: tuple[int, int] | None = None) -> MemoryPolicy:
    """A precision/offload preset for the device: fp32 on the CPU; on a GPU `precision_for` the card, offloading
    when the free memory is below the resident budget of that precision. `free_bytes` / `capability` /
    `total_bytes` stand for the device's own (when `free_bytes` is given nothing is read from the device: an
    unknown capability gives fp16); `precision` fixes the precision whose budget decides the offload; `resident`:
    the pipeline's (half-precision, fp32) resident budgets (None: TRELLIS v1's, RESIDENT_BUDGET(_FP32)_BYTES)."""
    device = torch.device(device)
    if device.type != "cuda":
        return MemoryPolicy("fp32", "none", cfg_batch=True, cuda_graphs=False)
    if free_bytes is None:
        free = free_device_memory(device)
        capability = device_capability(device) if capability is None else capability
        total = usable_device_memory(device) if total_bytes is None else total_bytes
    else:
        free, total = free_bytes, free_bytes if total_bytes is None else total_bytes
    if precision in (None, "auto"):
        precision = precision_for(capability, total / 2 ** 30)
    fp32 = precision == "fp32"
    half_budget, fp32_budget = resident or (RESIDENT_BUDGET_BYTES, RESIDENT_BUDGET_FP32_BYTES)
    resident_budget = fp32_budget if fp32 else half_budget
    cfg_batch_min = CFG_BATCH_MIN_BYTES * (2 if fp32 else 1)
    # CUDA graphs, resident only: the sparse-structure flow's ("structure"), kept from job to job. Its inputs have
    # the same shapes in every job, so after the first job (or the app's warm-up) every step replays and the host's
    # speed stops mattering for stage 1. Not both flows by default (True still asks for them): the SLat flow's shapes
    # change with every structure, so each run captures anew, and that was no faster than eager
    # (docs/benchmarks/pipeline.md#cuda-graphs). Never when offloading (a graph's pool holds a forward's activations
    # as long as it is kept) or with compiled blocks (no faster there).
    if free < resident_budget:
        return MemoryPolicy(precision, "model", cfg_batch=free >= cfg_batch_min, cuda_graphs=False)
    return MemoryPolicy(precision, "none", cfg_batch=True, cuda_graphs=STRUCTURE_GRAPHS)


def budget_policy(device: torch.device, budget_bytes: int, room_bytes: int | None = None,
                  capability: tuple[int, int] | None = None, precision: str = "auto",
                  offload: str = "auto", resident: tuple[int, int] | None = None) -> MemoryPolicy:
    """The memory policy that fits a VRAM budget of `budget_bytes` (core.device.set_memory_budget): `pick_preset`
    for a card of that size, with `room_bytes` free, i.e. what this process could hold in all (the budget, less
    where other programs hold the rest of the device; None: the budget). A budget under the resident budget of the
    precision offloads the models; under CFG_BATCH_MIN_BYTES the CFG passes are decided per stage by what fits.
    A `precision` / `offload` other than "auto" is kept. Pure: nothing is read from the device (an unknown
    `capability` gives fp16). On a CPU the CPU's preset. `resident`: the pipeline's resident budgets (pick_preset)."""
    device = torch.device(device)
    room = budget_bytes if room_bytes is None else min(budget_bytes, room_bytes)
    preset = pick_preset(device, free_bytes=room, capability=capability, total_bytes=budget_bytes,
                         precision=None if precision == "auto" else precision, resident=resident)
    if device.type != "cuda":
        return preset
    offloading = (preset.offload if offload == "auto" else offload) == "model"
    return MemoryPolicy(preset.precision, preset.offload if offload == "auto" else offload,
                        cfg_batch=None if offloading and not preset.cfg_batch else preset.cfg_batch,
                        cuda_graphs=False if offloading else preset.cuda_graphs)


def fit_budget(device: torch.device, budget_bytes: int, precision: str = "auto", offload: str = "auto",
               resident: tuple[int, int] | None = None) -> MemoryPolicy:
    """`budget_policy` for `device` as it is now: its compute capability, and as room what this process holds plus
    what is free (other programs may leave less than the budget). `resident`: the pipeline's resident budgets
    (``pipeline.RESIDENT_BUDGETS``; None: TRELLIS v1's)."""
    device = torch.device(device)
    room = None
    if device.type == "cuda":
        room = (free_device_memory(device) or 0) + torch.cuda.memory_reserved(device)
    return budget_policy(device, budget_bytes, room_bytes=room, capability=device_capability(device),
                         precision=precision, offload=offload, resident=resident)


class StageOutOfMemoryError(torch.OutOfMemoryError):
    """An out-of-memory that names the stage it happened in and the memory it had: the VRAM budget (None: none
    set), the offload policy. Still a torch.OutOfMemoryError: whatever catches that (clean-up, the app's
    message) catches this."""

    def __init__(self, stage: str, budget_bytes: int | None, offload: str, detail: str):
        self.stage, self.budget_bytes, self.offload = stage, budget_bytes, offload
        if budget_bytes is None:
            budget = "no VRAM budget set"
        elif budget_bytes >= 2 ** 30:
            budget = f"a VRAM budget of {budget_bytes / 2 ** 30:.2f} GiB"
        else:
            budget = f"a VRAM budget of {budget_bytes / 2 ** 20:.0f} MiB"
        super().__init__(f"out of GPU memory in the {stage} stage ({budget}, offload {offload!r}): {detail}")


@contextlib.contextmanager
def naming_stage(stage: str, device, offload: str):
    """Turn a torch.OutOfMemoryError inside the block into a StageOutOfMemoryError naming `stage` and the budget
    of `device` (``core.device.memory_budget``); the original's traceback is dropped (its frames hold tensors)."""
    try:
        yield
    except StageOutOfMemoryError:
        raise
    except torch.OutOfMemoryError as err:
        device = torch.device(device)
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        err.__traceback__ = None
        budget = memory_budget(device) if device.type == "cuda" else None
        raise StageOutOfMemoryError(stage, budget, offload, detail) from None


@dataclass
class StageStat:
    stage: str
    seconds: float
    peak_allocated_bytes: int | None = None
    peak_reserved_bytes: int | None = None
    attention: dict | None = None     # {kernel: {"calls", "why"}} of the stage's attention calls (kernel_log)


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
            reset_peak_memory(self.device)            # a job's own peak window keeps what came before
        t0 = time.perf_counter()
        try:
            with kernel_log.recording() as kernels:
                yield
        finally:
            if cuda:
                torch.cuda.synchronize(self.device)
            stat = StageStat(name, time.perf_counter() - t0, attention=kernels or None)
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
