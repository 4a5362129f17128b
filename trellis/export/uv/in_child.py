"""Our geometric chart layout (``geometric.geometric_layout``) in a warm child process: ``layout_in_child``.

The layout is thousands of small numpy calls that each need the GIL. In a thread of the exporting process it
shares the GIL with the work that goes on meanwhile (the observation views rendered and prepared on the GPU,
the app's preview), and both slow down; in a child of the same interpreter it runs beside them, with the same
code and so the same result bit for bit. The child imports the layout's modules once and then serves one call
per line on its stdin (arrays through ``.npz`` files in a temporary folder), so a warm child (``warm``: kept in
``processes``' pool between calls) costs only the files. Where no child can start, or one dies, the call runs
in this process instead; a cancel or a time budget overrun kills the child.
"""
from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from typing import Optional

import numpy as np

from ...core.callbacks import check
from .. import processes
from ..options import DEFAULT_TEXTURE_SIZE
from . import geometric, segment

__all__ = ["CHILD_IDLE_S", "POOL_LIMIT", "BUDGET_GRACE_S", "LAYOUT_CHILD", "busy_children", "warm", "layout_in_child"]

# An idle child exits after this long; at most POOL_LIMIT layout children wait in the pool.
CHILD_IDLE_S = 300.0
POOL_LIMIT = 2
# The child stops itself at its time budget (checked between the layout's steps); this much later it is killed.
BUDGET_GRACE_S = 2.0

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

# One JSON line per call: {"src", "dst", "texture_size", "padding", "time_budget_s", "max_charts"}; the result is
# written under another name and renamed when complete, an error as dst + ".error.json".
_IMPORTS = f"""
sys.path.insert(0, {_ROOT!r})
import numpy as np
from trellis.export.uv.geometric import geometric_layout
"""
_SERVE = """
    call = json.loads(line)
    try:
        with np.load(call["src"]) as d:
            v, f = d["vertices"], d["faces"]
        info = {}
        out = geometric_layout(v, f, call["texture_size"], call["padding"], time_budget_s=call["time_budget_s"],
                               max_charts=call["max_charts"], info=info)
        np.savez(call["dst"] + ".part.npz", vertices=out[0], faces=out[1], uvs=out[2], vmapping=out[3],
                 info=np.array(json.dumps(info)))
        os.replace(call["dst"] + ".part.npz", call["dst"])
    except Exception as e:
        with open(call["dst"] + ".error.part", "w") as fh:
            json.dump({"type": type(e).__name__, "message": str(e)}, fh)
        os.replace(call["dst"] + ".error.part", call["dst"] + ".error.json")
"""
LAYOUT_CHILD = processes.served_child_code(_IMPORTS, _SERVE, CHILD_IDLE_S)


def _start():
    return processes.start(LAYOUT_CHILD, (), processes.working_folder(tempfile.gettempdir()), stdin=True,
                           keep_heap=True)


_busy: list = []                      # the children serving a call now
_busy_lock = threading.Lock()


def busy_children() -> list:
    """The layout children working on a call now."""
    with _busy_lock:
        return list(_busy)


def _keep(proc) -> None:
    """Give an idle layout child to the pool, unless POOL_LIMIT of them wait there already."""
    if len(processes.pooled_processes(LAYOUT_CHILD)) < POOL_LIMIT:
        processes.give_back(LAYOUT_CHILD, proc, processes.pooled_children() + 1)
    else:
        processes.stop(proc)


def warm() -> int:
    """Start one layout child into the pool now if none waits there (its imports take a few tenths of a second),
    so that the next ``layout_in_child`` finds it ready; returns how many wait."""
    if not processes.SAFE_PATH:
        return 0
    alive = [p for p in processes.pooled_processes(LAYOUT_CHILD) if p.poll() is None]
    if not alive:
        proc = _start()
        if proc is not None:
            _keep(proc)
            alive = [proc]
    return len(alive)


def _raise_child_error(path: str) -> None:
    with open(path) as fh:
        err = json.load(fh)
    kind, message = err.get("type"), err.get("message", "")
    if kind == "TooManyCharts":
        raise segment.TooManyCharts(message)
    if kind == "TimeoutError":
        raise TimeoutError(message)
    raise RuntimeError(f"geometric charts ({kind}): {message}")


def layout_in_child(vertices, faces, texture_size: int = DEFAULT_TEXTURE_SIZE, padding: int = 2, progress=None, cancel=None,
                    time_budget_s: Optional[float] = None, max_charts: Optional[int] = None,
                    info: Optional[dict] = None):
    """``geometric.geometric_layout`` with the same arguments and result, run by a warm child (``warm``) or one
    started now; its errors come back as the same exception types (TooManyCharts, TimeoutError; others as
    RuntimeError). ``progress(done, 100)`` at the start and the end; ``cancel`` is checked while the child works
    and kills it. ``info`` receives the layout's own (its "phases" gain "handover": the seconds outside the
    layout's steps, the files and the child's wake-up), and "in_child" (whether a child ran it)."""
    info = {} if info is None else info
    info["in_child"] = False
    start = time.monotonic()
    v = np.ascontiguousarray(np.asarray(vertices, dtype=np.float64).reshape(-1, 3))
    f = np.ascontiguousarray(np.asarray(faces, dtype=np.int64).reshape(-1, 3))
    proc = processes.take(LAYOUT_CHILD) or _start()
    if proc is None:                   # no child here: the same call in this process
        return geometric.geometric_layout(v, f, texture_size, padding, progress, cancel, time_budget_s, max_charts,
                                          info)
    keep = False
    with tempfile.TemporaryDirectory(prefix="trellis_uv_") as tmp:
        src, dst = os.path.join(tmp, "in.npz"), os.path.join(tmp, "out.npz")
        error = dst + ".error.json"
        with _busy_lock:
            _busy.append(proc)
        try:
            np.savez(src, vertices=v, faces=f)
            budget = None if time_budget_s is None else max(0.0, time_budget_s - (time.monotonic() - start))
            call = {"src": src, "dst": dst, "texture_size": int(texture_size), "padding": int(padding),
                    "time_budget_s": budget, "max_charts": None if max_charts is None else int(max_charts)}
            try:
                proc.stdin.write((json.dumps(call) + "\n").encode())
                proc.stdin.flush()
            except (OSError, ValueError):          # it has exited: the same call in this process
                return geometric.geometric_layout(v, f, texture_size, padding, progress, cancel, budget, max_charts,
                                                  info)
            if progress is not None:
                progress(0, 100)
            while not (os.path.exists(dst) or os.path.exists(error)):
                check(cancel)                      # first: a child ended by a cancel is not replaced
                if proc.poll() is not None:        # it died (a crash, out of memory): the same call here
                    left = None if time_budget_s is None else max(0.0, time_budget_s - (time.monotonic() - start))
                    return geometric.geometric_layout(v, f, texture_size, padding, progress, cancel, left, max_charts,
                                                      info)
                if time_budget_s is not None and time.monotonic() - start > time_budget_s + BUDGET_GRACE_S:
                    raise TimeoutError(f"geometric charts ran past their {time_budget_s:.1f} s budget")
                time.sleep(0.002)
            keep = True
            if os.path.exists(error):
                _raise_child_error(error)
            with np.load(dst) as out:
                result = out["vertices"], out["faces"], out["uvs"], out["vmapping"]
                info.update(json.loads(str(out["info"])), in_child=True)
            steps = sum(info.get("phases", {}).values())
            info.setdefault("phases", {})["handover"] = round(max(0.0, time.monotonic() - start - steps), 4)
        finally:                               # an idle child waits for the next call; a busy one is killed
            with _busy_lock:
                _busy.remove(proc)
            _keep(proc) if keep else processes.stop(proc)
    if progress is not None:
        progress(100, 100)
    return result
