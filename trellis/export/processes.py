"""Child Python processes for the export's native steps (fast-simplification, xatlas), and a pool of warm ones.

Those libraries hold the GIL for seconds and cannot be interrupted (xatlas can even crash), so they run in a
child of the same interpreter and environment, fed and read through ``.npz`` files in a folder of the
caller's; the caller polls the child, so its GPU work goes on meanwhile, and kills it on cancel or timeout.
A child starts in a folder where nothing can shadow a module: any folder with Python's ``-P``, else an empty
one of its own.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
from typing import Optional

__all__ = ["SAFE_PATH", "CHILD_HEAP", "CHILD_TRIM_S", "child_environment", "start", "stop", "served_child_code", "working_folder",
           "usable_cores", "take", "give_back", "pooled_children", "pooled_processes", "drain_pool"]

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
        return subprocess.Popen([sys.executable, *(["-P"] if SAFE_PATH else []), "-c", code, *map(str, args)],
                                cwd=cwd, env=child_environment() if keep_heap else None,
                                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE if keep_stderr else subprocess.DEVNULL)
    except OSError:
        return None


def stop(proc: Optional[subprocess.Popen]) -> None:
    """Kill ``proc`` if it still runs and reap it (nothing for None)."""
    if proc is None:
        return
    if proc.poll() is None:
        proc.kill()
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
    if SAFE_PATH and proc.poll() is None:
        with _pool_lock:
            if len(_pool) < limit:
                _pool.append((code, proc))
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
    for proc in procs:
        stop(proc)
