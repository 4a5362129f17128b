"""Cancel lands within seconds at every stage of the export (``trellis.export``), whatever the stage is doing.

Each case runs a real export on the smallest test object (the 1 280-face bumpy sphere of ``test_export``) with a
cancel check that turns true at the first progress report of one stage, and measures the time from then until
``Cancelled`` is raised: under ``LANDS_WITHIN_S``, no later stage finished any work meanwhile, no child process
left running or unreaped (a zombie), no temporary folder or partial file left. The child processes (xatlas, the
chart layout's warm child, the decimation's) are also replaced by real children that ignore SIGTERM and never
finish, as a native call that hangs would: they are killed after ``processes.STOP_GRACE_S`` and reaped.
"""
from __future__ import annotations

import glob
import os
import tempfile
import time

import numpy as np
import pytest
import torch

from tests.helpers.asset import make_gaussians, make_mesh
from trellis.core.callbacks import Cancelled
from trellis.export import ExportJob, bake_onto_mesh, bake_textured_mesh, processes
from trellis.export.cleanup import pieces
from trellis.export.cleanup.chain import clean_mesh_for_export
from trellis.export.formats import FORMATS, write
from trellis.export.uv import in_child, xatlas
from trellis.export.uv.geometric import geometric_layout
from trellis.export.uv.pack_bitmap import BITMAP_PARALLEL
from trellis.export.uv.unwrap import unwrap_uv
from trellis.tuning import tuned
from trellis.utils.postprocessing_utils import to_glb, to_obj
from tests.helpers.threads import one_thread  # noqa: F401 (autouse: one torch thread here)

pytest.importorskip("trimesh")
pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="child processes read from Linux's /proc")

LANDS_WITHIN_S = 5.0
SMALL = dict(texture_size=64, verbose=False, nviews=4, render_resolution=64, device="cpu")


@pytest.fixture(scope="module")
def asset():
    v, f = make_mesh(3)                          # 1 280 faces
    return v, f, make_gaussians(v, f, n=4000)


@pytest.fixture(autouse=True)
def own_temp(tmp_path, monkeypatch):
    """The export's temporary folders (and its children's working folder) in a folder of this test's; the pool of
    warm children emptied before and after (a child of another code must not be taken)."""
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    processes.drain_pool()
    yield temp
    processes.drain_pool()


class CancelAt:
    """A cancel check that turns true once ``stage`` has reported progress (and ``ready()`` holds); remembers when it
    first answered true and the progress reported after that."""

    def __init__(self, stage: str, ready=lambda: True):
        self.stage, self.ready = stage, ready
        self.reached = False
        self.since = None
        self.after = []

    def progress(self, stage, done, total):
        if self.since is not None:
            self.after.append((stage, done))
        if stage == self.stage:
            self.reached = True

    def __call__(self) -> bool:
        if self.since is None and self.reached and self.ready():
            self.since = time.monotonic()
        return self.since is not None


def children() -> dict:
    """{pid: state letter} of this process's child processes."""
    me, out = os.getpid(), {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as fh:
                text = fh.read()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()
        if int(fields[1]) == me:
            out[int(stat.split("/")[2])] = fields[0]
    return out


def cancelled(run, cancel: CancelAt, temp) -> float:
    """Seconds from ``cancel`` turning true to ``run(cancel)`` raising ``Cancelled``, with what it leaves checked."""
    before = children()                                # (other tests' children, e.g. a session's server, stay)
    with pytest.raises(Cancelled):
        run(cancel)
    assert cancel.since is not None, f"the export never reached {cancel.stage!r}"
    landed = time.monotonic() - cancel.since
    assert landed < LANDS_WITHIN_S, f"cancel at {cancel.stage!r} landed after {landed:.1f} s"
    later = [(stage, done) for stage, done in cancel.after if stage != cancel.stage and done > 0]
    assert not later, f"stages went on working after the cancel at {cancel.stage!r}: {later}"
    pooled = {p.pid for p in processes.pooled_processes()}
    left = {pid: state for pid, state in children().items()
            if pid not in before and (pid not in pooled or state == "Z")}
    assert not left, f"child processes left after the cancel at {cancel.stage!r}: {left}"
    assert os.listdir(temp) == []
    return landed


@pytest.mark.parametrize("stage", ["visibility", "remove_invisible", "fill_holes", "final_simplify"])
def test_cancel_lands_in_each_clean_up_stage(asset, own_temp, stage):
    v, f, _ = asset
    cancelled(lambda c: clean_mesh_for_export(v, f, simplify=0.5, num_views=4, resolution=32, progress=c.progress,
                                              cancel=c), CancelAt(stage), own_temp)


@pytest.mark.parametrize("stage", ["simplify", "uv_unwrap", "observe", "bake", "inpaint", "normal_map"])
def test_cancel_lands_in_each_export_stage(asset, own_temp, stage):
    v, f, g = asset
    # our chart layout (in a thread of this process) where the cancel comes during the unwrap, the faster chart
    # layout elsewhere
    method = "geometric" if stage == "uv_unwrap" else "charts"
    cancelled(lambda c: to_glb(g, (v, f), simplify=0.5, fill_holes=False, uv_method=method, normal_map=True,
                               cg_iterations=4, progress=c.progress, cancel=c, **SMALL), CancelAt(stage), own_temp)


def test_a_cancelled_obj_export_leaves_no_file(asset, own_temp, tmp_path):
    v, f, g = asset
    out = tmp_path / "out"
    out.mkdir()
    cancelled(lambda c: to_obj(g, (v, f), out / "model.obj", simplify=0.0, fill_holes=False, uv_method="charts",
                               cg_iterations=4, progress=c.progress, cancel=c, **SMALL), CancelAt("inpaint"), own_temp)
    assert os.listdir(out) == []


@pytest.mark.parametrize("stage", ["uv_unwrap", "bake"])
def test_cancel_lands_in_the_kept_mesh_bake(asset, own_temp, stage):
    v, f, g = asset
    cancelled(lambda c: bake_onto_mesh(g, v.numpy(), f.numpy(), None, progress=c.progress, cancel=c, cg_iterations=4,
                                       **{k: SMALL[k] for k in ("texture_size", "nviews", "render_resolution")}),
              CancelAt(stage), own_temp)


def test_the_chart_layout_asks_inside_its_steps(asset):
    v, f, _ = asset
    asked = []
    geometric_layout(v.numpy(), f.numpy(), 256, cancel=lambda: asked.append(1) and False)
    # per chart split, solve round and chart placed: many more than its four steps
    assert len(asked) > 20
    for stop_at in (len(asked) // 4, len(asked) // 2, 3 * len(asked) // 4):
        calls = []
        with pytest.raises(Cancelled):
            geometric_layout(v.numpy(), f.numpy(), 256,
                             cancel=lambda calls=calls, stop_at=stop_at: calls.append(1) or len(calls) >= stop_at)
        # it stopped at the first "stop" (a packing's layouts made side by side each ask once more at most)
        assert stop_at <= len(calls) <= stop_at + BITMAP_PARALLEL


def test_a_cancelled_file_write_leaves_no_file(asset, tmp_path):
    v, f, g = asset
    textured = bake_textured_mesh(g, (v, f), simplify=0.0, fill_holes=False, uv_method="charts", **SMALL)
    out = tmp_path / "out"
    out.mkdir()
    for name in FORMATS:
        options = {"print_ready": True} if name in ("stl", "3mf") else {}
        for checks in range(3):                       # the first, second, third check says stop
            asked = []
            with pytest.raises(Cancelled):
                write(textured, out / f"model.{name}",
                      cancel=lambda asked=asked, checks=checks: asked.append(1) or len(asked) > checks, **options)
            assert len(asked) == checks + 1
        assert os.listdir(out) == []
    # a check that never says stop changes nothing
    assert os.path.getsize(write(textured, tmp_path / "model.glb", cancel=lambda: False)) > 0


# A child that ignores SIGTERM and never finishes (a native call that hangs), writing its pid to PIDFILE first.
_IGNORE_TERM = "import os, signal, sys, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)"
_HANG = "    open(PIDFILE, 'w').write(str(os.getpid()))\n    time.sleep(600)"


def hanging_child(pidfile, served: bool) -> str:
    if served:
        return processes.served_child_code(_IGNORE_TERM, _HANG.replace("PIDFILE", repr(str(pidfile))), 600.0)
    return _IGNORE_TERM + "\n" + _HANG.replace("PIDFILE", repr(str(pidfile))).replace("    ", "")


def assert_killed_and_reaped(pidfile, landed: float):
    pid = int(pidfile.read_text())
    assert not os.path.exists(f"/proc/{pid}"), "the hanging child is left running or unreaped"
    assert landed >= processes.STOP_GRACE_S * 0.9          # it ignored SIGTERM: killed after the grace period


def test_a_hanging_xatlas_child_is_killed(asset, own_temp, tmp_path, monkeypatch):
    v, f, _ = asset
    pidfile = tmp_path / "pid"
    monkeypatch.setattr(xatlas, "XATLAS_CHILD", hanging_child(pidfile, served=False))
    cancel = CancelAt("uv_unwrap", ready=pidfile.exists)
    landed = cancelled(lambda c: unwrap_uv(v, f, method="xatlas", texture_size=64, progress=lambda d, t: c.progress(
        "uv_unwrap", d, t), cancel=c), cancel, own_temp)
    assert_killed_and_reaped(pidfile, landed)


def test_a_hanging_chart_layout_child_is_killed(asset, own_temp, tmp_path, monkeypatch):
    v, f, g = asset
    pidfile = tmp_path / "pid"
    monkeypatch.setattr(in_child, "LAYOUT_CHILD", hanging_child(pidfile, served=True))
    cancel = CancelAt("uv_unwrap", ready=pidfile.exists)
    with tuned(uv_in_child=True):                  # (on a CPU the layout would run in a thread)
        landed = cancelled(lambda c: to_glb(g, (v, f), simplify=0.0, fill_holes=False, uv_method="geometric",
                                            progress=c.progress, cancel=c, **SMALL), cancel, own_temp)
    assert_killed_and_reaped(pidfile, landed)


def test_a_hanging_decimation_child_is_killed(asset, own_temp, tmp_path, monkeypatch):
    v, f, g = asset
    pidfile = tmp_path / "pid"
    monkeypatch.setattr(pieces, "PIECE_CHILD", hanging_child(pidfile, served=True))
    cancel = CancelAt("simplify", ready=pidfile.exists)

    def run(c):
        options = {k: v for k, v in SMALL.items() if k != "verbose"}
        with ExportJob(g, (v, f), simplify=0.5, fill_holes=False, **options) as job:   # its decimation starts now
            job.bake(progress=c.progress, cancel=c)
    landed = cancelled(run, cancel, own_temp)
    assert_killed_and_reaped(pidfile, landed)


@pytest.mark.skipif(not processes.SAFE_PATH, reason="warm children are pooled from Python 3.11 on")
def test_pooled_children_that_leave_by_themselves_are_reaped(monkeypatch):
    monkeypatch.setattr(processes, "REAP_EVERY_S", 0.05)
    code = processes.served_child_code("", "    pass", idle_s=0.2)
    proc = processes.start(code, (), processes.working_folder(tempfile.gettempdir()), stdin=True)
    assert proc is not None
    processes.give_back(code, proc, 4)
    end = time.monotonic() + 10
    while os.path.exists(f"/proc/{proc.pid}") and time.monotonic() < end:
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{proc.pid}"), "an idle child that exited stays a zombie"
    assert proc.returncode == 0 and processes.pooled_children() == 0


def test_non_finite_vertices_end_the_chart_layout_with_an_error():
    v, f = make_mesh(1)
    v = torch.full_like(v, float("nan"))
    with pytest.raises(ValueError, match="not finite"):
        unwrap_uv(v, f, method="charts", texture_size=64)
    assert np.isfinite(unwrap_uv(make_mesh(1)[0], f, method="charts", texture_size=64)[2]).all()
