"""Side work on the GPU steps aside while the export runs a stage whose GPU time the whole job waits for.

``job.ExportJob`` runs the caller's side work (the app's preview video) in a thread beside the bake. Most of the
bake's stages leave the GPU idle (the decimation and the chart layout run in child processes) and the side work
fills those gaps; but the hidden-face removal's visibility renders (``cleanup.visibility``) are on the job's critical
path, and renders, kernels and Python beside them slow them down. ``GpuGate`` holds the side work's next step (its
cancel check) while the export reports one of ``YIELD_STAGES`` under way, and lets it go on at the next report of
another stage or of that stage's end. What the side work makes is the same either way.
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Iterable, Optional

__all__ = ["YIELD_STAGES", "GpuGate"]

# The export's progress stages that side work on the GPU waits through: ``cleanup.visibility``'s renders
# (docs/benchmarks/app.md#what-this-decided); () lets it run beside all of them.
YIELD_STAGES = ("visibility",)


class GpuGate:
    """Open unless the export reports a stage of ``stages`` (default ``YIELD_STAGES``) under way; ``stopped(stop)``
    is the side work's cancel check: it waits while the gate is closed and answers ``stop()`` (checked every
    ``poll_s`` meanwhile, so that a failed or cancelled job never waits on the gate)."""

    def __init__(self, stages: Optional[Iterable[str]] = None, poll_s: float = 0.005):
        self.stages = frozenset(YIELD_STAGES if stages is None else stages)
        self.poll_s = poll_s
        self.held_s = 0.0                     # how long the side work waited at the gate
        self._open = threading.Event()
        self._open.set()

    def on_progress(self, stage: str, done: int, total: int) -> None:
        """The export's progress: a stage of ``stages`` that is not yet done closes the gate, anything else opens it."""
        if stage in self.stages and done < total:
            self._open.clear()
        else:
            self._open.set()

    def release(self) -> None:
        """Open for good (the export ended or failed)."""
        self.stages = frozenset()
        self._open.set()

    def is_open(self) -> bool:
        return self._open.is_set()

    def stopped(self, stop: Callable[[], bool]) -> bool:
        """Wait while the gate is closed, then ``stop()``."""
        if not self._open.is_set():
            t0 = time.perf_counter()
            while not self._open.wait(self.poll_s):
                if stop():
                    break
            self.held_s += time.perf_counter() - t0
        return stop()
