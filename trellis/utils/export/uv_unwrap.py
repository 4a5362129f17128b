"""UV unwrapping for texture baking (spec §15.3), bounded in time.

Method "geometric" (``auto`` tries it first, ``AUTO_GEOMETRIC``, see below; issue 13 §4): our own charts, cut along the
geometry (``charts.geometric_charts``: normal clusters grown over the face adjacency, split until each
is a disc of bounded bend, borders smoothed, tiny charts merged), flattened by LSCM
(``charts.flatten_charts``; faces folded over by decimation are cut out and put back into a neighbour
where they fit) and packed by our bitmap packer (``chart_pack.pack_charts``; the figures in this
paragraph are from the skyline packer before it; with the bitmap packer: 62 % bunny, 68 % nut, see
chart_pack). On the realistic bunny at the balanced budget (18 k faces, texture 1024): 92 charts, no single-triangle chart, 57 % texel use,
where xatlas on the 2 000-face pieces below gave 116 charts of which 22 % single triangles, 56 %. xatlas
given the same geometric pieces (or the whole mesh) still made 12-20 % single-triangle charts: it cuts
decimation's fold-over faces out as charts of their own. Measured with ``atlas_stats.atlas_stats``.

On the meshes ``to_glb`` unwrapped at the balanced preset on the H100 (after hidden-face removal; texture
1024, padding 2, 2 CPU cores, 2026-11-23): texel use 0.703 (bunny, 113 charts) and 0.701 (nut, 54 charts),
xatlas 0.564 / 0.554; UV time still above xatlas's there (bunny 1.17 vs 1.03 s, nut 1.07 vs 0.76 s, medians
of 7 interleaved runs on a shared runner). Then made faster at the same layouts (complex LSCM, Chebyshev
border diffusion, leaner packing; charts / chart_pack): on 2 CPU cores, those two meshes, medians of 9
interleaved runs in one process, before -> after (xatlas): bunny 0.90 -> 0.66 s (0.79), nut 0.84 -> 0.56 s
(0.67). Inside ``to_glb`` on the H100 (2026-11-23, realistic objects at the balanced preset, 1 warm-up + 3 runs,
median): UV bunny 0.90 s vs xatlas 0.93, nut 0.94 vs 0.89; ``to_glb`` 3.45 vs 3.44 s, 4.62 vs 4.86 s; texel use
0.703 / 0.701 vs 0.564 / 0.554; seam-band error ratio 0.97 / 1.06 vs 0.96 / 0.97 (the issue's "no visible seams"
baseline: 1.09); PSNR equal. So ``auto`` tries it first now (``AUTO_GEOMETRIC``; before, on 2026-11-22, it was
0.9 s slower than xatlas on the nut with seams 1.12 and texel use 53-55 %).

Then, in order, when the one before fails:

The reference calls ``xatlas.parametrize`` with default options; we ask xatlas to pack for the
texture size with a margin of ``padding`` texels around each chart (the default packs charts edge
to edge, so bilinear lookups bleed between them), and we give it the mesh cut into compact pieces of
~``PIECE_FACES`` faces: its chart search is strongly superlinear in the size of a connected piece
(a 27 k-face noisy mesh: 15 s whole, 0.75 s in 16–32 pieces, same texel use). xatlas holds the GIL, a
call cannot be interrupted, and 0.0.11 crashes (SIGSEGV) on some inputs. So it runs in a child
Python process that is killed when the time budget is spent or the caller cancels, and any failure
falls back to our own layout, which finishes in well under a second:

* "charts" layout: every face is assigned to the signed axis (one of 6) of the largest component of
  its normal, averaged over a few rings of neighbours so that surface noise does not shatter the
  charts; edge-connected faces of one class form a chart, projected orthographically onto that
  axis plane (area distortion at most 1/0.3 for the faces it keeps, no fold-over except for surfaces
  that wind around an axis). Charts are shelf-packed into the square with a margin of ``padding``
  texels, at the largest uniform scale that fits. The packed layout is rasterised to find faces
  lying under others; such a chart is rebuilt from the faces' own normals, then, if still needed,
  split into one chart per face. It uses fewer texels than xatlas (37 % vs 55 % of a 1024² texture
  on a 20 k-face test mesh) but takes ~0.1 s where xatlas takes seconds.

UV convention (everything in this package, as in OBJ and trimesh): u to the right, v UP, the texel of
(u, v) in a ``texture_size``-square image stored top row first is column u·S, row (1 − v)·S.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
from typing import Callable, Optional

import numpy as np

from ...core.callbacks import check
from . import child
from .graph import _components, face_adjacency_pairs
from .uv_winding import unmirror_charts

__all__ = ["unwrap_uv", "xatlas_time_estimate", "split_pieces", "chart_layout", "uv_coverage",
           "geometric_layout", "geometric_time_estimate"]

Progress = Optional[Callable[[int, int], None]]

# Rings of neighbours over which face normals are averaged before choosing a chart's axis; on a
# noisy sphere (vertex noise 0.002 at ~0.02 edges) 8 raised the texels in use from 30 % to 37 %.
SMOOTH_ITERATIONS = 8

# xatlas's chart search grows much faster than linearly with the size of a connected piece (27 k noisy
# faces on 2 cores: 15.3 s as one mesh; 3.6 s in 2 pieces, 1.15 s in 8, 0.78 s in 16, 0.72 s in 32, with
# the same 76 % texel use), so the mesh is cut into spatially compact pieces of about this many faces,
# each given to xatlas as its own mesh (charted in parallel, packed together into one atlas). The cuts
# only add seams where a chart would have crossed a piece boundary.
PIECE_FACES = 2000

# Whether "auto" tries the geometric layout before xatlas (see the module docstring: yes since 2026-11-23), and on
# meshes of up to how many faces: it was measured against xatlas on 18-27 k-face meshes (the balanced preset's
# realistic objects); larger ones (the high preset, noisy random-weight meshes) keep xatlas until measured.
AUTO_GEOMETRIC = True
AUTO_GEOMETRIC_MAX_FACES = 40_000
# ... and with at most this many charts once flattened: packing costs ~5 ms per chart (the FFT placement,
# 2 CPU cores, at any texture size), and a noisy mesh falls apart into hundreds of small charts (the tiny
# CPU pipeline's random-weight mesh: 509 charts on 1 805 faces, 2.7 s against xatlas's 0.2 s), where the
# realistic objects' meshes have 37-124 (2026-11-23). Past it "auto" goes to xatlas.
AUTO_GEOMETRIC_MAX_CHARTS = 300
# ... and not on a surface this noisy: when more than this share of neighbouring faces meet at over 45°
# (``charts.sharp_pair_share``) "auto" goes to xatlas at once. The realistic objects' meshes: 0.9 % (bunny),
# 0.5 % (nut); noisy random-weight decoder surfaces 64-74 %, where the segmentation ran 0.9 s (2 cores) only
# to find far more than AUTO_GEOMETRIC_MAX_CHARTS charts (the e2e benchmark's 35 k faces: 1 835).
AUTO_NOISY_SHARE = 0.25

# Times the geometric layout cuts faces found overlapping in the atlas out of their charts and packs
# again; faces still overlapping after that become charts of one face each (up to SINGLE_FACE_ROUNDS
# times: packed at a slightly different scale, faces overlapping by a sliver may then share a texel).
OVERLAP_RETRIES = 3
SINGLE_FACE_ROUNDS = 3

# Child process: load the pieces, run xatlas, save the result. Kept free of any trellis import so that
# the child starts in about 0.1 s. Input: vertices, faces sorted by piece, piece start offsets. Output,
# pieces concatenated in order: vmapping (input vertex of each output vertex), faces (indices into the
# output vertices, in the sorted order) and uvs.
_XATLAS_CHILD = r"""
import sys, numpy as np, xatlas
d = np.load(sys.argv[1])
v, f, starts = d["vertices"], d["faces"], d["starts"]
atlas = xatlas.Atlas()
used = []
for a, b in zip(starts[:-1], starts[1:]):
    u, local = np.unique(f[a:b], return_inverse=True)
    used.append(u)
    atlas.add_mesh(v[u], local.reshape(-1, 3).astype(np.uint32))
chart, pack = xatlas.ChartOptions(), xatlas.PackOptions()
chart.fix_winding, pack.rotate_charts = True, False   # xatlas turns a chart by transposing it: a mirror
pack.resolution = int(d["resolution"])
pack.padding = int(d["padding"])
atlas.generate(chart, pack)
vm, fs, uv, base = [], [], [], 0
for i, u in enumerate(used):
    vmapping, faces, uvs = atlas[i]
    vm.append(u[vmapping]); fs.append(faces.astype(np.int64) + base); uv.append(uvs); base += len(vmapping)
np.savez(sys.argv[2], vmapping=np.concatenate(vm), faces=np.concatenate(fs), uvs=np.concatenate(uv),
         atlas_count=atlas.atlas_count)
"""


def split_pieces(vertices: np.ndarray, faces: np.ndarray, piece_faces: int = PIECE_FACES) -> np.ndarray:
    """Piece id per face: the largest piece is halved at the median face centroid along the longest
    side of its centroids' box until every piece has at most ``piece_faces`` faces."""
    n = len(faces)
    pieces = [np.arange(n)]
    if n > piece_faces:
        centroid = vertices[faces].mean(1)
        done = []
        while pieces:
            g = pieces.pop()
            if len(g) <= piece_faces:
                done.append(g)
                continue
            c = centroid[g]
            axis = int(np.argmax(c.max(0) - c.min(0)))
            order = g[np.argsort(c[:, axis], kind="stable")]
            half = len(order) // 2
            pieces += [order[:half], order[half:]]
        pieces = done
    piece = np.empty(n, dtype=np.int64)
    for i, g in enumerate(pieces):
        piece[g] = i
    return piece


def xatlas_time_estimate(num_faces: int) -> float:
    """Rough xatlas run time in seconds with the mesh cut into pieces (about linear: 27 k noisy faces
    took ~0.75 s on 2 CPU cores). CPUs differ several-fold, so this only skips hopeless cases; the
    budget is what bounds the time."""
    return 1.0 * max(num_faces, 1) / 30000.0


def unwrap_uv(vertices, faces, time_budget_s: float = 10.0, progress: Progress = None, cancel=None,
              *, texture_size: int = 1024, padding: int = 2, method: str = "auto", verbose: bool = False,
              info: Optional[dict] = None):
    """Parametrise a triangle mesh into the unit square.

    vertices [V,3], faces [F,3] (numpy or torch). Returns (vertices [V',3] float32, faces [F,3]
    int64, uvs [V',2] float32, vmapping [V'] int64): vertices are duplicated along chart seams and
    vmapping gives the input vertex of each output vertex; faces keep their order, UVs wind as they do (uv_winding).

    method "auto": with ``AUTO_GEOMETRIC``, first "geometric" within ``time_budget_s`` (checked between its steps;
    skipped when its estimate exceeds the budget; a budget of 0 goes at once to "charts"; left for xatlas once it
    has more than ``AUTO_GEOMETRIC_MAX_CHARTS`` charts); past its budget, "charts"; then (or at once, the default)
    xatlas within ``time_budget_s`` (skipped at once when its estimated time exceeds two budgets), else the "charts"
    layout; "geometric" and "xatlas" (no fallback, errors raise; xatlas's budget still applies and raises
    TimeoutError); "charts". ``padding`` = margin between charts in texels of a ``texture_size`` texture.
    ``progress(done, total)`` is called with total 100; ``cancel()`` returning True raises ``Cancelled`` (the xatlas
    child is killed). If ``info`` is a dict, it receives "method" ("geometric", "xatlas" or "charts") and "seconds".
    """
    start = time.monotonic()
    info = {} if info is None else info
    v = _as_numpy(vertices, np.float32).reshape(-1, 3)
    f = _as_numpy(faces, np.int64).reshape(-1, 3)
    if method not in ("auto", "geometric", "xatlas", "charts"):
        raise ValueError(f"unknown unwrap method {method!r}")
    check(cancel)
    budget = float(time_budget_s)
    # (skipped in "auto" when its estimate exceeds the budget: then xatlas in pieces, faster on
    # large meshes, gets the budget, as before the geometric charts existed)
    if method == "geometric" or (method == "auto" and AUTO_GEOMETRIC and budget > 0
                                 and len(f) <= AUTO_GEOMETRIC_MAX_FACES
                                 and geometric_time_estimate(len(f)) <= budget):
        try:
            out = geometric_layout(v, f, texture_size=texture_size, padding=padding, progress=progress,
                                   cancel=cancel, time_budget_s=budget if budget > 0 else None,
                                   max_charts=AUTO_GEOMETRIC_MAX_CHARTS if method == "auto" else None)
            info.update(method="geometric", seconds=time.monotonic() - start)
            return out
        except Exception as e:  # any failure falls back (Cancelled does not)
            if method == "geometric" or _is_cancel(e):
                raise
            if isinstance(e, TimeoutError):
                method = "charts"       # the budget is spent: the fast layout, not xatlas as well
            if verbose:
                print(f"[unwrap_uv] geometric charts failed ({e}); using the "
                      f"{'chart layout' if method == 'charts' else 'xatlas'}")
    if method in ("auto", "xatlas") and len(f) > 0:
        budget = float(time_budget_s)
        too_slow = method == "auto" and xatlas_time_estimate(len(f)) > 2 * budget
        if budget > 0 and not too_slow:
            try:
                out = _xatlas_subprocess(v, f, budget, texture_size, padding, progress, cancel)
                info.update(method="xatlas", seconds=time.monotonic() - start)
                return out
            except Exception as e:  # any xatlas failure falls back (Cancelled does not)
                if method == "xatlas" or _is_cancel(e):
                    raise
                if verbose:
                    print(f"[unwrap_uv] xatlas failed ({e}); using the chart layout")
        elif method == "xatlas":
            raise TimeoutError(f"xatlas estimated at {xatlas_time_estimate(len(f)):.1f} s, budget {budget} s")
        elif verbose:
            print(f"[unwrap_uv] xatlas skipped (budget {budget} s, {len(f)} faces); using the chart layout")
    out = chart_layout(v, f, texture_size=texture_size, padding=padding, cancel=cancel)
    info.update(method="charts", seconds=time.monotonic() - start)
    if progress is not None:
        progress(100, 100)
    return out


def geometric_time_estimate(num_faces: int) -> float:
    """Rough run time of the geometric layout in seconds (18 k faces ~1 s, 27 k faces of a CAD nut
    ~2.5 s, 150 k faces ~15 s on 2 shared CPU cores, where xatlas in pieces took 1.0, 1.0 and 8.7 s)."""
    return max(num_faces, 1) / 10000.0


_blas_lock = threading.Lock()
_blas_users = 0             # callers inside ``one_blas_thread`` now (threads may overlap)
_blas_limiter = None


@contextlib.contextmanager
def one_blas_thread():
    """A context in which the BLAS libraries loaded in this process (numpy's and scipy's OpenBLAS, MKL) run on
    one thread (``threadpoolctl``; no-op without it). The chart layout makes thousands of small BLAS calls
    (matrix-vector products of a few columns, SuperLU's kernels in the LSCM solve): on a 16-core H100 host each
    woke 16 OpenBLAS threads and the nut's unwrap took 1.22 s instead of 0.93 s with one (bunny 1.01 vs 0.87 s;
    docs/BENCHMARKS.md, fifteenth session). The limit is process-wide: the first caller in sets it, the last one
    out restores what was there before (so overlapping callers in several threads leave the setting as found);
    scipy's sparse solvers are imported first so that their BLAS is loaded, and limited, too."""
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


def geometric_layout(vertices, faces, texture_size: int = 1024, padding: int = 2, progress: Progress = None,
                     cancel=None, time_budget_s: Optional[float] = None, max_charts: Optional[int] = None):
    """Our charts: cut along the geometry, flattened by LSCM, skyline-packed (module docstring).
    Same outputs as ``unwrap_uv``; raises on a failure (non-finite coordinates, overlaps found, more
    than ``max_charts`` charts after the segmentation or the flattening) and TimeoutError between its
    steps once ``time_budget_s`` is spent. BLAS runs on one thread meanwhile (``one_blas_thread``)."""
    with one_blas_thread():
        return _geometric_layout(vertices, faces, texture_size, padding, progress, cancel, time_budget_s, max_charts)


def _geometric_layout(vertices, faces, texture_size, padding, progress, cancel, time_budget_s, max_charts):
    start = time.monotonic()
    user_cancel = cancel

    def cancel():
        if time_budget_s is not None and time.monotonic() - start > time_budget_s:
            raise TimeoutError(f"geometric charts ran past their {time_budget_s:.1f} s budget")
        return user_cancel is not None and user_cancel()

    from .atlas_stats import overlapping_faces
    from .chart_pack import pack_charts
    from .charts import (TooManyCharts, _Mesh, at_most, flatten_charts, geometric_charts, sharp_pair_share,
                         single_face_charts)
    v = _as_numpy(vertices, np.float64).reshape(-1, 3)
    f = _as_numpy(faces, np.int64).reshape(-1, 3)
    mesh = _Mesh(v, f)
    if max_charts is not None:
        noisy = sharp_pair_share(mesh)
        if noisy > AUTO_NOISY_SHARE:
            raise TooManyCharts(f"geometric charts: a noisy surface ({100 * noisy:.0f} % of neighbouring faces "
                                f"meet at over 45 degrees)")
    chart = geometric_charts(v, f, mesh=mesh, max_charts=max_charts)   # raises early on a hopeless mesh
    check(cancel)
    if progress is not None:
        progress(30, 100)
    chart, tri = flatten_charts(v, f, chart, mesh=mesh)
    if not np.isfinite(tri).all():
        raise RuntimeError("geometric charts: the flattening did not converge")
    at_most(chart, max_charts, " after flattening")          # the flattening adds charts (cut-out faces)
    check(cancel)
    if progress is not None:
        progress(60, 100)
    pack_info = {}
    for attempt in range(OVERLAP_RETRIES + SINGLE_FACE_ROUNDS + 1):
        corner_uv = pack_charts(tri, chart, int(texture_size), int(padding), info=pack_info)
        check(cancel)
        # LSCM keeps every triangle unfolded, but a chart can still run over itself (around a
        # vertex whose angles add up to more than a turn, or along its border): the faces found
        # overlapping are cut out (their charts re-solved, they are put back where they fit) and
        # the layout is packed again
        # checked at the texture's texels; before packing again also on a grid twice as fine: faces
        # overlapping by a sliver may share no texel centre at this scale but one at the slightly
        # different scale of the next packing
        corners = np.arange(3 * len(f)).reshape(-1, 3)
        bad = overlapping_faces(corners, corner_uv.reshape(-1, 2), int(texture_size))
        if not bad.any():
            break
        bad |= overlapping_faces(corners, corner_uv.reshape(-1, 2), min(2 * int(texture_size), 8192))
        if attempt == OVERLAP_RETRIES + SINGLE_FACE_ROUNDS:
            raise RuntimeError(f"geometric charts: {int(bad.sum())} faces overlap in the atlas")
        if attempt >= OVERLAP_RETRIES:    # the last few become charts of one face (these cannot overlap)
            chart, tri = single_face_charts(v, f, chart, tri, bad)
        else:
            chart, tri = flatten_charts(v, f, chart, mesh=mesh, tri=tri, detach=bad)
        check(cancel)
    # one output vertex per (chart, input vertex): duplicates along seams, shared inside a chart
    key = chart.astype(np.int64)[:, None] * len(v) + f
    _, first, inverse = np.unique(key.reshape(-1), return_index=True, return_inverse=True)
    vmapping = f.reshape(-1)[first]
    uv = corner_uv.reshape(-1, 2)[first].astype(np.float32)
    if progress is not None:
        progress(100, 100)
    return v[vmapping].astype(np.float32), inverse.reshape(-1, 3).astype(np.int64), uv, vmapping.astype(np.int64)


def _is_cancel(e: BaseException) -> bool:
    from ...core.callbacks import Cancelled
    return isinstance(e, Cancelled)


def _as_numpy(x, dtype) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(x), dtype=dtype)


def _xatlas_subprocess(v, f, budget, texture_size, padding, progress, cancel):
    """Run xatlas in a child process; kill it on timeout or cancel."""
    start = time.monotonic()
    estimate = max(xatlas_time_estimate(len(f)), 0.1)
    with tempfile.TemporaryDirectory(prefix="trellis_uv_") as tmp:
        src, dst = os.path.join(tmp, "in.npz"), os.path.join(tmp, "out.npz")
        piece = split_pieces(v, f)
        order = np.argsort(piece, kind="stable")
        starts = np.searchsorted(piece[order], np.arange(int(piece.max()) + 2))
        np.savez(src, vertices=v, faces=f[order].astype(np.uint32), starts=starts,
                 resolution=int(texture_size), padding=int(padding))
        # Same interpreter and environment (so xatlas is found wherever this process finds it),
        # started in the temporary folder so that nothing in the caller's cwd shadows a module.
        proc = child.start(_XATLAS_CHILD, (src, dst), tmp, keep_stderr=True)
        if proc is None:
            raise RuntimeError("xatlas: no child process can be started here")
        try:
            while proc.poll() is None:
                check(cancel)
                elapsed = time.monotonic() - start
                if elapsed > budget:
                    raise TimeoutError(f"xatlas ran past its {budget:.1f} s budget")
                if progress is not None:
                    progress(min(99, int(100 * elapsed / estimate)), 100)
                time.sleep(0.02)
        finally:
            child.stop(proc)
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        if proc.stderr:
            proc.stderr.close()
        if proc.returncode != 0:
            raise RuntimeError(f"xatlas exited with {proc.returncode}: {err.strip()[-500:]}")
        out = np.load(dst)
        vmapping = out["vmapping"].astype(np.int64)
        new_faces = np.empty_like(f)
        new_faces[order] = out["faces"].astype(np.int64)  # back to the input face order
        uvs = unmirror_charts(new_faces, out["uvs"], texture_size, padding)     # charts xatlas still mirrored
        atlas_count = int(out["atlas_count"])
    if atlas_count != 1 or new_faces.shape != f.shape:
        raise RuntimeError(f"xatlas produced {atlas_count} atlases / {new_faces.shape} faces")
    if progress is not None:
        progress(100, 100)
    return v[vmapping], new_faces, uvs, vmapping


# ---------------------------------------------------------------------------------- chart layout

def _shelf_pack(widths, heights, size, padding):
    """Largest scale s (texels per unit) at which boxes of s·w + 2p by s·h + 2p fit a size² square
    in shelves (rows by decreasing height). Returns (s, x0 [N], y0 [N]) in texels (row-down y)."""
    order = np.argsort(-heights, kind="stable")
    w_sorted, h_sorted = widths[order], heights[order]

    def place(s):
        bw = s * w_sorted + 2 * padding
        bh = s * h_sorted + 2 * padding
        if bw.max(initial=0) > size:
            return None
        cum = np.concatenate([[0.0], np.cumsum(bw)])
        xs, ys = np.empty(len(bw)), np.empty(len(bw))
        i, y = 0, 0.0
        while i < len(bw):
            j = int(np.searchsorted(cum, cum[i] + size, side="right")) - 1  # items i..j-1 fit
            j = max(j, i + 1)
            xs[i:j] = cum[i:j] - cum[i]
            ys[i:j] = y
            y += bh[i]
            if y > size:
                return None
            i = j
        return xs, ys

    lo, hi = 0.0, size / max(float(np.sqrt((widths * heights).sum())), 1e-12)
    while place(hi) is not None:  # the area bound is rarely reachable; make sure hi is infeasible
        lo, hi = hi, hi * 2
    best = place(lo) if lo > 0 else None
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        got = place(mid)
        if got is None:
            hi = mid
        else:
            lo, best = mid, got
        if hi - lo < 1e-4 * hi:
            break
    if best is None:
        raise RuntimeError("chart layout: too many charts for the texture size and padding")
    xs, ys = np.empty(len(order)), np.empty(len(order))
    xs[order], ys[order] = best
    return lo, xs, ys


def _layout(v, f, chart_of_face, planar_xy, size, padding):
    """Pack charts given per-corner 2-D coordinates [F,3,2] (world units) and a chart id per face."""
    nchart = int(chart_of_face.max()) + 1 if len(f) else 0
    corner_chart = np.repeat(chart_of_face, 3)
    pts = planar_xy.reshape(-1, 2)
    lo = np.full((nchart, 2), np.inf)
    hi = np.full((nchart, 2), -np.inf)
    np.minimum.at(lo, corner_chart, pts)
    np.maximum.at(hi, corner_chart, pts)
    ext = np.maximum(hi - lo, 1e-9)
    # So many charts (a noisy mesh of ~10^5 faces) that their margins alone overflow the texture: fewer
    # texels of margin (texture inpainting still fills the seams) rather than a failed export. At
    # zero padding every scale small enough fits.
    for pad in dict.fromkeys([padding, min(padding, 1), 0]):
        try:
            scale, x0, y0 = _shelf_pack(ext[:, 0], ext[:, 1], size, pad)
            break
        except RuntimeError:
            if pad == 0:
                raise
    padding = pad
    tex = (pts - lo[corner_chart]) * scale + np.stack([x0, y0], 1)[corner_chart] + padding
    uv = np.stack([tex[:, 0] / size, 1.0 - tex[:, 1] / size], 1)
    # One output vertex per (chart, input vertex): duplicates along seams, shared inside a chart.
    key = corner_chart.astype(np.int64) * len(v) + f.reshape(-1)
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    vmapping = f.reshape(-1)[first]
    return v[vmapping], inverse.reshape(-1, 3).astype(np.int64), uv[first].astype(np.float32), vmapping


def _per_face_planar(v, f):
    """Each triangle in its own plane: corner 2-D coordinates [F,3,2] (isometric, world units)."""
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    e0 = b - a
    n = np.cross(e0, c - a)
    e0 /= np.maximum(np.linalg.norm(e0, axis=1, keepdims=True), 1e-20)
    e1 = np.cross(n, e0)
    e1 /= np.maximum(np.linalg.norm(e1, axis=1, keepdims=True), 1e-20)
    rel = np.stack([np.zeros_like(a), b - a, c - a], 1)
    return np.stack([(rel * e0[:, None]).sum(-1), (rel * e1[:, None]).sum(-1)], -1)


def uv_coverage(faces, uvs, texture_size: int, device=None):
    """Rasterise the UV layout: face id per texel [S,S] int64 (0 = empty, f + 1), row 0 = top."""
    import torch

    from ...renderers.mesh_render import rasterize
    uv = uvs if torch.is_tensor(uvs) else torch.from_numpy(np.asarray(uvs))
    fc = faces if torch.is_tensor(faces) else torch.from_numpy(np.asarray(faces))
    device = device if device is not None else uv.device
    uv = uv.to(device=device, dtype=torch.float32)
    fc = fc.to(device=device, dtype=torch.int64)
    clip = torch.stack([uv[:, 0] * 2 - 1, 1 - uv[:, 1] * 2, torch.zeros_like(uv[:, 0]),
                        torch.ones_like(uv[:, 0])], -1)
    face_id, _, _ = rasterize(clip, fc, texture_size, texture_size, with_bary=False)
    return face_id


def _signed_axis_class(n):
    axis = np.abs(n).argmax(1)
    return axis, axis * 2 + (n[np.arange(len(n)), axis] < 0)


def chart_layout(vertices, faces, texture_size: int = 1024, padding: int = 2, cancel=None,
                 smooth_iterations: int = SMOOTH_ITERATIONS):
    """Our fallback parametrisation (see the module docstring). Same outputs as ``unwrap_uv``.

    Faces are classed by their normal averaged over ``smooth_iterations`` rings of neighbours
    (so surface noise does not shatter charts), except where their own normal leans less than
    ~73° toward that axis (then by their own normal, which keeps the projection unfolded).
    """
    v = _as_numpy(vertices, np.float64).reshape(-1, 3)
    f = _as_numpy(faces, np.int64).reshape(-1, 3)
    if len(f) == 0:
        return (v.astype(np.float32), f, np.zeros((len(v), 2), np.float32), np.arange(len(v)))
    n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    pairs = face_adjacency_pairs(f)
    axis, cls = _signed_axis_class(n)
    if smooth_iterations > 0 and len(pairs):
        from scipy.sparse import coo_matrix
        adj = coo_matrix((np.ones(2 * len(pairs)), (np.r_[pairs[:, 0], pairs[:, 1]],
                                                     np.r_[pairs[:, 1], pairs[:, 0]])),
                         shape=(len(f), len(f))).tocsr()
        ns = n.copy()
        for _ in range(smooth_iterations):
            ns = ns + adj @ ns
            ns /= np.maximum(np.linalg.norm(ns, axis=1, keepdims=True), 1e-30)
        axis_s, cls_s = _signed_axis_class(ns)
        sign = np.where(cls_s % 2 == 1, -1.0, 1.0)
        lean = n[np.arange(len(f)), axis_s] * sign / np.maximum(np.linalg.norm(n, axis=1), 1e-30)
        ok = lean >= 0.3
        axis, cls = np.where(ok, axis_s, axis), np.where(ok, cls_s, cls)
    own_axis, own_cls = _signed_axis_class(n)
    per_face = np.zeros(len(f), dtype=bool)
    for attempt in range(3):
        # Charts: edge-connected faces of one class (or single faces), projected orthographically
        # onto their axis plane; a chart found overlapping itself is rebuilt with the faces' own
        # classes, and if it still overlaps, split into one chart per face.
        same = (cls[pairs[:, 0]] == cls[pairs[:, 1]]) & ~per_face[pairs[:, 0]] & ~per_face[pairs[:, 1]]
        kept = pairs[same]
        chart = _components(len(f), kept[:, 0], kept[:, 1])[1]
        keep = np.array([[1, 2], [2, 0], [0, 1]])[axis]  # the two other coordinates, [F,2]
        planar = np.take_along_axis(v[f], np.broadcast_to(keep[:, None, :], (len(f), 3, 2)), axis=2)
        if per_face.any():
            planar[per_face] = _per_face_planar(v, f[per_face])
        check(cancel)
        out = _layout(v, f, chart, planar, texture_size, padding)
        check(cancel)
        if attempt == 2:
            break
        overlapped = _overlapping_faces(out[1], out[2], texture_size)
        if not overlapped.any():
            break
        bad = np.isin(chart, np.unique(chart[overlapped]))
        if attempt == 0:
            axis, cls = np.where(bad, own_axis, axis), np.where(bad, own_cls, cls)
        else:
            per_face |= bad
    vv, ff, uv, vm = out
    return vv.astype(np.float32), ff, unmirror_charts(ff, uv, texture_size, own_boxes=True), vm.astype(np.int64)


def _overlapping_faces(faces, uvs, size):
    """Faces that own clearly fewer texels than their UV area: they lie under other faces."""
    face_id = uv_coverage(faces, uvs, size).reshape(-1).cpu().numpy()
    owned = np.bincount(face_id, minlength=len(faces) + 1)[1:]
    t = uvs[faces] * size
    area = 0.5 * np.abs((t[:, 1, 0] - t[:, 0, 0]) * (t[:, 2, 1] - t[:, 0, 1])
                        - (t[:, 1, 1] - t[:, 0, 1]) * (t[:, 2, 0] - t[:, 0, 0]))
    return (area >= 6) & (owned < 0.5 * area)
