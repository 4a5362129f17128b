"""Optional fast kernels and the PyTorch twins they must equal: the one place that decides which runs.

Every fast path is a pair (or more) with the same arguments:

* the **twin**: a named pure-PyTorch function inside ``trellis/`` — the reference, correct on any device,
  and written to be fast on its own (vectorised, no host syncs in loops), because it is what users get
  when no kernel can run;
* one or more **kernels**: functions of the same arguments in optional packages under ``extensions/``,
  each of which must give the twin's result (exact keys for rasterisation, stated tolerances for
  compositing; ``tests/gpu/`` checks every pair). Backends, tried in the order ``KERNELS`` lists a pair's kernels
  (Triton first, unless the row says why not):

  - ``triton`` (``trellis_triton``): Linux wheels of PyTorch bring Triton; on Windows the
    ``triton-windows`` wheel (the installer adds it); compute capability >= 7.0;
  - ``nvrtc`` (``trellis_nvrtc``): CUDA C compiled at run time by the NVRTC inside PyTorch's CUDA wheels
    (``torch.cuda._compile_kernel``: no host compiler, no Triton; Windows and Pascal cards included). A
    private PyTorch API: only ever called behind this fallback.

``dispatch(name, device, twin, *args)`` runs the first usable kernel, else the twin. A kernel may
return ``NotImplemented`` for inputs it does not handle (e.g. float64): the next one (finally the twin)
runs and the kernel stays on. A kernel that fails to compile or launch warns once, is switched off for
the rest of the process, and the call is redone by the next backend or the twin (after ``on_failure``
has reset any in-place output), so a broken toolchain never breaks a render. Errors the twin would hit
too (out of memory, cancel, Ctrl-C) are raised, not retried. Which path answered is therefore known only after
the call: ``with paths_taken() as taken:`` around calls gives ``{name: "triton" | "nvrtc" | "pytorch"}``, the path
that answered each name's last dispatch in the block (this thread's), e.g. for the attention kernel log.

One setting: the environment variable ``TRELLIS_FAST_PATHS`` (read at each call): ``on`` (default,
every backend in order; also ``1``/``true``/``yes``/``auto``), ``off`` (also ``0``/``false``/``no``/
``pytorch``: twins only — "as on a machine without kernels"), or one backend's name (``triton`` /
``nvrtc``: only that one, for benchmarks and support); any other value is refused with a ValueError
that lists these. ``set_enabled(False)`` turns them off in this process, ``set_enabled(True)``
turns them on (keeping a backend named by the variable), ``set_enabled(None)`` follows the variable.

Kernel packages are imported as installed packages first; in a source checkout the sibling
``extensions/<package>/`` folder is used when they are not installed.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import os
import sys
import threading
import warnings
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch

__all__ = ["KERNELS", "BACKENDS", "ENV_VAR", "enabled", "set_enabled", "usable", "reason_off", "dispatch",
           "disable", "is_fatal", "status", "describe", "triton_importable", "path_of", "paths_taken"]

ENV_VAR = "TRELLIS_FAST_PATHS"
_OFF_VALUES = {"0", "off", "false", "no", "disable", "disabled", "pytorch"}
BACKENDS = ("triton", "nvrtc")
# Triton's own floor for NVIDIA GPUs (Volta); Pascal and older take NVRTC kernels or the twins.
MIN_CAPABILITY = (7, 0)
EXTENSIONS_DIR = Path(__file__).resolve().parents[1] / "extensions"


@dataclass(frozen=True)
class Kernel:
    name: str       # dispatcher name (the pair's)
    backend: str    # "triton" | "nvrtc"
    module: str     # importable module holding the kernel function
    function: str   # function name (the same arguments as the twin)
    twin: str       # dotted path of the PyTorch twin (documentation and tests)

    @property
    def key(self) -> str:
        return f"{self.name}:{self.backend}"

    def load(self) -> Callable:
        """The kernel function, its package imported as ``dispatch`` imports it (installed, else from
        ``extensions/``); raises when the package cannot be imported."""
        return getattr(_import_kernel_module(self.module), self.function)


_GAUSS_TWIN = "trellis.renderers.gaussian_render.composite_torch"
_RASTER_TWIN = "trellis.renderers.mesh_render.raster_keys_torch"
_SETUP_TWIN = "trellis.renderers.mesh_render.triangle_setup_torch"
# name -> its kernels in the order they are tried.
KERNELS = {
    "gaussian_composite": (
        Kernel("gaussian_composite", "triton", "trellis_triton.gaussian_composite", "composite", _GAUSS_TWIN),
        Kernel("gaussian_composite", "nvrtc", "trellis_nvrtc.gaussian_composite", "composite", _GAUSS_TWIN),
    ),
    # The rasteriser's triangle set-up (edge equations, boxes, depth planes) as one kernel instead of ~100 PyTorch
    # element-wise launches: the hidden-face removal sets up 1000 views x the mesh's faces.
    "mesh_setup": (
        Kernel("mesh_setup", "triton", "trellis_triton.mesh_setup", "triangle_setup", _SETUP_TWIN),
        Kernel("mesh_setup", "nvrtc", "trellis_nvrtc.mesh_setup", "triangle_setup", _SETUP_TWIN),
    ),
    # NVRTC first: its scanline spans (a warp per row tile, shuffles) evaluate only covered pixels and take half the
    # Triton kernel's time, whose lane per candidate of the box is kept second (docs/benchmarks/kernels.md#visibility).
    "mesh_raster": (
        Kernel("mesh_raster", "nvrtc", "trellis_nvrtc.mesh_raster", "raster_keys", _RASTER_TWIN),
        Kernel("mesh_raster", "triton", "trellis_triton.mesh_raster", "raster_keys", _RASTER_TWIN),
    ),
    # Submanifold sparse conv (the decoders' and the SLat flow's): implicit GEMM in Triton, else in CUDA C on
    # tensor cores through NVRTC (fp16/bf16, sm_75+); then spconv when installed, else the twin (see
    # sparse.conv.submanifold_conv3d).
    "sparse_conv3d": (
        Kernel("sparse_conv3d", "triton", "trellis_triton.sparse_conv", "submanifold_conv3d",
               "trellis.modules.sparse.conv.submanifold_conv3d_torch"),
        Kernel("sparse_conv3d", "nvrtc", "trellis_nvrtc.sparse_conv", "submanifold_conv3d",
               "trellis.modules.sparse.conv.submanifold_conv3d_torch"),
    ),
    # The flow blocks' residual sum + LayerNorm + adaLN modulation, and their q/k RMS norms, one kernel each in
    # eager mode (NVRTC only: it runs wherever PyTorch's CUDA wheels do, Windows included; under torch.compile
    # Inductor fuses the twins itself).
    "norm_modulate": (
        Kernel("norm_modulate", "nvrtc", "trellis_nvrtc.block_norm", "norm_modulate",
               "trellis.modules.transformer.norm_modulate_torch"),
    ),
    "head_rms_norm": (
        Kernel("head_rms_norm", "nvrtc", "trellis_nvrtc.block_norm", "head_rms_norm",
               "trellis.modules.transformer.head_rms_norm_torch"),
    ),
    # The blocks' last residual sum x + gate * y (a gate that broadcasts per item): one vectorised pass.
    "gated_residual": (
        Kernel("gated_residual", "nvrtc", "trellis_nvrtc.block_norm", "gated_residual",
               "trellis.modules.transformer.gated_residual"),
    ),
    # The MLPs' Linear + tanh-GELU as one GEMM with cuBLASLt's GELU epilogue (torch._addmm_activation: a library in
    # PyTorch's CUDA wheels behind a private entry point, so under the NVRTC backend's terms: no Triton, Windows too).
    "linear_gelu": (
        Kernel("linear_gelu", "nvrtc", "trellis_nvrtc.gemm_epilogue", "linear_gelu",
               "trellis.modules.transformer.linear_gelu_torch"),
    ),
    # A flow's transformer block compiled by torch.compile (Inductor emits Triton); only asked for when the
    # memory policy's `compile` is on (the first call of a process compiles for seconds).
    "flow_block": (
        Kernel("flow_block", "triton", "trellis_triton.compiled_block", "flow_block",
               "trellis.modules.transformer.block_forward_torch"),
    ),
    # 8-bit attention (per-block int8 Q.K^T, e4m3 P.V): only when the user asks for it (an approximation).
    "attention_8bit": (
        Kernel("attention_8bit", "triton", "trellis_triton.attention_8bit", "attention_8bit",
               "trellis.modules.attention.quantised.attention_8bit_torch"),
    ),
}

# Kernels asked for only when a setting wants them (flow_block: the memory policy's `compile`; attention_8bit: the
# 8-bit attention setting): one that cannot run
# slows no default path, so ``status()["fast"]`` and ``describe()`` judge the others and name these apart.
ON_DEMAND = frozenset({"flow_block", "attention_8bit"})

_override: Optional[bool] = None
_disabled: dict = {}          # "name:backend" -> why it was switched off in this process
_lock = threading.Lock()


def set_enabled(flag: Optional[bool]) -> None:
    """Force the fast paths on (True) or off (False) in this process; None: follow ``TRELLIS_FAST_PATHS``."""
    global _override
    _override = None if flag is None else bool(flag)


_ON_VALUES = {"", "on", "1", "true", "yes", "auto"}


def _setting() -> str:
    raw = os.environ.get(ENV_VAR, "on")
    value = raw.strip().lower()
    if value in _OFF_VALUES:
        value = "off"
    elif value in _ON_VALUES:
        value = "on"
    elif value not in BACKENDS:
        raise ValueError(f"{ENV_VAR}={raw!r} is not a known value: use on (the default), off, "
                         f"{' or '.join(BACKENDS)}")
    if _override is False:
        return "off"
    if _override is True and value == "off":
        return "on"
    return value


def enabled() -> bool:
    """Whether fast paths may run at all (the one switch)."""
    return _setting() != "off"


@functools.lru_cache(maxsize=None)
def triton_importable() -> bool:
    """Whether Triton imports (asked once per process: a failed import is not cached by Python, and
    this is consulted on every dispatch)."""
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:
        return False
    return True


def _import_kernel_module(module: str):
    loaded = sys.modules.get(module)
    if loaded is not None:
        return loaded
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        top = module.split(".")[0]
        project = EXTENSIONS_DIR / top          # extensions/<package>/<package>/__init__.py
        if err.name != top or not (project / top / "__init__.py").is_file():
            raise
    # A source checkout: the package lives in ../extensions/<package> and is not installed.
    with _lock:
        if str(project) not in sys.path:
            sys.path.append(str(project))
    return importlib.import_module(module)


def _backend_reason(backend: str, device: torch.device) -> Optional[str]:
    if device.type != "cuda":
        return f"the GPU kernels run on CUDA only (device {device})"
    if backend == "triton":
        try:
            cap = torch.cuda.get_device_capability(device)
        except Exception as err:  # pragma: no cover - broken driver
            return f"could not read the GPU's compute capability ({err})"
        if cap < MIN_CAPABILITY:
            return (f"compute capability {cap[0]}.{cap[1]} is below {MIN_CAPABILITY[0]}.{MIN_CAPABILITY[1]}, "
                    "the oldest Triton supports")
        if not triton_importable():
            return ("Triton is not installed (PyTorch's Windows wheels ship none: install the "
                    "triton-windows wheel)" if sys.platform == "win32" else "Triton is not installed")
        return None
    if backend == "nvrtc":
        if not callable(getattr(torch.cuda, "_compile_kernel", None)):
            return "this PyTorch has no torch.cuda._compile_kernel (NVRTC)"
        return None
    return f"unknown backend {backend!r}"


def _kernel_reason(kernel: Kernel, device: torch.device, setting: str) -> Optional[str]:
    if setting == "off":
        return f"fast paths are switched off ({ENV_VAR}=off)"
    if setting in BACKENDS and kernel.backend != setting:
        return f"{ENV_VAR}={setting}"
    if kernel.key in _disabled:
        return f"switched off after a failure: {_disabled[kernel.key]}"
    why = _backend_reason(kernel.backend, device)
    if why:
        return why
    try:
        _import_kernel_module(kernel.module)
    except Exception as err:
        return f"the kernel package is not importable ({type(err).__name__}: {err})"
    return None


# _usable_kernels' answers: (name, device, raw setting, override) -> (kernels, _disabled, len(_disabled),
# _backend_reason, usable). The flows' blocks dispatch ~150 times per network pass, where the eager steps wait on
# the host: each answer is worked out once and reused while nothing it depends on changed (the setting is still
# read at every call; a failure switching a kernel off, another override or kernel table gives a new answer).
_usable_memo: dict = {}


def _usable_kernels(name: str, device) -> list:
    device, kernels = torch.device(device), KERNELS[name]
    key = (name, device, os.environ.get(ENV_VAR), _override)
    hit = _usable_memo.get(key)
    if (hit is not None and hit[0] is kernels and hit[1] is _disabled and hit[2] == len(_disabled)
            and hit[3] is _backend_reason):
        return hit[4]
    setting = _setting()
    usable = [k for k in kernels if _kernel_reason(k, device, setting) is None]
    if len(_usable_memo) > 256:
        _usable_memo.clear()
    _usable_memo[key] = (kernels, _disabled, len(_disabled), _backend_reason, usable)
    return usable


def reason_off(name: str, device) -> Optional[str]:
    """Why no kernel of ``name`` will run on ``device`` (None: at least one will be tried)."""
    device, setting = torch.device(device), _setting()
    reasons = [(k.backend, _kernel_reason(k, device, setting)) for k in KERNELS[name]]
    if any(r is None for _, r in reasons):
        return None
    if setting == "off":
        return reasons[0][1]
    return "; ".join(f"{backend}: {r}" for backend, r in reasons)


def usable(name: str, device) -> bool:
    """Whether a kernel of ``name`` will be tried on ``device``."""
    return reason_off(name, device) is None


def path_of(name: str, device) -> str:
    """The backend that runs ``name`` on ``device`` now ("triton", "nvrtc") or "pytorch" (the twin)."""
    kernels = _usable_kernels(name, device)
    return kernels[0].backend if kernels else "pytorch"


def disable(key: str, err: BaseException) -> None:
    """Switch kernel ``key`` ("name:backend", or a bare name: all its backends) off for this process after
    it failed with ``err`` (warns once)."""
    keys = [k.key for k in KERNELS[key]] if key in KERNELS else [key]
    with _lock:
        new = [k for k in keys if k not in _disabled]
        for k in new:
            _disabled[k] = f"{type(err).__name__}: {err}"[:300]
    if new:
        warnings.warn(f"the fast kernel {new[0]!r} failed ({_disabled[new[0]]}); using the next path from now on "
                      "(the PyTorch twin gives the same results, slower)", RuntimeWarning, stacklevel=3)


def is_fatal(err: BaseException) -> bool:
    """Errors the twin would hit too (out of memory, cancel, Ctrl-C): raised, not retried."""
    from .core.callbacks import Cancelled

    return isinstance(err, (torch.OutOfMemoryError, Cancelled, KeyboardInterrupt))


# The paths_taken() blocks open in this context: a ContextVar, so each thread (a job's worker) sees only its own.
_TAKEN: ContextVar[tuple] = ContextVar("fastpaths_taken", default=())


@contextlib.contextmanager
def paths_taken() -> Iterator[dict]:
    """Note which path answers the dispatches made in this block on this thread; yields ``{name: path}``, the
    backend ("triton", "nvrtc") or "pytorch" (the twin) that returned the result of ``name``'s last dispatch (not
    ``path_of``'s first choice: a kernel may decline the inputs or fail). Blocks nest: each open one is told.
    Calls traced by torch.compile are not noted (a side effect there would break the graph)."""
    taken: dict = {}
    token = _TAKEN.set(_TAKEN.get() + (taken,))
    try:
        yield taken
    finally:
        _TAKEN.reset(token)


def _answered(name: str, path: str) -> None:
    if torch.compiler.is_compiling():
        return
    for taken in _TAKEN.get():
        taken[name] = path


def dispatch(name: str, device, twin: Callable, *args, on_failure: Optional[Callable[[], None]] = None,
             **kwargs):
    """Run the first usable kernel of ``name`` with ``args``/``kwargs``, else (or after failures) ``twin``; the path
    that answered is told to the open ``paths_taken`` blocks."""
    device = torch.device(device)
    for k in _usable_kernels(name, device):
        try:
            fn = getattr(_import_kernel_module(k.module), k.function)
            # Kernels launch on the current CUDA device: make it the data's (cuda:1 from a thread whose
            # current device is cuda:0 would otherwise run on the wrong GPU). Switching costs microseconds, which
            # the blocks' norm kernels (~100 calls per network pass) notice: only when it is another device.
            # (No torch.cuda.is_available() here: it reads the environment at every call, and a CUDA device
            # with an index reaches this point only from tensors that live on it.)
            switch = (device.type == "cuda" and device.index is not None
                      and device.index != torch.cuda.current_device())
            with torch.cuda.device(device) if switch else contextlib.nullcontext():
                out = fn(*args, **kwargs)
            if out is not NotImplemented:
                _answered(name, k.backend)
                return out
        except Exception as err:
            if is_fatal(err):
                raise
            disable(k.key, err)
            if on_failure is not None:
                on_failure()
    out = twin(*args, **kwargs)
    _answered(name, "pytorch")
    return out


def status(device=None) -> dict:
    """Which path each kernel takes on ``device`` (default: the first CUDA device, else CPU).

    ``{"device": str, "enabled": bool, "fast": bool (every kernel has a usable fast path),
    "kernels": {name: None | why none runs}, "paths": {name: "triton" | "nvrtc" | "pytorch"},
    "reason": None | the first reason a kernel is off}``. "fast" and "reason" leave out the ``ON_DEMAND``
    kernels (their entries in "kernels" and "paths" say how they stand).
    """
    if device is None:
        device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(device)
    kernels = {name: reason_off(name, device) for name in KERNELS}
    reasons = [r for name, r in kernels.items() if r and name not in ON_DEMAND]
    return {"device": str(device), "enabled": enabled(), "fast": not reasons, "kernels": kernels,
            "paths": {name: path_of(name, device) for name in KERNELS},
            "reason": reasons[0] if reasons else None}


_LABEL = {"triton": "Triton", "nvrtc": "NVRTC", "pytorch": "PyTorch twin"}


def describe(device=None) -> str:
    """One line for the log and the UI: which path the renderers take and, if a slower one, why."""
    st = status(device)
    if torch.device(st["device"]).type == "cpu":
        return "CPU: PyTorch paths (no GPU kernels)"
    paths = {name: p for name, p in st["paths"].items() if name not in ON_DEMAND}
    off = [f"{name} off: {st['kernels'][name]}" for name in st["paths"] if name in ON_DEMAND and st["kernels"][name]]
    used = sorted(set(paths.values()))
    if st["fast"]:
        return f"fast paths on ({' + '.join(_LABEL[u] for u in used)} kernels{''.join('; ' + o for o in off)})"
    if not any(p != "pytorch" for p in paths.values()):
        return f"slower path: PyTorch twins ({st['reason']})"
    parts = ", ".join(f"{name}: {_LABEL[p]}" for name, p in paths.items())
    return f"partly fast ({parts}; {st['reason']})"
