"""The library's choices that really depend on the machine, in one object: each field says what it picks, why it
is a per-machine choice and which benchmark decided its default. Benchmarks and tests set ``TUNING``'s fields
(``with tuned(field=value): ...``) instead of patching module names; everything else is a fixed decision in code.
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Optional

__all__ = ["Tuning", "TUNING", "tuned"]


@dataclass
class Tuning:
    """One field per per-machine choice (None: decided by the device at run time)."""

    # "auto" attention asks for cuDNN first from this many query tokens a sequence (Hopper or newer, fast paths on;
    # FlashAttention-2, its twin, below); per machine: where cuDNN's per-call gain outweighs its plans depends on the
    # GPU and its cuDNN build, measured by the sweep of
    # docs/benchmarks/trellis2.md#attention-flashattention-2-varlen-against-cudnn-bf16-12-heads-of-128-one-sequence
    cudnn_min_tokens: int = 16384
    # The export's chart layout runs in a warm child process (True) or a thread (False) where it overlaps the view
    # renders; None: a child on an accelerator (the renders' Python then keeps the GIL), a thread on a CPU (the layout
    # keeps its cores busy itself); the same atlas either way
    # (docs/benchmarks/app.md#the-chart-layout-in-a-child-process)
    uv_in_child: Optional[bool] = None
    # The "fast" bake prepares the views rendered ahead (raster, pixel tests) while the UV unwrap runs (True) or after
    # it (False); None: where the views wait on the device, which has the room (docs/benchmarks/export.md#memory)
    prepare_ahead: Optional[bool] = None
    # The prepared views are folded into the bake's sums in batches (True) or one by one (False); None: batches on a
    # GPU (fewer kernel launches), one by one on a CPU, which gains nothing (docs/benchmarks/export.md#texture-bake)
    fold_in_batches: Optional[bool] = None


TUNING = Tuning()


@contextlib.contextmanager
def tuned(**fields):
    """``TUNING`` with ``fields`` changed inside the block, restored after it (an unknown name is a TypeError)."""
    names = {f.name for f in dataclasses.fields(Tuning)}
    unknown = set(fields) - names
    if unknown:
        raise TypeError(f"unknown tuning field(s) {sorted(unknown)}; known: {sorted(names)}")
    before = {k: getattr(TUNING, k) for k in fields}
    for k, v in fields.items():
        setattr(TUNING, k, v)
    try:
        yield TUNING
    finally:
        for k, v in before.items():
            setattr(TUNING, k, v)
