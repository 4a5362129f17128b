"""Cancel inside one network's forward pass: a decoder on a CPU runs for seconds to minutes in one call, and the
cooperative checks between calls would let a cancel wait for all of it."""
from __future__ import annotations

import contextlib
import contextvars

from .callbacks import CancelCheck, check

__all__ = ["checked_between_modules", "check_active"]

# The cancel of the forward pass under way in this thread: the steps a network's forward runs outside its modules
# (a decoder's surface extraction) ask it through check_active.
ACTIVE: contextvars.ContextVar = contextvars.ContextVar("trellis_active_cancel", default=None)


def check_active() -> None:
    """Cancelled when the forward pass under way (checked_between_modules) was asked to stop; else nothing."""
    check(ACTIVE.get())


@contextlib.contextmanager
def checked_between_modules(module, cancel: CancelCheck):
    """While it lasts, each call of `module` or one of its submodules on the CPU first asks `cancel` (Cancelled when
    it says stop): a forward pass stops at its next layer (and at the next check_active of its other steps). Nothing is hooked on another device (a GPU's pass takes
    seconds, and hooks would change what a compiled or graphed network runs) or without a `cancel`."""
    device = next((p.device for p in module.parameters()), None)
    if cancel is None or device is None or device.type != "cpu":
        yield
        return

    def ask(_module, _inputs):
        check(cancel)
    handles = [m.register_forward_pre_hook(ask) for m in module.modules()]
    token = ACTIVE.set(cancel)
    try:
        yield
    finally:
        ACTIVE.reset(token)
        for handle in handles:
            handle.remove()
