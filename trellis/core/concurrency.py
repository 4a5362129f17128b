"""The only ways the library and the app run work beside other work: threads, child processes and CUDA streams.

``trellis.export.ExportJob`` decides what overlaps what across a job's files; the export's stages, the model
loader's copy stream, the sampler's capture stream and the app (its workers, batch, signals, file manager) ask here
for the threads, children and streams of their own overlaps. Every one is started in this module (a structure test,
tests/test_concurrency.py, scans all of trellis/ and desktop/), so that the schedule is read from its
callers (trellis/export/DESIGN.md lists the export's). In the bottom layer, so that every layer can reach it. Light
to import: the chart layout's child process imports modules that import this one, so torch is imported only where a
stream is asked for.
"""
from __future__ import annotations

import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any, Callable, Optional

__all__ = ["start_thread", "new_thread", "Background", "thread_pool", "run_together", "start_child", "open_detached",
           "start_process", "side_stream", "on_own_stream"]


def new_thread(fn: Callable[..., Any], name: Optional[str] = None, args: tuple = ()) -> threading.Thread:
    """A daemon thread that will run ``fn(*args)``, named ``name``, not started yet (its owner starts it)."""
    return threading.Thread(target=fn, name=name, args=args, daemon=True)


def start_thread(fn: Callable[..., Any], name: Optional[str] = None, args: tuple = ()) -> threading.Thread:
    """``fn(*args)`` in a daemon thread named ``name``, started now (``fn`` keeps its own errors and results)."""
    thread = new_thread(fn, name, args)
    thread.start()
    return thread


class Background:
    """``fn()`` in a daemon thread from now on; ``result()`` waits and returns its value, or raises its error in the
    caller's thread; ``seconds``: how long ``fn`` ran (after the wait)."""

    def __init__(self, name: str, fn: Callable[[], Any]):
        self.box: dict = {}

        def run():
            t = time.perf_counter()
            try:
                self.box["value"] = fn()
            except BaseException as err:        # re-raised in the caller's thread by result()
                self.box["error"] = err
            finally:
                self.box["seconds"] = time.perf_counter() - t
        self.thread = start_thread(run, name)

    def running(self) -> bool:
        return self.thread.is_alive()

    def join(self) -> None:
        self.thread.join()

    @property
    def seconds(self) -> float:
        """How long ``fn`` ran (after join)."""
        return self.box["seconds"]

    def value_if_any(self):
        """The value after join, None where ``fn`` failed."""
        self.join()
        return self.box.get("value")

    def result(self):
        self.join()
        if "error" in self.box:
            raise self.box["error"]
        return self.box["value"]


def thread_pool(workers: int, name: str) -> ThreadPoolExecutor:
    """A pool of ``workers`` threads named ``name``-N (a context manager; ``shutdown(wait=False)`` lets the tasks
    under way end by themselves)."""
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)


def run_together(calls: dict, name: str) -> list:
    """[(key, value, seconds)] of ``calls`` ({key: fn}) run one thread each, in ``calls``' order; every call has
    ended (its file complete, or gone) before this returns or raises the first error in that order."""
    def one(key, fn):
        t = time.perf_counter()
        value = fn()
        return key, value, time.perf_counter() - t

    with thread_pool(len(calls), name) as pool:
        futures = [pool.submit(one, key, fn) for key, fn in calls.items()]
        wait(futures)
    return [future.result() for future in futures]


def start_child(argv: list, cwd: str, env: Optional[dict] = None, stdin: bool = False,
                keep_stderr: bool = False) -> subprocess.Popen:
    """``argv`` as a child process in ``cwd`` (stdin a pipe with ``stdin``, else nothing; stdout discarded; stderr
    a pipe with ``keep_stderr``); OSError where it cannot start."""
    return subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE if keep_stderr else subprocess.DEVNULL)


def open_detached(argv: list) -> subprocess.Popen:
    """``argv`` started in a session of its own, never waited for (a window the user owns from then on, e.g. a file
    manager); no stdin, its output discarded; OSError where it cannot start."""
    import os

    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=os.name != "nt")


def start_process(context, target: Callable[..., Any], args: tuple, name: str):
    """``target(*args)`` in a daemon child process of the ``multiprocessing`` ``context`` (e.g. "spawn"'s), named
    ``name``, started now."""
    proc = context.Process(target=target, args=args, name=name, daemon=True)
    proc.start()
    return proc


def side_stream(device):
    """A CUDA stream of its own on ``device`` (None on any other device): what is queued there waits for its own
    kernels only, not for those queued meanwhile on the default stream."""
    import torch

    return torch.cuda.Stream(device) if torch.device(device).type == "cuda" else None


def on_own_stream(device, fn: Callable[[], Any]):
    """``fn()`` on a CUDA stream of its own where ``device`` is a GPU (its waits, a render's sizes or a frame's copy to
    the host, then wait for its own kernels, not for the export's queued before them); ``fn()`` elsewhere."""
    stream = side_stream(device)
    if stream is None:
        return fn()
    import torch

    stream.wait_stream(torch.cuda.current_stream(device))     # what was queued before (the Gaussians) is complete
    with torch.cuda.stream(stream):
        out = fn()
    stream.synchronize()
    return out
