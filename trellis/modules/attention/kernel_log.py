"""Which attention kernels a stretch of work ran, and why: the dispatcher (``functional``) notes each call's kernel
while a log is open (``StageTracker`` opens one per stage), so a job's timings say what ran in each stage.

Why is the backend asked for and who asked: "auto" (our rule, ``functional.cudnn_in_auto``) or a variable set in the
environment (the reference's ``ATTN_BACKEND`` / ``SPARSE_ATTN_BACKEND``, which override "auto"; ``backends.source``).
Calls inside ``torch.compile`` are not noted (a side effect there would break the graph); a stage replayed from a
CUDA graph runs no Python and notes nothing (its kernels are those noted when it was captured).
"""
from __future__ import annotations

import contextlib
from contextvars import ContextVar
from typing import Iterator, Optional

import torch

from ...core import backends

__all__ = ["calls_by_kernel", "note", "recording", "why"]

_OPEN: ContextVar[Optional[dict]] = ContextVar("attention_kernel_log", default=None)


def why(kind: str) -> str:
    """Why kernels of `kind` ("dense" or "varlen") are chosen as they are: "auto" or the variable that set them."""
    name, source = backends.get(kind), backends.source(kind)
    return "auto" if name == "auto" and source == "default" else f"{source}={name}"


def note(kernel: str, kind: str) -> None:
    """Count one call of `kernel` (a ``kind`` call: "dense" or "varlen") in the open log, if one is open."""
    if torch.compiler.is_compiling():
        return
    log = _OPEN.get()
    if log is None:
        return
    entry = log.get(kernel)
    if entry is None:
        entry = log[kernel] = {"calls": 0, "why": why(kind)}
    entry["calls"] += 1


@contextlib.contextmanager
def recording() -> Iterator[dict]:
    """Open a log for the calls made in this context (this thread); yields it: {kernel: {"calls", "why"}}."""
    log: dict = {}
    token = _OPEN.set(log)
    try:
        yield log
    finally:
        _OPEN.reset(token)



def calls_by_kernel(stages) -> dict:
    """{kernel: calls} summed over a pipeline call's stage records (``last_stats``: each its "attention" log)."""
    calls: dict = {}
    for stage in stages or ():
        for kernel, entry in ((stage.get("attention") if isinstance(stage, dict) else None) or {}).items():
            calls[kernel] = calls.get(kernel, 0) + int(entry.get("calls", 0))
    return calls
