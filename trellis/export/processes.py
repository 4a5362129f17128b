"""Child Python processes for the export's native steps (fast-simplification, xatlas), and a pool of warm ones.

Those libraries hold the GIL for seconds and cannot be interrupted (xatlas can even crash), so they run in a
child of the same interpreter and environment, fed and read through ``.npz`` files in a folder of the
caller's; the caller polls the child, so its GPU work goes on meanwhile, and ends it on cancel or timeout
(``stop``: asked, then killed after ``STOP_GRACE_S``, always reaped). A child starts in a folder where nothing can
shadow a module: any folder with Python's ``-P``, else an empty one of its own.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from typing import Iterable, Optional

from ..core.concurrency import start_child, start_thread

__all__ = ["SAFE_PATH", "CHILD_HEAP", "CHILD_TRIM_S", "STOP_GRACE_S", "REAP_EVERY_S", "child_environment", "start",
           "stop", "stop_all", "served_child_code", "working_folder", "usable_cores", "take", "give_back",
           "pooled_children", "pooled_processes", "drain_pool"]

# Python 3.11+ ``-P``: the working folder is not put on the child's sys.path, so any folder may be its working
# folder (nothing there can shadow a module); older Pythons need an empty folder of its own.
SAFE_PATH = sys.version_info >= (3, 11)


# glibc's heap settings for a child started with ``keep_heap`` (other C libraries ignore them; a value set in the
# environment already wins): blocks up to 256 MiB come from the heap and up to 512 MiB of freed heap is kept, so a
# warm child's next call reuses its pages instead of faulting in fresh zeroed ones (thousands of faults per chart
# layout; docs/benchmarks/export.md#uv-unwrap). An idle child holds its last call's peak (tens of MiB) meanwhile.
CHILD_HEAP = {"MALLOC_MMAP_THRESHOLD_": str(256 << 20), "MALLOC_TRIM_THRESHOLD_": str(512 << 20),
              "MALLOC_TOP_PAD_": str(64 << 20)}


def child_environment() -> dict:
    """This process's environment with ``CHILD_HEAP`` added where not set (empty ``CHILD_HEAP``: unchanged)."""
    return {**CHILD_HEAP, **os.environ}


def start(code: str, args, cwd: str, keep_stderr: bool = False, stdin: bool = False,
          keep_heap: bool = False) -> Optional[subprocess.Popen]:
    """``python -c code *args`` in ``cwd`` (``-P`` first where the Python has it; with ``stdin``, a pipe the
    caller writes to as ``proc.stdin``; with ``keep_heap``, in ``child_environment()``, else in this process's);
    None when no child can be started here (the caller then does the work itself)."""
    try:
        return start_child([sys.executable, *(["-P"] if SAFE_PATH else []), "-c", code, *map(str, args)], cwd,
                           env=child_environment() if keep_heap else None, stdin=stdin, keep_stderr=keep_stderr)
    except OSError:
        return None


# A child asked to stop (SIGTERM) is killed (SIGKILL) when it has not gone this many seconds later: one that blocks
# or ignores SIGTERM ends all the same, and the wait for it is bounded.
STOP_GRACE_S = 1.0


def stop(proc: Optional[subprocess.Popen], grace_s: Optional[float] = None) -> None:
    """End ``proc`` if it still runs (SIGTERM, then SIGKILL after ``grace_s`` seconds, default ``STOP_GRACE_S``),
    reap it and close its stdin (nothing for None)."""
    stop_all([proc], grace_s)


def stop_all(procs: Iterable[Optional[subprocess.Popen]], grace_s: Optional[float] = None) -> None:
    """``stop`` for several children, all asked at once so that the grace period is spent once for all."""
    procs = [p for p in procs if p is not None]
    for proc in procs:
        if proc.poll() is None:
            try:
                proc.terminate()
            except OSError:                # gone meanwhile
                pass
    deadline = time.monotonic() + (STOP_GRACE_S if grace_s is None else grace_s)
    for proc in procs:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            try:
                proc.kill()
            except OSError:
                pass
            proc.wait()
        if proc.stdin is not None:
            try:
                proc.stdin.close()
            except OSError:
                pass


# A served child gives its freed heap back to the system (glibc's ``malloc_trim``) once idle this long: calls in a row
# (a batch, jobs back to back) keep reusing its pages (``CHILD_HEAP``), an idle app does not hold them.
CHILD_TRIM_S = 30.0

_SERVED_CHILD = r"""
import json, os, sys, threading, time
IMPORTS
state = {"busy": False, "since": time.monotonic(), "trimmed": True}
try:
    import ctypes
    trim = ctypes.CDLL(None).malloc_trim
except Exception:                      # not glibc: nothing to give back by hand
    trim = None
def idle_exit():
    while True:
        time.sleep(min(1.0, IDLE / 2, TRIMAFTER / 2))
        idle = time.monotonic() - state["since"]
        if not state["busy"] and idle > IDLE:
            os._exit(0)
        if trim is not None and not state["busy"] and not state["trimmed"] and idle > TRIMAFTER:
            state["trimmed"] = True
            trim(0)
threading.Thread(target=idle_exit, daemon=True).start()
for line in sys.stdin:
    state["busy"] = True
SERVE
    state["busy"], state["since"], state["trimmed"] = False, time.monotonic(), False
"""


def served_child_code(imports: str, serve: str, idle_s: float, trim_s: float = CHILD_TRIM_S) -> str:
    """The code of a child that runs ``imports`` once, then ``serve`` (lines indented by four spaces, reading
    ``line``, with json and os at hand) for each line of its stdin until stdin closes, gives its freed heap back
    after ``trim_s`` seconds without work (glibc) and exits by itself after ``idle_s`` (a pooled child outlives no
    caller for long)."""
    code = _SERVED_CHILD.replace("IDLE", repr(float(idle_s))).replace("TRIMAFTER", repr(float(trim_s)))
    return code.replace("IMPORTS", imports.strip("\n"), 1).replace("SERVE", serve.strip("\n"), 1)


def working_folder(folder: str) -> str:
    """Where a child that may be pooled works: the temp folder where ``-P`` allows it (a pooled child outlives
    the caller's ``folder``), else ``folder``."""
    return tempfile.gettempdir() if SAFE_PATH else folder


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity where the OS tells it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


# Warm children between calls, keyed by the code they run: idle ones wait here (they leave by themselves when
# idle too long, or when this process ends and their stdin closes), so the next caller skips their imports.
# Only where ``SAFE_PATH``: pooled children outlive their caller's folder and work in the temp folder itself.
_pool: list = []                      # (code, Popen), idle
_pool_lock = threading.Lock()
# Idle children leave by themselves (``served_child_code``'s idle exit); a thread of this process reaps them this
# often, so that none stays a zombie (<defunct>) until the next caller looks at the pool. It runs while the pool
# holds children and is woken by each one given back.
REAP_EVERY_S = 10.0
_reaper: Optional[threading.Thread] = None
_reap_wake = threading.Event()


def _reap() -> None:
    """The reaper thread: drops the pooled children that have exited (``poll`` reaps them) until the pool is empty."""
    global _reaper
    while True:
        _reap_wake.wait(REAP_EVERY_S)
        _reap_wake.clear()
        with _pool_lock:
            gone = [p for _, p in _pool if p.poll() is not None]
            _pool[:] = [(c, p) for c, p in _pool if p.returncode is None]
            empty = not _pool
            if empty:
                _reaper = None
        stop_all(gone)                    # exited already: their stdin is closed
        if empty:
            return


def take(code: str) -> Optional[subprocess.Popen]:
    """A live idle child running ``code`` from the pool, or None."""
    while True:
        with _pool_lock:
            found = next((i for i, (c, _) in enumerate(_pool) if c == code), None)
            if found is None:
                return None
            proc = _pool.pop(found)[1]
        if proc.poll() is None:
            return proc
        stop(proc)                        # left by itself while idle: reaped, try the next


def give_back(code: str, proc: subprocess.Popen, limit: int) -> None:
    """Keep an idle child running ``code`` for the next caller (where pooling is possible and fewer than
    ``limit`` wait), else stop it."""
    global _reaper
    if SAFE_PATH and proc.poll() is None:
        with _pool_lock:
            if len(_pool) < limit:
                _pool.append((code, proc))
                if _reaper is None:
                    _reaper = start_thread(_reap, "trellis-child-reaper")
                _reap_wake.set()
                return
    stop(proc)


def pooled_children() -> int:
    """Idle children waiting in the pool (alive or not yet reaped)."""
    with _pool_lock:
        return len(_pool)


def pooled_processes(code: Optional[str] = None) -> list:
    """The idle children in the pool (those running ``code`` when given), oldest first."""
    with _pool_lock:
        return [p for c, p in _pool if code is None or c == code]


def drain_pool() -> None:
    """Stop every pooled child (tests; an app that wants its memory back)."""
    with _pool_lock:
        procs = [p for _, p in _pool]
        _pool.clear()
    stop_all(procs)
