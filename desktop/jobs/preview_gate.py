"""The preview video steps aside while the bake runs a stage whose GPU time the whole job waits for.

The preview is made in a thread beside the bake (``steps.write_outputs``). Most of the bake's stages leave the GPU
idle (the decimation and the chart layout run in child processes) and the preview fills those gaps; but the
hidden-face removal's visibility renders (``trellis.export.cleanup.visibility``) are on the job's critical path and
the preview's renders, kernels and Python beside them slow them down. ``PreviewGate`` holds the preview's next
render or encode step while one of ``YIELD_STAGES`` is reported by the bake's progress, and lets it go on at the
next report of another stage or of that stage's end. The preview's frames and file are the same either way.
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Iterable, Optional

__all__ = ["YIELD_STAGES", "PreviewGate"]

# The bake's stages (progress names) the preview waits through (docs/benchmarks/app.md#the-apps-whole-job);
# () lets it run beside all of them.
YIELD_STAGES = ("visibility",)


class PreviewGate:
    """Open unless the bake reports a stage of ``stages`` (default ``YIELD_STAGES``) under way; ``stopped(stop)`` is the preview's cancel check:
    it waits while the gate is closed and answers ``stop()`` (checked every ``poll_s`` meanwhile, so a failed or
    cancelled job never waits on the gate)."""

    def __init__(self, stages: Optional[Iterable[str]] = None, poll_s: float = 0.005):
        self.stages = frozenset(YIELD_STAGES if stages is None else stages)
        self.poll_s = poll_s
        self.held_s = 0.0                     # how long the preview waited at the gate
        self._open = threading.Event()
        self._open.set()

    def on_progress(self, stage: str, done: int, total: int) -> None:
        """The bake's progress: a stage of ``stages`` that is not yet done closes the gate, anything else opens it."""
        if stage in self.stages and done < total:
            self._open.clear()
        else:
            self._open.set()

    def release(self) -> None:
        """Open for good (the bake ended or failed)."""
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
