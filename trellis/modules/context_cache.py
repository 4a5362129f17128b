"""What a sampling run derives from its condition alone, computed at its first step and reused by the others.

A flow is called 12-50 times per run with the same condition tokens (the image's or the prompt's, and the
negative ones). Every call used to cast them to the flow's dtype and project them to each cross-attention's
keys and values again: 24 GEMMs of [2 x 1374, 1024] x [1024, 2048] and their reshapes per call of a TRELLIS
flow, the same numbers every time. Inside ``context_cache()`` (the sampler opens one per run when asked:
the pipeline does when the flows stay resident) ``for_context(key, source, make)`` returns what ``make()``
returned the last time for this ``key`` and this very ``source`` tensor, unchanged since (same object, same
version counter); otherwise it calls ``make()`` and keeps the answer (one per key) until the run ends.

Exactly the numbers of the uncached calls (the kept tensors are those results). Costs the memory of what is
kept: for the SLat flow's CFG pair ~270 MiB of fp16 keys and values over its 24 blocks, so the pipeline does
not ask for it when it offloads. Never used while a CUDA graph is being captured (a graph kept from job to job
would replay one job's keys for the next) nor under torch.compile (traced code computes them itself).
"""
from __future__ import annotations

import contextlib
from contextvars import ContextVar
from typing import Callable, Hashable, TypeVar

import torch

__all__ = ["ContextCache", "context_cache", "for_context", "active"]

T = TypeVar("T")


def _versions(source) -> tuple | None:
    """The version counters of `source` (a tensor or a tuple of tensors); None where one has none (inference
    tensors), which makes it uncacheable."""
    sources = source if isinstance(source, tuple) else (source,)
    try:
        return tuple(s._version for s in sources)
    except RuntimeError:
        return None


def _same(a, b) -> bool:
    if isinstance(a, tuple):
        return isinstance(b, tuple) and len(a) == len(b) and all(x is y for x, y in zip(a, b))
    return a is b


class ContextCache:
    """One run's cache: key -> (source, its versions, value). The entry holds its source, so the source's memory
    cannot be reused by another tensor while the entry lives (identity stays meaningful)."""

    def __init__(self):
        self._entries: dict = {}
        self.hits = self.misses = 0

    def get(self, key: Hashable, source, make: Callable[[], T]) -> T:
        versions = _versions(source)
        if versions is None:
            return make()
        entry = self._entries.get(key)
        if entry is not None and _same(entry[0], source) and entry[1] == versions:
            self.hits += 1
            return entry[2]
        self.misses += 1
        self._entries.pop(key, None)          # the old value's memory goes back before the new one is made
        value = make()
        self._entries[key] = (source, versions, value)
        return value

    def __len__(self) -> int:
        return len(self._entries)


_CURRENT: ContextVar[ContextCache | None] = ContextVar("trellis_context_cache", default=None)


@contextlib.contextmanager
def context_cache(enabled: bool = True):
    """A fresh cache for the block (per thread / task: a ``ContextVar``), dropped at its end; ``enabled=False``
    turns caching off inside the block. Yields the cache (None when disabled)."""
    cache = ContextCache() if enabled else None
    token = _CURRENT.set(cache)
    try:
        yield cache
    finally:
        _CURRENT.reset(token)


def active() -> ContextCache | None:
    return _CURRENT.get()


def _capturing(source) -> bool:
    first = source[0] if isinstance(source, tuple) else source
    return first.is_cuda and torch.cuda.is_current_stream_capturing()


def for_context(key: Hashable, source, make: Callable[[], T]) -> T:
    """``make()``, or the value it gave earlier in this run for `key` and this unchanged `source` (a tensor or a
    tuple of tensors). Outside ``context_cache()``, under torch.compile and during a CUDA graph capture: ``make()``."""
    cache = _CURRENT.get()
    if cache is None or torch.compiler.is_compiling() or _capturing(source):
        return make()
    return cache.get(key, source, make)
