"""Optional fast kernels and the PyTorch twins they must equal: the one place that decides which runs.

Every fast path is a pair with the same arguments:

* the **twin**: a named pure-PyTorch function inside ``trellis/`` — the reference, correct on any device,
  and written to be fast on its own (vectorised, no host syncs in loops), because it is what users without
  Triton get (PyTorch's Windows wheels ship none; Pascal cards and broken toolchains land here too);
* the **kernel**: a function of the same name and arguments in an optional package under ``extensions/``
  (e.g. ``trellis_triton``), which must give the twin's result (exact keys for rasterisation, stated
  tolerances for compositing; ``tests/gpu/`` checks every pair).

``dispatch(name, device, twin, *args)`` runs the kernel where ``usable`` allows, else the twin. A kernel
may return ``NotImplemented`` for inputs it does not handle (e.g. float64): the twin then runs and the
kernel stays on. A kernel that fails to compile or launch warns once, is switched off for the rest of the
process, and the call is redone by the twin (after ``on_failure`` has reset any in-place output), so a
broken toolchain never breaks a render. Errors the twin would hit too (out of memory, cancel, Ctrl-C) are
raised, not retried.

One setting turns every fast path off: the environment variable ``TRELLIS_FAST_PATHS=off`` (read at
each call; also ``0``/``false``/``no``), or ``set_enabled(False)`` in this process (``None`` returns to
the environment's choice). Use it for tests, benchmarks ("as on Windows") and support.

Kernel packages are imported as installed packages first; in a source checkout the sibling
``extensions/<package>/`` folder is used when they are not installed.
"""
from __future__ import annotations

import importlib
import os
import sys
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

__all__ = ["KERNELS", "ENV_VAR", "enabled", "set_enabled", "usable", "reason_off", "dispatch", "disable",
           "is_fatal", "status", "describe", "triton_importable"]

ENV_VAR = "TRELLIS_FAST_PATHS"
_OFF_VALUES = {"0", "off", "false", "no", "disable", "disabled", "pytorch"}
# Triton's own floor for NVIDIA GPUs (Volta); Pascal and older take the twins.
MIN_CAPABILITY = (7, 0)
EXTENSIONS_DIR = Path(__file__).resolve().parents[1] / "extensions"


@dataclass(frozen=True)
class Kernel:
    name: str       # dispatcher name
    module: str     # importable module holding the kernel function
    function: str   # function name (the same arguments as the twin)
    twin: str       # dotted path of the PyTorch twin (documentation and tests)
    backend: str    # "triton"


KERNELS = {k.name: k for k in (
    Kernel("gaussian_composite", "trellis_triton.gaussian_composite", "composite",
           "trellis.renderers.gaussian_render.composite_torch", "triton"),
    Kernel("mesh_raster", "trellis_triton.mesh_raster", "raster_keys",
           "trellis.renderers.mesh_render.raster_keys_torch", "triton"),
)}

_override: Optional[bool] = None
_disabled: dict = {}          # kernel name -> why it was switched off in this process
_lock = threading.Lock()


def set_enabled(flag: Optional[bool]) -> None:
    """Force the fast paths on (True) or off (False) in this process; None: follow ``TRELLIS_FAST_PATHS``."""
    global _override
    _override = None if flag is None else bool(flag)


def enabled() -> bool:
    """Whether fast paths may run at all (the one switch)."""
    if _override is not None:
        return _override
    return os.environ.get(ENV_VAR, "on").strip().lower() not in _OFF_VALUES


def triton_importable() -> bool:
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:
        return False
    return True


def _import_kernel_module(module: str):
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
    if backend == "triton":
        if device.type != "cuda":
            return f"Triton kernels run on CUDA only (device {device})"
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
    return f"unknown backend {backend!r}"


def reason_off(name: str, device) -> Optional[str]:
    """Why kernel ``name`` will not run on ``device`` (None: it will be tried)."""
    if not enabled():
        return f"fast paths are switched off ({ENV_VAR}=off)"
    kernel = KERNELS[name]
    if name in _disabled:
        return f"switched off after a failure: {_disabled[name]}"
    why = _backend_reason(kernel.backend, torch.device(device))
    if why:
        return why
    try:
        _import_kernel_module(kernel.module)
    except Exception as err:
        return f"the kernel package is not importable ({type(err).__name__}: {err})"
    return None


def usable(name: str, device) -> bool:
    """Whether kernel ``name`` should be tried on ``device``."""
    return reason_off(name, device) is None


def disable(name: str, err: BaseException) -> None:
    """Switch kernel ``name`` off for this process after it failed with ``err`` (warns once)."""
    with _lock:
        if name in _disabled:
            return
        _disabled[name] = f"{type(err).__name__}: {err}"[:300]
    warnings.warn(f"the fast kernel {name!r} failed ({_disabled[name]}); using its PyTorch twin from now on "
                  "(same results, slower)", RuntimeWarning, stacklevel=3)


def is_fatal(err: BaseException) -> bool:
    """Errors the twin would hit too (out of memory, cancel, Ctrl-C): raised, not retried."""
    from .utils.cancel import Cancelled

    return isinstance(err, (torch.OutOfMemoryError, Cancelled, KeyboardInterrupt))


def dispatch(name: str, device, twin: Callable, *args, on_failure: Optional[Callable[[], None]] = None,
             **kwargs):
    """Run kernel ``name`` with ``args``/``kwargs`` where usable, else (or if it fails) ``twin``."""
    if usable(name, device):
        k = KERNELS[name]
        try:
            fn = getattr(_import_kernel_module(k.module), k.function)
            out = fn(*args, **kwargs)
            if out is not NotImplemented:
                return out
        except Exception as err:
            if is_fatal(err):
                raise
            disable(name, err)
            if on_failure is not None:
                on_failure()
    return twin(*args, **kwargs)


def status(device=None) -> dict:
    """Which path each kernel takes on ``device`` (default: the first CUDA device, else CPU).

    ``{"device": str, "enabled": bool, "fast": bool (every kernel on), "kernels": {name: None | why off},
    "reason": None | the first reason a kernel is off}``.
    """
    if device is None:
        device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(device)
    kernels = {name: reason_off(name, device) for name in KERNELS}
    reasons = [r for r in kernels.values() if r]
    return {"device": str(device), "enabled": enabled(), "fast": not reasons, "kernels": kernels,
            "reason": reasons[0] if reasons else None}


def describe(device=None) -> str:
    """One line for the log and the UI: which path the renderers take and, if the slower one, why."""
    st = status(device)
    if st["fast"]:
        return "fast paths on (Triton kernels)"
    if torch.device(st["device"]).type == "cpu":
        return "CPU: PyTorch paths (no GPU kernels)"
    return f"slower path: PyTorch twins ({st['reason']})"
