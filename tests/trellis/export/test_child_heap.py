"""A child started with ``keep_heap`` (the chart layout's, ``uv.in_child``) keeps its freed heap
(``processes.CHILD_HEAP``): a warm child's second pass over the same arrays reuses its pages instead of faulting in
fresh ones; other children keep glibc's defaults. Real children of this interpreter, their page faults read from
the kernel (glibc on Linux: other C libraries ignore the settings)."""
from __future__ import annotations

import os
import sys
import time

import pytest

from trellis.export import processes
from trellis.export.uv import in_child

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or os.environ.get("MALLOC_MMAP_THRESHOLD_"),
                                reason="glibc's heap settings, not set by hand")

# Allocates and frees twelve 1 MiB arrays twenty times (the chart layout's pattern: many mid-sized temporaries,
# below numpy's huge-page size), then again: prints the page faults of the second pass.
_TWICE = """
import resource, sys
import numpy as np
def once():
    for _ in range(20):
        arrays = [np.ones(1 << 17) for _ in range(12)]     # written: every page touched
        del arrays
once()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
once()
sys.stderr.write(str(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before))
"""


def second_pass_faults(keep_heap: bool) -> int:
    proc = processes.start(_TWICE, (), processes.working_folder(os.getcwd()), keep_stderr=True, keep_heap=keep_heap)
    assert proc is not None
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return int(err.decode().strip().splitlines()[-1])


def test_children_keep_their_heap_between_passes_where_asked():
    pages = 20 * 12 * (1 << 20) // 4096        # the second pass's arrays, page by page
    kept = second_pass_faults(keep_heap=True)
    fresh = second_pass_faults(keep_heap=False)
    assert fresh > pages // 2                  # glibc's default: the freed heap is given back, then faulted in again
    assert kept < pages // 20                  # the heap kept: the pages are reused


def resident_mib(proc) -> float:
    with open(f"/proc/{proc.pid}/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


# Per line (a folder): 160 one-MiB arrays made and freed, then a file there says so.
_ALLOCATE = """
    import numpy as np
    arrays = [np.ones(1 << 17) for _ in range(160)]
    del arrays
    open(os.path.join(line.strip(), "done"), "w").close()
"""


def test_a_served_child_gives_its_kept_heap_back_once_idle(tmp_path):
    code = processes.served_child_code("", _ALLOCATE, idle_s=60.0, trim_s=1.0)
    proc = processes.start(code, (), processes.working_folder(str(tmp_path)), stdin=True, keep_heap=True)
    try:
        before = resident_mib(proc)
        proc.stdin.write(f"{tmp_path}\n".encode())
        proc.stdin.flush()
        while not (tmp_path / "done").exists():
            assert proc.poll() is None
            time.sleep(0.01)
        held = resident_mib(proc)
        assert held > before + 100                 # the freed arrays stay in its heap for the next call
        deadline = time.monotonic() + 20
        while resident_mib(proc) > before + 50 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert resident_mib(proc) < before + 50     # idle past trim_s: given back
    finally:
        processes.stop(proc)


def environment_of(proc) -> dict:
    with open(f"/proc/{proc.pid}/environ", "rb") as fh:
        return dict(item.split("=", 1) for item in fh.read().decode().split("\0") if "=" in item)


@pytest.mark.skipif(not processes.SAFE_PATH, reason="warm children are pooled from Python 3.11 on")
def test_the_layout_child_keeps_its_heap_and_the_decimation_children_do_not():
    from trellis.export.cleanup import pieces

    processes.drain_pool()
    try:
        assert in_child.warm() == 1 and pieces.warm_pool(1) >= 2       # the app's warm-up starts both kinds
        layout, = processes.pooled_processes(in_child.LAYOUT_CHILD)
        piece, = processes.pooled_processes(pieces.PIECE_CHILD)
        assert environment_of(layout)["MALLOC_TRIM_THRESHOLD_"] == processes.CHILD_HEAP["MALLOC_TRIM_THRESHOLD_"]
        # their wait did not move with it, and each would hold tens of MiB more while idle
        assert "MALLOC_TRIM_THRESHOLD_" not in environment_of(piece)
    finally:
        processes.drain_pool()


def test_a_heap_setting_of_the_environment_wins(monkeypatch):
    monkeypatch.setenv("MALLOC_TOP_PAD_", "4096")
    env = processes.child_environment()
    assert env["MALLOC_TOP_PAD_"] == "4096"
    assert env["MALLOC_MMAP_THRESHOLD_"] == processes.CHILD_HEAP["MALLOC_MMAP_THRESHOLD_"]
