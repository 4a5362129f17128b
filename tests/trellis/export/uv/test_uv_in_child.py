"""The geometric chart layout in a warm child process (``trellis.export.uv.in_child``): the same arrays as in this
process, the child kept warm between calls, its errors as the same exceptions, a cancel that kills it, a child that
dies replaced by the same call here. Real child processes of this interpreter."""
from __future__ import annotations

import glob
import os
import tempfile
import time

import numpy as np
import pytest

from trellis.core.callbacks import Cancelled
from trellis.export import processes
from trellis.export.uv import geometric, in_child, segment
from trellis.export.uv.unwrap import unwrap_uv

from tests.helpers.meshes import bumpy_sphere

trimesh = pytest.importorskip("trimesh")


def layout_children() -> list:
    return [p for p in processes.pooled_processes(in_child.LAYOUT_CHILD) if p.poll() is None]


def uv_folders() -> set:
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "trellis_uv_*")))


def no_folder_left(before: set, wait_s: float = 10.0) -> bool:
    """No layout folder beyond ``before`` stays: a test in another worker may hold one of its own for a moment,
    a leaked one stays."""
    end = time.monotonic() + wait_s
    while not uv_folders() <= before:
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture
def pool():
    processes.drain_pool()
    yield
    processes.drain_pool()


def same(a, b) -> bool:
    return all(x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(a, b))


@pytest.mark.skipif(not processes.SAFE_PATH, reason="warm children are pooled from Python 3.11 on")
def test_the_child_layout_is_this_process_layout_and_stays_warm(pool):
    v, f = bumpy_sphere()
    before = uv_folders()
    assert in_child.warm() == 1 and in_child.warm() == 1       # one waits; a second call starts no other
    warm, = layout_children()
    child_info, here_info = {}, {}
    got = in_child.layout_in_child(v, f, 512, 2, info=child_info)
    assert same(got, geometric.geometric_layout(v, f, 512, 2, info=here_info))
    assert layout_children() == [warm]                         # the warm child did it and waits again
    # the child's steps come back with the arrays, plus the handover around them; the same packings as here
    assert child_info["in_child"] and child_info["packings"] == here_info["packings"] >= 1
    assert set(child_info["phases"]) == set(here_info["phases"]) | {"handover"}
    assert all(here_info["phases"][k] > 0 for k in ("segment", "flatten", "pack", "overlap"))
    assert all(child_info["phases"][k] > 0 for k in ("segment", "flatten", "pack", "overlap"))
    # and the time its thread ran on a core (no longer than its steps took), waited for one, the machine's load
    for info in (child_info, here_info):
        cpu, steps = info["cpu"], sum(v for k, v in info["phases"].items() if k != "handover")
        assert 0 < cpu["busy"] <= steps + 0.05 and cpu["waiting"] >= 0
        if steps >= 0.05:                   # (the machine's load comes in clock ticks of 10 ms)
            assert cpu["machine"] >= 0.5 * cpu["busy"] / steps and cpu["stolen"] >= 0
    assert same(unwrap_uv(v, f, texture_size=512, in_child=True), unwrap_uv(v, f, texture_size=512))
    assert layout_children() == [warm]
    assert no_folder_left(before)


@pytest.mark.skipif(not processes.SAFE_PATH, reason="warm children are pooled from Python 3.11 on")
def test_the_child_errors_are_the_layout_errors(pool):
    v, f = bumpy_sphere()
    with pytest.raises(segment.TooManyCharts):
        in_child.layout_in_child(v, f, 512, 2, max_charts=1)
    assert len(layout_children()) == 1                         # an error of the layout: the child lives on
    with pytest.raises(TimeoutError):
        in_child.layout_in_child(v, f, 512, 2, time_budget_s=0.0)
    # unwrap_uv's "auto" falls back from either as it does in this process
    info = {}
    unwrap_uv(v, f, texture_size=512, in_child=True, time_budget_s=1e-6, info=info)
    assert info["method"] == "grouped"


def test_a_cancel_kills_the_child_and_leaves_no_folder(pool):
    v, f = bumpy_sphere(5)
    before = uv_folders()
    working = []

    def cancel():
        working.extend(in_child.busy_children())
        return True
    with pytest.raises(Cancelled):
        in_child.layout_in_child(v, f, 512, 2, cancel=cancel)
    assert working and all(p.poll() is not None for p in working)     # killed, not left running
    assert layout_children() == [] and in_child.busy_children() == []
    assert no_folder_left(before)


def test_a_child_that_dies_is_replaced_by_the_same_call_here(pool):
    v, f = bumpy_sphere()
    killed = []

    def kill_the_child():                                      # a crash while it works (as out of memory would)
        if not killed:
            for proc in in_child.busy_children():
                proc.kill()
                proc.wait()
                killed.append(proc)
        return False
    got = in_child.layout_in_child(v, f, 512, 2, cancel=kill_the_child)
    assert killed and same(got, geometric.geometric_layout(v, f, 512, 2))
