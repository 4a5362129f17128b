"""Our geometric UV layout: charts cut along the geometry (``segment``), flattened by LSCM (``lscm``) and
packed by the bitmap packer (``pack_bitmap``); faces found overlapping in the packed atlas are cut out of their
charts and packed again. On the realistic objects it uses more of the texture than xatlas, without
single-triangle charts, in about the same time (docs/benchmarks/export.md#uv-unwrap).
"""
from __future__ import annotations

import contextlib
import os
import threading
import time
from typing import Optional

import numpy as np

from ...core.callbacks import StepProgress, check
from ..arrays import to_numpy
from ..options import DEFAULT_TEXTURE_SIZE
from . import lscm, overlap, pack_bitmap, segment
from .chart_mesh import ChartMesh, unique_keys

__all__ = ["OVERLAP_RETRIES", "SINGLE_FACE_ROUNDS", "NOISY_SHARE", "geometric_time_estimate", "one_blas_thread",
           "geometric_layout", "run_queue_wait", "machine_ticks"]


# Times the layout cuts faces found overlapping in the atlas out of their charts and packs again; faces still
# overlapping after that become charts of one face each (up to SINGLE_FACE_ROUNDS times: packed at a slightly
# different scale, faces overlapping by a sliver may then share a texel).
OVERLAP_RETRIES = 3
SINGLE_FACE_ROUNDS = 3
# With a chart limit (``unwrap_uv``'s "auto"), a surface where more than this share of neighbouring faces meet
# at over 45 degrees (``segment.sharp_pair_share``) is given up at once: it would fall apart into hundreds of
# charts (docs/benchmarks/export.md#uv-unwrap).
NOISY_SHARE = 0.25


def geometric_time_estimate(num_faces: int) -> float:
    """Rough run time of the geometric layout in seconds, from 2 shared CPU cores
    (docs/benchmarks/export.md#uv-unwrap)."""
    return max(num_faces, 1) / 10000.0


_blas_lock = threading.Lock()
_blas_users = 0             # callers inside ``one_blas_thread`` now (threads may overlap)
_blas_limiter = None


@contextlib.contextmanager
def one_blas_thread():
    """A context in which the BLAS libraries loaded in this process (numpy's and scipy's OpenBLAS, MKL) run on
    one thread (``threadpoolctl``; no-op without it). The chart layout makes thousands of small BLAS calls
    (matrix-vector products of a few columns, SuperLU's kernels in the LSCM solve), each of which would wake
    every core's BLAS thread on a many-core host (docs/benchmarks/export.md#uv-unwrap). The limit is
    process-wide: the first caller in sets it, the last one out restores what was there before (so overlapping
    callers in several threads leave the setting as found); scipy's sparse solvers are imported first so that
    their BLAS is loaded, and limited, too."""
    global _blas_users, _blas_limiter
    try:
        from threadpoolctl import threadpool_limits
        import scipy.sparse.linalg  # noqa: F401  (loads scipy's BLAS before the limit is applied)
    except ImportError:                 # an install without threadpoolctl: the default threads
        yield
        return
    with _blas_lock:
        if _blas_users == 0:
            _blas_limiter = threadpool_limits(limits=1, user_api="blas")
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                _blas_limiter.restore_original_limits()
                _blas_limiter = None


def geometric_layout(vertices, faces, texture_size: int = DEFAULT_TEXTURE_SIZE, padding: int = 2, progress: StepProgress = None,
                     cancel=None, time_budget_s: Optional[float] = None, max_charts: Optional[int] = None,
                     info: Optional[dict] = None):
    """Our charts: cut along the geometry, flattened by LSCM, packed by the bitmap packer (module docstring).
    Same outputs as ``unwrap_uv``; raises on a failure (non-finite coordinates, overlaps found, more
    than ``max_charts`` charts after the segmentation or the flattening) and TimeoutError between its
    steps once ``time_budget_s`` is spent. BLAS runs on one thread meanwhile (``one_blas_thread``). A dict
    ``info`` receives "phases": seconds per step ("segment", "flatten", "pack", "overlap"; the re-flattening of
    overlapping faces counts as "flatten"), "packings" (layouts packed, one plus one per overlap round) and
    "cpu" ({"busy", "waiting"}: seconds this thread ran on a core and waited in the run queue for one; "machine",
    "stolen": the cores the whole machine kept busy meanwhile, on average, and those its hypervisor took away;
    where the system tells: a layout slower in a busy job than alone shows here whether it lacked a core, ran
    slower on one, or shared the machine with much other work)."""
    phases = {"segment": 0.0, "flatten": 0.0, "pack": 0.0, "overlap": 0.0}
    if info is not None:
        info["phases"], info["packings"] = phases, 0
    busy, waiting, machine = time.thread_time(), run_queue_wait(), machine_ticks()
    with one_blas_thread():
        out = _layout(vertices, faces, texture_size, padding, progress, cancel, time_budget_s, max_charts,
                      phases, info if info is not None else {})
    if info is not None:
        info["cpu"] = {"busy": round(time.thread_time() - busy, 4)}
        if waiting is not None:
            info["cpu"]["waiting"] = round(run_queue_wait() - waiting, 4)
        after = machine_ticks()
        if machine is not None and after is not None and after[0] > machine[0]:
            span = after[0] - machine[0]
            info["cpu"]["machine"] = round((after[1] - machine[1]) / span, 2)
            info["cpu"]["stolen"] = round((after[2] - machine[2]) / span, 2)
    return out


def machine_ticks() -> Optional[tuple]:
    """Clock ticks since boot from Linux's /proc/stat (None elsewhere): (all per core, busy summed over the cores,
    stolen summed); the deltas of the last two over the first's give the cores busy and stolen on average."""
    try:
        with open("/proc/stat") as fh:
            ticks = [int(x) for x in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    if len(ticks) < 8:
        return None
    total = sum(ticks[:8])
    idle = ticks[3] + ticks[4]
    return total / max(os.cpu_count() or 1, 1), total - idle, ticks[7]


def run_queue_wait() -> Optional[float]:
    """Seconds this thread has waited in the run queue for a core since it started (Linux's schedstat; None
    elsewhere)."""
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/schedstat") as fh:
            return int(fh.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


def _layout(vertices, faces, texture_size, padding, progress, cancel, time_budget_s, max_charts, phases, info):
    start = time.monotonic()
    mark = [time.perf_counter()]

    def lap(name):
        now = time.perf_counter()
        phases[name] = round(phases[name] + now - mark[0], 4)
        mark[0] = now

    # the steps inside ask the caller's cancel only: the time budget stays checked between steps, as it was
    user_cancel = cancel

    def cancel():
        if time_budget_s is not None and time.monotonic() - start > time_budget_s:
            raise TimeoutError(f"geometric charts ran past their {time_budget_s:.1f} s budget")
        return user_cancel is not None and user_cancel()

    v, f = to_numpy(vertices, faces)
    mesh = ChartMesh(v, f)
    if max_charts is not None:
        noisy = segment.sharp_pair_share(mesh)
        if noisy > NOISY_SHARE:
            raise segment.TooManyCharts(f"geometric charts: a noisy surface ({100 * noisy:.0f} % of neighbouring "
                                        f"faces meet at over 45 degrees)")
    chart = segment.geometric_charts(v, f, mesh=mesh, max_charts=max_charts,   # raises early on a hopeless mesh
                                     cancel=user_cancel)
    lap("segment")
    check(cancel)
    if progress is not None:
        progress(30, 100)
    chart, tri = lscm.flatten_charts(v, f, chart, mesh=mesh, cancel=user_cancel)
    if not np.isfinite(tri).all():
        raise RuntimeError("geometric charts: the flattening did not converge")
    segment.at_most(chart, max_charts, " after flattening")          # the flattening adds charts (cut-out faces)
    lap("flatten")
    check(cancel)
    if progress is not None:
        progress(60, 100)
    pack_info = {}
    for attempt in range(OVERLAP_RETRIES + SINGLE_FACE_ROUNDS + 1):
        corner_uv = pack_bitmap.pack_charts(tri, chart, int(texture_size), int(padding), info=pack_info,
                                            cancel=user_cancel)
        info["packings"] = info.get("packings", 0) + 1
        lap("pack")
        check(cancel)
        # LSCM keeps every triangle unfolded, but a chart can still run over itself (around a
        # vertex whose angles add up to more than a turn, or along its border): the faces found
        # overlapping are cut out (their charts re-solved, they are put back where they fit) and
        # the layout is packed again
        # checked at the texture's texels; before packing again also on a grid twice as fine: faces
        # overlapping by a sliver may share no texel centre at this scale but one at the slightly
        # different scale of the next packing
        corners = np.arange(3 * len(f)).reshape(-1, 3)
        bad = overlap.overlapping_faces(corners, corner_uv.reshape(-1, 2), int(texture_size))
        if not bad.any():
            lap("overlap")
            break
        bad |= overlap.overlapping_faces(corners, corner_uv.reshape(-1, 2), min(2 * int(texture_size), 8192))
        lap("overlap")
        if attempt == OVERLAP_RETRIES + SINGLE_FACE_ROUNDS:
            raise RuntimeError(f"geometric charts: {int(bad.sum())} faces overlap in the atlas")
        if attempt >= OVERLAP_RETRIES:    # the last few become charts of one face (these cannot overlap)
            chart, tri = lscm.single_face_charts(v, f, chart, tri, bad)
        else:
            chart, tri = lscm.flatten_charts(v, f, chart, mesh=mesh, tri=tri, detach=bad, cancel=user_cancel)
        lap("flatten")
        check(cancel)
    # one output vertex per (chart, input vertex): duplicates along seams, shared inside a chart
    key = chart.astype(np.int64)[:, None] * len(v) + f
    _, first, inverse = unique_keys(key, (int(chart.max(initial=-1)) + 1) * len(v), return_index=True)
    vmapping = f.reshape(-1)[first]
    uv = corner_uv.reshape(-1, 2)[first].astype(np.float32)
    if progress is not None:
        progress(100, 100)
    return v[vmapping].astype(np.float32), inverse.reshape(-1, 3).astype(np.int64), uv, vmapping.astype(np.int64)
