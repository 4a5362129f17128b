"""Two items side by side on one device: one item's files are written while the next one samples.

An item is the app's job in two phases (worker.PHASES): the first (its input, the model, its folder, the
sampling: the GPU's part) returns the second (its files: the export's clean-up, UV layout, bake and writers, mostly
the CPU's, partly in child processes). `Overlap.run` takes the first phase under one lock and the second under
another, and is called by two threads at once (a local worker's, or a Ray actor's two concurrent calls): while one
item's files are written the next one samples, and an item that has sampled waits for the writer holding its
result, so that at most one decoded result waits: two items' memory at most, never more.

On a GPU the sampling runs on a CUDA stream of its own (started by the one starter,
trellis.core.concurrency), and the files on the default stream, as in the app's job (the export's own threads and
side streams are built around it). The writer's host waits (a render's sizes, a copy to the
host) then wait for the export's kernels only, not for the sampling's queued ahead of them on one shared stream, and
the sampling's for its own. Each phase's stream is synchronised at its end: the sampled result is complete before
another stream or thread reads it, and the writer's reads of it are done before it is let go (its memory belongs to
the sampling's stream, which may reuse it at once).

An item with a VRAM budget runs alone (both locks from its start to its end): the budget is the whole job's
(desktop.jobs.budget), and an item beside it would share it.
"""
from __future__ import annotations

import contextlib
import threading
import time
from typing import Callable, Optional

SAMPLE, WRITE = 0, 1          # the phases, in order


class Overlap:
    """The two phases' locks and streams of one device (`device`: "cpu", "cuda:0", ...)."""

    def __init__(self, device: str):
        self.device = device
        self.locks = (threading.Lock(), threading.Lock())
        self.streams = None                 # a GPU's: (the sampling's own, the default stream for the files)
        if on_gpu(device):
            import torch

            from trellis.core.concurrency import side_stream

            self.streams = (side_stream(device), torch.cuda.default_stream(torch.device(device)))

    def run(self, first: Callable[[], Optional[Callable[[], None]]], alone: bool = False) -> dict:
        """`first()` (an item's first phase, which returns its second or None: done), then its second; each under
        its lock and on its stream. `alone`: no other item runs meanwhile. Their seconds: {"sample", "export" (where
        there is a second phase), "waited" (for the writer, holding the sampled result)}. An error of either
        phase is raised once its stream is synchronised and its lock released."""
        seconds = {}
        with contextlib.ExitStack() as whole:
            if alone:                       # the same order as every item's: the sampling's lock first
                whole.enter_context(self.locks[SAMPLE])
                whole.enter_context(self.locks[WRITE])
            with (contextlib.nullcontext() if alone else self.locks[SAMPLE]):
                t = time.perf_counter()
                with self._settled(SAMPLE):
                    rest = first()
                seconds["sample"] = time.perf_counter() - t
            if rest is None:
                return seconds
            t = time.perf_counter()
            try:
                with (contextlib.nullcontext() if alone else self.locks[WRITE]):
                    seconds["waited"] = time.perf_counter() - t
                    t = time.perf_counter()
                    with self._settled(WRITE):
                        rest()
                    seconds["export"] = time.perf_counter() - t
            finally:
                rest = None                  # the result goes with it, after its stream is settled
        return seconds

    def free_memory(self) -> None:
        """Collect garbage and give cached device memory back (after a failed item), under the sampling's lock:
        emptying the cache synchronises the device, which would break a CUDA graph the sampling may be capturing."""
        import gc

        with self.locks[SAMPLE]:
            gc.collect()
            if self.streams is not None:
                import torch

                with contextlib.suppress(Exception):
                    torch.cuda.empty_cache()

    # ------------------------------------------------------------------ streams
    @contextlib.contextmanager
    def _settled(self, phase: int):
        """The block on the phase's stream (a GPU), which is synchronised after it; a failure of the block is the one
        raised."""
        if self.streams is None:
            yield
            return
        import torch

        stream = self.streams[phase]
        failed = False
        try:
            with torch.cuda.stream(stream):
                yield
        except BaseException:
            failed = True
            raise
        finally:
            try:
                stream.synchronize()
            except Exception:
                if not failed:
                    raise


def on_gpu(device: str) -> bool:
    """Whether `device` names a CUDA device this process can use."""
    if not str(device).startswith("cuda"):
        return False
    import torch

    return torch.cuda.is_available()
