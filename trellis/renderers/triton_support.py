"""When the renderers' Triton kernels may run, and what happens when one cannot.

The kernels are an optional fast path: the PyTorch code beside each one is the reference and gives the same
results. Triton needs a CUDA device it supports (compute capability 7.0 or newer here; older cards, e.g.
Pascal, take the PyTorch path) and a working compiler toolchain, which a user's machine may lack (Triton is
not installed by default on Windows). A kernel that fails to compile or launch is reported once with a
warning and switched off for the rest of the process, and the call that failed is redone by the PyTorch
path, so a broken Triton never breaks a render.
"""
from __future__ import annotations

import warnings

import torch

MIN_CAPABILITY = (7, 0)

_disabled: dict = {}   # kernel name -> why


def triton_importable() -> bool:
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:
        return False
    return True


def usable(name: str, device: torch.device) -> bool:
    """Whether kernel `name` should be tried on `device`."""
    device = torch.device(device)
    if device.type != "cuda" or name in _disabled or not triton_importable():
        return False
    try:
        return torch.cuda.get_device_capability(device) >= MIN_CAPABILITY
    except Exception:
        return False


def disable(name: str, err: BaseException) -> None:
    """Switch kernel `name` off for this process after it failed with `err` (warns once)."""
    if name not in _disabled:
        _disabled[name] = f"{type(err).__name__}: {err}"
        warnings.warn(f"the Triton kernel {name!r} failed ({_disabled[name][:300]}); using the PyTorch path "
                      "from now on (same results, slower)", RuntimeWarning, stacklevel=3)


def is_fatal(err: BaseException) -> bool:
    """Errors the PyTorch path would hit too (out of memory, cancel, Ctrl-C): these are raised, not retried."""
    from ..utils.cancel import Cancelled

    return isinstance(err, (torch.OutOfMemoryError, Cancelled, KeyboardInterrupt))
