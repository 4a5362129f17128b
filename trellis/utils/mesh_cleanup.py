"""Mesh clean-up before GLB export (spec §15.1-§15.2), with permissive tools only.

The chain used by ``to_glb`` is ``clean_mesh_for_export``:

1. ``simplify_mesh``: quadric decimation (fast-simplification, MIT) removing a fraction of faces.
2. ``face_visibility``: in how many of a set of orbit views each face owns at least one pixel,
   using our own rasteriser (``trellis.renderers.mesh_render.rasterize``). Many views are
   rasterised in one call, as tiles of one large image (an "atlas"), so that a GPU gets big
   kernels instead of thousands of small ones.
3. ``remove_invisible_faces``: an s-t minimum cut on the dual graph separates hidden faces
   (inner shells) from well-seen ones; ``scipy.sparse.csgraph.maximum_flow`` solves it.
4. ``fill_holes``: boundary loops up to a number of edges are closed by a fan around the loop's
   centroid, wound consistently with the faces around the hole.

Everything here is our own code; the reference's igraph (GPL) and pymeshfix (AGPL) are not used.

Choice of views (measured on an H200, 2026-11-22)
-------------------------------------------------
The default is the reference's own camera set, 1000 views at 1024x1024, because fewer views
do not give the same result. Test shapes: four "creature" meshes (tests/test_mesh_cleanup.py:
body, head, handle, a narrow slot, a hollow cavity with a ball inside; 0.58-0.91 M faces,
29-46 k after simplify 0.95) and a 1.4 M-face bumpy sphere with an inner sphere (70 k after).
Yardstick: the reference set's own noise, i.e. the same 1000 views with the mesh turned by
0.7/1.9/3.1 degrees about z. Faces whose removal decision differs from the unturned 1000-view
run (all shapes cut away 3.4 k-20 k faces):

    views @ res    visibility time   mean |dvis|   faces decided differently
    1000 @ 1024    1.8-2.4 s         -             18-163 (turned 1000-view sets: noise floor)
     500 @ 1024    0.9-1.0 s         0.0023        56-210
     250 @ 1024    0.44-0.51 s       0.0034        93-333
     250 @ 768     0.29-0.35 s       0.0050        73-403
     250 @ 512     0.13-0.20 s       0.011-0.04    153-754
     125 @ 1024    0.22-0.29 s       0.0055        110-510

On one creature the hidden cavity is joined to the outside through the slot and its removal
hinges on the 0.04 hole-area limit (opened loop area 0.035-0.042). There the decision flips
between runs; over 16 turns of the mesh it was "remove" in 3/16 runs with 1000 views, 6/16 with
500 and 10/16 with 250: fewer views see fewer faces through narrow openings, so more faces
count as never seen and more gets cut. Lower resolution drops small faces' pixels with the same
bias. So 1000 @ 1024 stays the default, and the speed comes from rendering ~36 views per
rasteriser call (an atlas): 1.8-2.4 s on an H200 for 30-70 k faces; with 9 views per call it
took 6.9 s, as each call costs tens of milliseconds of kernel launches and syncs.
``FAST_VISIBILITY_VIEWS`` / ``FAST_VISIBILITY_RESOLUTION`` (250 @ 1024) is 4x faster and stays
within ~2-3x the noise floor on ordinary shapes, at the cost of the bias above; it is opt-in.
On a CPU every 1024^2 view costs ~0.1-0.2 s whatever the mesh, so 1000 views take minutes.

The CPU's views (``visibility_settings``, used when the caller sets no views / resolution)
------------------------------------------------------------------------------------------
On a busy 2-core CPU the 1000 views at 1024^2 took 15-30 min (0.4-6 s per view; 23 of 25 minutes
of a tiny-pipeline job). There the cost is about proportional to the pixels rasterised (plus a
per-face setup), and what a view must resolve is the mesh's faces, not a fixed pixel count: so the
CPU renders at the lowest resolution (multiple of 64, 256..1024, at most 384 with the pixel bound
below) where the small faces (10th percentile of sqrt(2 x area)) still span 4 pixels, and as many
views as 2**24 pixels in all allow (at least 100, at most 1000): 256 views at 256^2 for coarse
meshes, ~110 at 384^2 for a dense one, a few seconds either way. Ray casting per face was the other
candidate; it needs an acceleration structure we do not have and an occlusion test with a depth
tolerance that the decoder's inner sheet (a voxel or two behind the outer one) defeats, whereas
the face-id raster decides ownership exactly. Measured on this repository's CPU runner (2 cores,
busy, torch 2.13 CPU, 2026-11-22) against the 1000-view @ 1024^2 answer computed on the same CPU,
after simplify 0.95; "differ" = faces whose removal decision differs (all were extra removals):

    mesh (faces after simplify)               views @ res     time    removed (1000@1024)  differ
    realistic bunny (benchmarks/realistic_        113 @ 384   2.6 s   17607 (17594)         13
      objects.py: decoder-like two-sheet          100 @ 256   1.8 s   17619                 25
      shell, 36 550 faces)                        256 @ 256   4.2 s   17605                 11
                                                 1000 @ 256  20.0 s   17598                  6
                                                  250 @ 512   9.3 s   17599                  5
    creature (tests, n=128: 7 198 faces)          163 @ 320  23.0 s*  2750 (2750)            0
                                                  100 @ 384   3.7 s   2751                   1
                                                 1000 @ 256  32.0 s   2750                   0

The chosen settings are the first row of each mesh (* the test suite shared the 2 cores during that
run; the other rows ran after it). Both stay inside the GPU study's noise floor above (18-163 faces differ
between turned 1000-view sets); the 1000 @ 1024 reference itself took 15 min (bunny) and 33 min
(creature) on that CPU. The bias of fewer views (more faces never seen, so slightly more cut)
shows as the extra removals; 4x more views at the same resolution halves it.

Arrays are numpy float32 vertices [V,3] and int64 faces [F,3]; torch tensors are accepted too.
``progress(stage, i, n)`` is called as work advances and ``cancel`` (a callable returning True to
stop) is checked between steps through ``trellis.utils.cancel.check``.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import breadth_first_order, connected_components, maximum_flow

from .cancel import check as _check_cancel

__all__ = [
    "simplify_mesh", "face_visibility", "remove_invisible_faces", "fill_holes",
    "clean_mesh_for_export", "merge_duplicate_vertices", "simplify_time_estimate", "decimation_pieces", "boundary_edges", "invisible_face_mask",
    "DEFAULT_VISIBILITY_VIEWS", "DEFAULT_VISIBILITY_RESOLUTION",
    "REFERENCE_VISIBILITY_VIEWS", "REFERENCE_VISIBILITY_RESOLUTION",
    "FAST_VISIBILITY_VIEWS", "FAST_VISIBILITY_RESOLUTION",
    "visibility_settings", "CPU_VISIBILITY_PIXELS", "CPU_VISIBILITY_MIN_VIEWS", "CPU_PIXELS_PER_SMALL_FACE",
]

Progress = Optional[Callable[[str, int, int], None]]

# The reference rasterises 1000 views at 1024x1024 (spec §15.2) and so do we by default: fewer
# views measurably change which hidden parts are cut (see "Choice of views" above); the speed
# comes from rendering many views per call instead. FAST_* is an opt-in 4x cheaper preset.
REFERENCE_VISIBILITY_VIEWS = 1000
REFERENCE_VISIBILITY_RESOLUTION = 1024
DEFAULT_VISIBILITY_VIEWS = REFERENCE_VISIBILITY_VIEWS
DEFAULT_VISIBILITY_RESOLUTION = REFERENCE_VISIBILITY_RESOLUTION
FAST_VISIBILITY_VIEWS = 250
FAST_VISIBILITY_RESOLUTION = 1024
# On a CPU (``visibility_settings``): all views together rasterise about this many pixels, never
# fewer than CPU_VISIBILITY_MIN_VIEWS views, at the lowest resolution (a multiple of 64, 256..1024)
# where the mesh's small faces (10th percentile of sqrt(2 x area)) still span
# CPU_PIXELS_PER_SMALL_FACE pixels. See "The CPU's views" in the module docstring.
CPU_VISIBILITY_PIXELS = 1 << 24
CPU_VISIBILITY_MIN_VIEWS = 100
CPU_PIXELS_PER_SMALL_FACE = 4.0
# Peak memory of one atlas call, measured on an H200: ~58 bytes per atlas pixel.
_BYTES_PER_ATLAS_PIXEL = 64

# Min-cut capacities are integers for scipy: every weight of the reference (edge length x 1000,
# terminal links 1 x 1000) is multiplied by this extra factor and rounded. Scaling all
# capacities by one constant does not move the minimum cut, so this only sets the rounding
# step (1/1.024e6 of a length unit) while keeping every arc far below scipy's int32 limit.
_CUT_RESOLUTION = 1024


def _report(progress: Progress, stage: str, i: int, n: int) -> None:
    if progress is not None:
        progress(stage, i, n)


def _to_numpy(vertices, faces):
    """(float64 [V,3], int64 [F,3]) numpy copies of torch or numpy inputs."""
    if hasattr(vertices, "detach"):
        vertices = vertices.detach().cpu().numpy()
    if hasattr(faces, "detach"):
        faces = faces.detach().cpu().numpy()
    v = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    return v, f


def _output(vertices, faces):
    return (np.ascontiguousarray(vertices, dtype=np.float32),
            np.ascontiguousarray(faces, dtype=np.int64).reshape(-1, 3))


def _drop_unreferenced(vertices, faces):
    used = np.zeros(len(vertices), dtype=bool)
    used[faces.reshape(-1)] = True
    remap = np.cumsum(used) - 1
    return vertices[used], remap[faces]


# ---------------------------------------------------------------------------------------------
# §15.1 simplification


def merge_duplicate_vertices(vertices, faces):
    """Merge bit-identical vertex positions and drop faces that become degenerate."""
    v = np.asarray(vertices)
    f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if len(v) == 0:
        return v, f
    order = np.lexsort(v.T[::-1])
    sv = v[order]
    new_group = np.ones(len(v), dtype=bool)
    new_group[1:] = np.any(sv[1:] != sv[:-1], axis=1)
    group = np.cumsum(new_group) - 1
    remap = np.empty(len(v), dtype=np.int64)
    remap[order] = group
    merged = sv[new_group]
    f = remap[f]
    keep = (f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 2] != f[:, 0])
    return merged, f[keep]


def _cancel_coincident_faces(faces):
    """Faces on the same three vertices: opposite windings cancel in pairs, repeats collapse.

    The decimator sometimes folds a patch into a back-to-back pair of faces (a zero-volume fin
    whose edges are then used four times). Per vertex set the kept result is the net winding:
    nothing for a back-to-back pair, one face otherwise.
    """
    if len(faces) == 0:
        return faces
    first = np.argmin(faces, axis=1)
    rows = np.arange(len(faces))[:, None]
    rot = faces[rows, (first[:, None] + np.arange(3)) % 3]  # smallest vertex first
    sign = np.where(rot[:, 1] < rot[:, 2], 1, -1)
    canon = np.stack([rot[:, 0], np.minimum(rot[:, 1], rot[:, 2]),
                      np.maximum(rot[:, 1], rot[:, 2])], -1)
    order = np.lexsort(canon.T[::-1])
    sc = canon[order]
    start = np.ones(len(sc), dtype=bool)
    start[1:] = np.any(sc[1:] != sc[:-1], axis=1)
    if start.all():
        return faces
    group = np.cumsum(start) - 1
    net = np.bincount(group, weights=sign[order]).astype(np.int64)
    # Keep the first face of each group whose winding agrees with the net winding.
    agrees = sign[order] == np.sign(net)[group]
    pick = np.zeros(len(sc), dtype=bool)
    cand = np.nonzero(agrees & (net[group] != 0))[0]
    _, first_in_group = np.unique(group[cand], return_index=True)
    pick[cand[first_in_group]] = True
    keep = np.zeros(len(faces), dtype=bool)
    keep[order[pick]] = True
    return faces[keep]


# Decimation in pieces. fast-simplification is single-threaded (~1.2-1.5 s for 731 k faces on a GPU
# host's CPU, 8-10 s for 2.9 M noisy ones), so a large mesh is cut into compact pieces (recursive median
# splits of the faces' first corners along the longest extent), each piece is decimated in its own child
# process with its cut edges (and any open border) kept where they are, to PIECE_SLACK times its share of
# the target, and a final pass over the re-joined mesh (another child) decimates to the target with
# every edge free, the seams included. The number of pieces depends on the face count only (never on
# the machine's cores), so a mesh gives the same result everywhere.
# Distance to the source surface (mean / p99, voxels of 1/256), realistic bunny 731 k -> 36.5 k faces:
# one pass 0.194 / 0.453; thin slabs (first try) with slack 1.25: 2 / 4 / 8 pieces 0.190 / 0.448,
# 0.196 / 0.463, 0.228 / 0.723 (too much of a thin piece is seam), slack 2: 16 pieces 0.215 / 0.622;
# compact pieces, slack 2: 4 pieces 0.190 / 0.439, 16 pieces 0.193 / 0.445; the CAD nut (1.1 M faces)
# 0.272 / 0.975 in one pass, 0.240 / 0.58 in 4-16 pieces (the final pass re-plans the seams' region).
# Time on a 16-core H100 host (benchmarks/decimation.py, docs/BENCHMARKS.md): 731 k faces 1.30 s one
# pass, 1.32-1.40 s in 4 pieces (child start-up and the extra merge eat the gain: below
# PIECES_FROM_FACES one pass, in-process); the e2e random-weight decoder mesh (1.52 M faces) 4.2 -> 2.6 s
# in 8 pieces; 2.92 M noisy faces 8.2 -> 3.9 s in 16.
PIECE_MIN_FACES = 150_000
PIECES_FROM_FACES = 1_000_000
MAX_PIECES = 16
PIECE_SLACK = 2.0

# A decimation child process (a piece, or a whole mesh): no trellis import, so it starts in ~0.1 s.
_PIECE_CHILD = r"""
import sys, numpy as np, fast_simplification
d = np.load(sys.argv[1])
v, f = fast_simplification.simplify(d["vertices"], d["faces"], target_count=int(d["target"]),
                                    preserve_border=bool(d["preserve_border"]))
np.savez(sys.argv[2], vertices=np.asarray(v, dtype=np.float64), faces=np.asarray(f, dtype=np.int32))
"""


def decimation_pieces(n_faces: int) -> int:
    """How many pieces ``simplify_mesh`` decimates a mesh of ``n_faces`` faces in: 1 below
    PIECES_FROM_FACES, else a power of two, each piece at least PIECE_MIN_FACES faces, at most MAX_PIECES."""
    p = 1
    while n_faces >= PIECES_FROM_FACES and p < MAX_PIECES and n_faces >= 2 * p * PIECE_MIN_FACES:
        p *= 2
    return p


def _split_compact(points: np.ndarray, pieces: int) -> list:
    """Indices of ``points`` [N,3] in ``pieces`` (a power of two) compact groups of equal size: each
    group is halved at the median of its longest extent until there are enough. Each group lists its
    points in ascending order."""
    cols = np.ascontiguousarray(np.asarray(points, dtype=np.float32).T)     # [3, N]: fast per-axis work
    groups = [np.arange(len(points))]
    while len(groups) < pieces:
        halves = []
        for g in groups:
            probe = cols[:, g[:: max(1, len(g) // 65536)]]          # the extent of a sample is enough
            axis = int(np.argmax(probe.max(axis=1) - probe.min(axis=1)))
            lower = np.zeros(len(g), dtype=bool)
            lower[np.argpartition(cols[axis, g], len(g) // 2 - 1)[: len(g) // 2]] = True
            halves += [g[lower], g[~lower]]
        groups = halves
    return groups


def _workers() -> int:
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _decimate(v, f, target: int, preserve_border: bool = False):
    import fast_simplification

    v2, f2 = fast_simplification.simplify(v, f.astype(np.int32, copy=False), target_count=target,
                                          preserve_border=preserve_border)
    return np.asarray(v2, dtype=np.float64), np.asarray(f2, dtype=np.int64).reshape(-1, 3)


class _Decimation:
    """The decimation of a merged mesh to ``target`` faces as child processes that ``poll()`` advances
    (it never blocks on a child): either one child for the whole mesh, or ``pieces`` compact pieces (one
    child each, at most one per core, borders kept, PIECE_SLACK times their share) and then one child for
    the re-joined mesh. A child that fails or cannot start is replaced by the same call in this process,
    with the same result. ``result()`` is the raw decimator output; ``close()`` kills the children and
    removes the folder (``folder``)."""

    def __init__(self, v, f, target: int, pieces: int):
        import tempfile

        self.target, self.folder = target, tempfile.mkdtemp(prefix="trellis_simplify_")
        self.proc = None             # the last child started
        self._running, self._pending, self._done, self._result = {}, [], {}, None
        try:
            if pieces > 1 and target * PIECE_SLACK < len(f):
                self.phase = "pieces"
                groups = _split_compact(v[f[:, 0]], pieces)    # a face's first corner stands for the face
                for g in groups:
                    used = np.zeros(len(v), dtype=bool)
                    used[f[g].reshape(-1)] = True
                    share = max(1, int(math.ceil(target * PIECE_SLACK * len(g) / len(f))))
                    self._add(v[used], (np.cumsum(used) - 1)[f[g]], share, True)
            else:
                self.phase = "whole"
                self._add(v, f, target, False)
            self.steps = len(self._pending) + (1 if self.phase == "pieces" else 0)
        except BaseException:
            self.close()
            raise

    def _add(self, v, f, target, preserve_border):
        import os

        i = self._files = getattr(self, "_files", -1) + 1
        src, dst = os.path.join(self.folder, f"in{i}.npz"), os.path.join(self.folder, f"out{i}.npz")
        np.savez(src, vertices=v, faces=f.astype(np.int32), target=target, preserve_border=preserve_border)
        self._pending.append((i, src, dst))

    def finished_steps(self) -> int:
        return len(self._done) if self.phase == "pieces" else len(self._done) + (self.steps - 1)

    def poll(self) -> bool:
        """Starts what may start, collects what ended; True once the result is in."""
        import subprocess
        import sys

        if self._result is not None:
            return True
        for i, (proc, src, dst) in list(self._running.items()):
            if proc.poll() is None:
                continue
            del self._running[i]
            self._done[i] = self._collect(proc.returncode, src, dst)
        while self._pending and len(self._running) < _workers():
            i, src, dst = self._pending.pop(0)
            try:
                self.proc = subprocess.Popen([sys.executable, "-c", _PIECE_CHILD, src, dst], cwd=self.folder,
                                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                self._running[i] = (self.proc, src, dst)
            except OSError:                  # no child possible: this step is done here
                self._done[i] = self._collect(None, src, dst)
        if self._pending or self._running:
            return False
        parts = [self._done[i] for i in sorted(self._done)]
        if self.phase == "pieces":
            # Re-join: a piece's border vertices never moved, so the pieces' copies of a seam vertex are
            # bit-identical and merge. Then the whole mesh once more, every edge free.
            base, faces = 0, []
            for pv, pf in parts:
                faces.append(pf + base)
                base += len(pv)
            v, f = merge_duplicate_vertices(np.concatenate([pv for pv, _ in parts]), np.concatenate(faces))
            self.phase, self._done = "whole", {}
            if self.target < len(f):
                self._add(v, f, self.target, False)
                return self.poll()
            parts = [(v, f)]
        self._result = parts[0]
        return True

    @staticmethod
    def _collect(returncode, src, dst):
        if returncode == 0:
            try:
                with np.load(dst) as out:
                    return out["vertices"], out["faces"].astype(np.int64).reshape(-1, 3)
            except (OSError, ValueError, KeyError):
                pass
        with np.load(src) as d:              # the child failed: the same call in this process
            return _decimate(d["vertices"], d["faces"], int(d["target"]), bool(d["preserve_border"]))

    def result(self):
        return self._result

    def close(self) -> None:
        import shutil

        for proc, _, _ in self._running.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        self._running = {}
        shutil.rmtree(self.folder, ignore_errors=True)


def _prepare(vertices, faces, reduction):
    """(merged vertices float64, faces int64, target face count) for a decimation by ``reduction``."""
    v, f = _to_numpy(vertices, faces)
    if reduction >= 1:
        raise ValueError(f"reduction must be below 1 (got {reduction}); 0.95 removes 95 % of faces")
    if reduction <= 0 or len(f) == 0:
        return v, f, len(f)
    v, f = merge_duplicate_vertices(v, f)
    # Count from the merged mesh so that "remove 95 %" means the same with or without duplicates.
    return v, f, max(1, int(round(len(f) * (1.0 - reduction))))


def _finish(v, f):
    """Decimator output -> (float32 vertices, int64 faces): degenerate and coincident faces dropped."""
    keep = (f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 2] != f[:, 0])
    return _output(*_drop_unreferenced(v, _cancel_coincident_faces(f[keep])))


def simplify_mesh(vertices, faces, reduction: float, progress: Progress = None, cancel=None,
                  pieces: Optional[int] = None, while_waiting: Optional[Callable[[], None]] = None):
    """Quadric decimation removing the fraction ``reduction`` of the faces (0.95 keeps 5 %).

    Duplicate vertices are merged first (decimation needs shared vertices to see connectivity);
    non-manifold input is fine (the decimator works on any triangle set). A large mesh is decimated
    in ``pieces`` (default ``decimation_pieces(faces)``; 1: one pass, in this process) in parallel
    child processes, then once more as a whole (see PIECE_MIN_FACES); meanwhile ``while_waiting()``, if
    given, is called over and over (e.g. to render something on the GPU; keep each call short).
    Afterwards, faces that collapsed onto the same three vertices are cancelled
    (``_cancel_coincident_faces``). ``reduction <= 0`` returns the input unchanged (as float32 /
    int64 arrays). Progress is reported per piece; cancel is checked between steps and while the
    children run (which it kills).
    """
    import time

    v, f, target = _prepare(vertices, faces, reduction)
    if reduction <= 0 or len(f) == 0:
        return _output(v, f)
    _check_cancel(cancel)
    pieces = decimation_pieces(len(f)) if pieces is None else max(1, int(pieces))
    if target >= len(f):
        return _finish(v, f)
    if pieces == 1 or target * PIECE_SLACK >= len(f):
        _report(progress, "simplify", 0, 1)
        v, f = _decimate(v, f, target)
        _check_cancel(cancel)
        _report(progress, "simplify", 1, 1)
        return _finish(v, f)
    job = _Decimation(v, f, target, pieces)
    try:
        _report(progress, "simplify", 0, job.steps)
        done = 0
        while not job.poll():
            _check_cancel(cancel)
            if job.finished_steps() != done:
                done = job.finished_steps()
                _report(progress, "simplify", done, job.steps)
            if while_waiting is not None:
                while_waiting()
            else:
                time.sleep(0.005)
        v, f = job.result()
    finally:                                 # also on cancel: children killed, files removed
        job.close()
    _check_cancel(cancel)
    _report(progress, "simplify", job.steps, job.steps)
    return _finish(v, f)


def simplify_time_estimate(n_faces: int) -> float:
    """Rough seconds of ``simplify_mesh`` on ``n_faces`` faces (for progress only): ~2.3 s per
    1.26 M faces in one pass measured on a GPU host's CPU, doubled for a slower desktop CPU; a mesh
    in pieces takes its pieces' share on this machine's cores plus the final pass."""
    pieces = decimation_pieces(n_faces)
    if pieces == 1:
        return 0.5 + 3.7e-6 * n_faces
    rounds = math.ceil(pieces / _workers())
    return 0.8 + 3.7e-6 * n_faces * rounds / pieces + 3.7e-6 * n_faces * 0.05 * PIECE_SLACK


class BackgroundSimplify:
    """``simplify_mesh`` in child processes, started now, collected with ``result()``.

    fast-simplification holds the GIL for the whole decimation (seconds on a million faces), so in a
    thread it would stall the caller's Python; in child processes the caller's GPU work (e.g. the app's
    preview video) goes on meanwhile. The merge of duplicate vertices and the cut into pieces happen
    here, at once; then the decimation runs as ``_Decimation`` (one child for a mesh below
    ``decimation_pieces`` > 1, else one per piece and one for the re-joined mesh), advanced whenever
    ``running()`` or ``result()`` is called. ``result()`` returns exactly what ``simplify_mesh``
    returns for the same input (same code, same arrays); a child that fails is replaced by the same
    call in this process. ``close()`` (also on ``cancel``) kills the children and removes their files.
    """

    def __init__(self, vertices, faces, reduction: float):
        self.vertices, self.faces = _to_numpy(vertices, faces)
        self.reduction = float(reduction)
        self._result, self._job = None, None
        v, f, target = _prepare(self.vertices, self.faces, self.reduction)
        if self.reduction <= 0 or len(f) == 0:
            self._result = _output(v, f)
        elif target >= len(f):
            self._result = _finish(v, f)
        else:
            self._job = _Decimation(v, f, target, decimation_pieces(len(f)))
            self._job.poll()
        self._dir = self._job.folder if self._job is not None else None

    @property
    def _proc(self):
        """The last child process started (None if none was)."""
        return self._job.proc if self._job is not None else None

    def running(self) -> bool:
        """Whether the decimation is still going on (False once its result is in)."""
        return self._result is None and self._job is not None and not self._job.poll()

    def result(self, progress: Progress = None, cancel=None):
        """(vertices float32 [V,3], faces int64 [F,3]) as ``simplify_mesh(vertices, faces, reduction)``.
        ``progress("simplify", percent, 100)`` about every 0.2 s while the children work (an estimate
        from the face count, ``simplify_time_estimate``), 100 when the result is in."""
        import time

        if self._result is not None:
            return self._result
        _report(progress, "simplify", 0, 100)
        # The decimation is native calls without progress of their own: while waiting for them, report
        # the time spent against an estimate (in percent, capped at 99), about every 0.2 s.
        start, last, estimate = time.monotonic(), 0.0, simplify_time_estimate(len(self.faces))
        try:
            while not self._job.poll():
                _check_cancel(cancel)
                time.sleep(0.005)
                elapsed = time.monotonic() - start
                if elapsed - last >= 0.2:
                    last = elapsed
                    _report(progress, "simplify", min(99, int(100 * elapsed / estimate)), 100)
            self._result = _finish(*self._job.result())
        finally:                       # also on cancel: the children are killed, their files removed
            self.close()
        _report(progress, "simplify", 100, 100)
        return self._result

    def close(self) -> None:
        if self._job is not None:
            self._job.close()


# ---------------------------------------------------------------------------------------------
# §15.2 visibility


def _default_pixel_budget(device) -> int:
    """Atlas pixels per rasterise call: 2**21 on CPU; on an accelerator a quarter of its free
    memory at ~64 bytes per pixel, between 2**22 and 2**26 (~4 GB peak). Fewer, larger calls
    are faster (each call costs ~0.1 s of kernel launches and syncs); on an H200, 1000 views at
    1024^2 took 6.9 s with 2**24, 1.8-2.5 s with 2**26 and 1.4-1.8 s with 2**27-2**28 (8-15 GB)."""
    import torch

    if device.type == "cpu":
        # Small calls: each takes about a second on a CPU, so progress moves at least that often.
        return 1 << 21
    try:
        if device.type == "cuda":
            from ..pipelines.memory import free_device_memory  # honours a per-process memory limit

            free = free_device_memory(device)
        else:
            free, _ = torch.get_device_module(device).mem_get_info(device)
    except Exception:  # backends without a memory query
        return 1 << 25
    return int(min(1 << 26, max(1 << 22, free // 4 // _BYTES_PER_ATLAS_PIXEL)))


def visibility_settings(vertices, faces, device=None, radius: float = 2.0,
                        fov: float = 40.0) -> tuple:
    """(num_views, resolution) that ``face_visibility`` uses when the caller sets neither.

    On an accelerator: the reference's 1000 views at 1024^2. On a CPU, where every 1024^2 view
    costs 0.1-1 s: views at the lowest resolution (a multiple of 64 in 256..1024) at which the
    mesh's small faces (10th percentile of sqrt(2 x area)) span ``CPU_PIXELS_PER_SMALL_FACE``
    pixels at the centre of the views, and as many views as ``CPU_VISIBILITY_PIXELS`` pixels allow
    (at least ``CPU_VISIBILITY_MIN_VIEWS``, at most 1000; with the minimum count the resolution is
    lowered to stay within the pixels). Cost on a CPU is about proportional to the pixels, so the
    time is about the same whatever the mesh; the module docstring measures how close it comes to
    the reference set.
    """
    import torch

    if device is None:
        device = vertices.device if isinstance(vertices, torch.Tensor) else torch.device("cpu")
    if torch.device(device).type != "cpu":
        return DEFAULT_VISIBILITY_VIEWS, DEFAULT_VISIBILITY_RESOLUTION
    v, f = _to_numpy(vertices, faces)
    res = 256
    if len(f):
        a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
        size = np.sqrt(np.linalg.norm(np.cross(b - a, c - a), axis=1))  # sqrt(2 x area)
        small = float(np.quantile(size, 0.1))
        frame = 2 * radius * math.tan(math.radians(fov) / 2)             # frame width at the centre
        if small > 0:
            res = CPU_PIXELS_PER_SMALL_FACE * frame / small
    cap = 64 * math.floor(math.sqrt(CPU_VISIBILITY_PIXELS / CPU_VISIBILITY_MIN_VIEWS) / 64)
    res = int(min(1024, max(256, min(cap, 64 * math.ceil(res / 64 - 1e-9)))))
    views = int(min(REFERENCE_VISIBILITY_VIEWS,
                    max(CPU_VISIBILITY_MIN_VIEWS, CPU_VISIBILITY_PIXELS // (res * res))))
    return views, res


def face_visibility(vertices, faces, num_views: Optional[int] = None,
                    resolution: Optional[int] = None, device=None,
                    progress: Progress = None, cancel=None, radius: float = 2.0,
                    fov: float = 40.0, near: float = 1.0, far: float = 3.0,
                    pixel_budget: Optional[int] = None) -> np.ndarray:
    """Fraction of views in which each face owns at least one pixel, float32 [F].

    Cameras follow spec §15.2: ``num_views`` views on the spherical Hammersley sequence (§14.3),
    at ``radius`` looking at the origin (up +z), field of view ``fov`` degrees, depth range
    near..far, square images of ``resolution`` pixels; both windings are drawn and the nearest
    surface owns a pixel. ``num_views`` / ``resolution`` left at None are chosen by
    ``visibility_settings`` for the device: the reference's 1000 views at 1024x1024 on an
    accelerator, fewer and smaller views on a CPU; the module docstring has the measurements behind
    both and the opt-in ``FAST_VISIBILITY_*`` preset. Progress: ("visibility", views done, views)
    after every rasterise call (about a second each on a CPU).

    Views are rendered as tiles of one atlas image per ``rasterize`` call. Each tile has a
    gutter wide enough to hold everything the view projects outside its frame, and only the
    tile's own frame is read back, so the result equals rendering every view on its own.
    ``pixel_budget`` bounds the atlas size in pixels (default: ``_default_pixel_budget``).
    ``device`` is where rasterisation runs (default: the device of a torch ``vertices``, else CPU).
    """
    import torch

    from ..renderers.cameras import hammersley_sphere_views, orbit_cameras, projection_opencv
    from ..renderers.mesh_render import rasterize

    if device is None:
        device = vertices.device if isinstance(vertices, torch.Tensor) else torch.device("cpu")
    device = torch.device(device)
    v_np, f_np = _to_numpy(vertices, faces)
    if num_views is None or resolution is None:
        auto_views, auto_res = visibility_settings(v_np, f_np, device, radius=radius, fov=fov)
        num_views = auto_views if num_views is None else num_views
        resolution = auto_res if resolution is None else resolution
    n_faces = len(f_np)
    if n_faces == 0 or num_views <= 0:
        return np.zeros(n_faces, dtype=np.float32)
    verts = torch.as_tensor(v_np, dtype=torch.float64, device=device)
    tris = torch.as_tensor(f_np, dtype=torch.int64, device=device)
    vh = torch.cat([verts, torch.ones_like(verts[:, :1])], -1)  # [V,4]

    yaws, pitches = hammersley_sphere_views(num_views)
    extr, intr = orbit_cameras(yaws, pitches, radius=radius, fov=fov, device=device)
    proj = projection_opencv(intr[0].double(), near, far)
    full = proj @ extr.double()  # [N,4,4] world -> clip

    # Gutter: a point inside the ball |x| <= rho seen from distance `radius` lies within
    # rho / sqrt(radius^2 - rho^2) of the optical axis (tangent), i.e. within +-m in NDC.
    rho = float(verts.norm(dim=-1).max())
    tiled = rho < radius * 0.999
    gutter = 0
    if tiled:
        m = rho / math.sqrt(radius * radius - rho * rho) / math.tan(math.radians(fov) / 2)
        gutter = int(math.ceil(max(0.0, m - 1.0) * resolution / 2)) + 1
        tiled = gutter <= resolution  # far outside the frame: one view per call is cheaper
    tile = resolution + 2 * gutter if tiled else resolution
    if pixel_budget is None:
        pixel_budget = _default_pixel_budget(device)
    per_call, grid_cols = 1, 1
    if tiled:
        # Bounded by atlas pixels and by triangles (the rasteriser keeps a few hundred bytes of
        # setup per triangle: one triangle per 8 pixels of budget), rounded to a full grid.
        per_call = max(1, min(num_views, pixel_budget // (tile * tile),
                              pixel_budget // 8 // n_faces))
        grid_cols = int(math.ceil(math.sqrt(per_call)))
        per_call = (per_call // grid_cols) * grid_cols

    counts = torch.zeros(n_faces, dtype=torch.int64, device=device)
    done = 0
    _report(progress, "visibility", 0, num_views)
    while done < num_views:
        _check_cancel(cancel)
        k = min(per_call, num_views - done)
        cols = min(grid_cols, k)
        rows = int(math.ceil(k / cols))
        aw, ah = cols * tile, rows * tile
        clip = torch.einsum("vj,nij->nvi", vh, full[done:done + k])  # [k,V,4]
        if k > 1 or tiled:
            # Move view t into its tile: pixel = tile origin + gutter + single-view pixel.
            t = torch.arange(k, device=device, dtype=torch.float64)
            ox = (t % cols) * tile + gutter
            oy = torch.div(t, cols, rounding_mode="floor") * tile + gutter
            w = clip[..., 3]
            x = clip[..., 0] * (resolution / aw) + w * (2 * ox[:, None] / aw - 1 + resolution / aw)
            y = clip[..., 1] * (resolution / ah) + w * (2 * oy[:, None] / ah - 1 + resolution / ah)
            clip = torch.stack([x, y, clip[..., 2], w], -1)
        offsets = (torch.arange(k, device=device) * len(v_np))[:, None, None]
        batch_faces = (tris[None] + offsets).reshape(-1, 3)
        face_id, _, _ = rasterize(clip.reshape(-1, 4), batch_faces, ah, aw, cancel=cancel,
                                  with_bary=False)
        # Keep each tile's frame only, then count every (view, face) pair once.
        frame = face_id.reshape(rows, tile, cols, tile)[:, gutter:gutter + resolution, :,
                                                          gutter:gutter + resolution]
        ids = frame.reshape(-1)
        ids = ids[ids > 0] - 1
        seen = torch.zeros(k * n_faces, dtype=torch.bool, device=device)
        seen[ids] = True
        counts += seen.reshape(k, n_faces).sum(0)
        done += k
        _report(progress, "visibility", done, num_views)
    return (counts.to(torch.float64) / num_views).cpu().numpy().astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Connectivity helpers


def _edges(faces, n_vertices):
    """Undirected edges of the half-edges (f[0]->f[1], f[1]->f[2], f[2]->f[0]).

    Returns (edge id per half-edge [3F], edge endpoints [E,2], use count per edge [E]).
    """
    he = faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
    lo, hi = he.min(1), he.max(1)
    key = lo * np.int64(n_vertices) + hi
    uniq, inverse, count = np.unique(key, return_inverse=True, return_counts=True)
    ends = np.stack([uniq // n_vertices, uniq % n_vertices], -1)
    return inverse.reshape(-1), ends, count


def _dual_arcs(edge_of_he, n_faces):
    """Pairs of distinct faces sharing an edge (every pair of faces around non-manifold edges).

    Returns (face_a, face_b, edge) arrays, one row per pair.
    """
    face_of_he = np.repeat(np.arange(n_faces, dtype=np.int64), 3)
    order = np.argsort(edge_of_he, kind="stable")
    se, sf = edge_of_he[order], face_of_he[order]
    fa, fb, fe = [], [], []
    j = 1
    while j < len(se):
        same = se[:-j] == se[j:]
        if not same.any():
            break
        fa.append(sf[:-j][same])
        fb.append(sf[j:][same])
        fe.append(se[:-j][same])
        j += 1
    if not fa:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    fa, fb, fe = np.concatenate(fa), np.concatenate(fb), np.concatenate(fe)
    keep = fa != fb
    return fa[keep], fb[keep], fe[keep]


def _components(n, a, b):
    if n == 0:
        return 0, np.zeros(0, dtype=np.int64)
    g = sp.csr_array((np.ones(len(a), dtype=np.int32), (a, b)), shape=(n, n))
    k, labels = connected_components(g, directed=False)
    return k, labels.astype(np.int64)


def _group_quantile(values, groups, n_groups, q):
    """Per-group quantile with linear interpolation (numpy's default), NaN for empty groups."""
    order = np.lexsort((values, groups))
    sv, sg = values[order], groups[order]
    count = np.bincount(sg, minlength=n_groups)
    start = np.concatenate([[0], np.cumsum(count)[:-1]])
    out = np.full(n_groups, np.nan)
    ok = count > 0
    pos = q * (count[ok] - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, count[ok] - 1)
    frac = pos - lo
    a, b = sv[start[ok] + lo], sv[start[ok] + hi]
    out[ok] = a + frac * (b - a)
    return out


# ---------------------------------------------------------------------------------------------
# §15.2 invisible-face removal


def remove_invisible_faces(vertices, faces, visibility, max_hole_size: float = 0.04,
                           progress: Progress = None, cancel=None):
    """Cut away hidden parts (inner shells) by an s-t minimum cut on the dual graph (§15.2).

    * Per connected component (faces joined by shared edges), "outer" faces have visibility
      above min(max(q75, 0.25), 0.5), q75 = the component's 75th percentile (linear
      interpolation); "inner" faces have visibility exactly 0. Without inner faces nothing
      changes.
    * Dual graph: faces are nodes; every pair of faces sharing an edge is joined both ways with
      capacity = edge length x 1000; the source links to inner faces and outer faces link to the
      sink with capacity 1 x 1000. For scipy's integer max-flow every capacity is further
      multiplied by 1024 and rounded to the nearest integer (a common factor does not move the
      cut). The source side of the minimum cut is what the source reaches in the residual graph.
    * Each connected piece of the source side is removed only if its median visibility is
      <= 0.25 and every boundary loop its removal would open has area <= ``max_hole_size``,
      with area = 1/2 sum |(a - c) x (b - c)| over the loop's edges (a, b) and c the mean of
      the loop's edge midpoints. A "loop" is a connected set of newly opened edges (edges left
      with exactly one face after the piece is removed); loops are judged per piece.
    * Vertices no longer used are dropped.
    """
    v, f = _to_numpy(vertices, faces)
    remove = invisible_face_mask(v, f, visibility, max_hole_size, progress=progress,
                                 cancel=cancel)
    return _output(*_drop_unreferenced(v, f[~remove]))


def invisible_face_mask(vertices, faces, visibility, max_hole_size: float = 0.04,
                        progress: Progress = None, cancel=None,
                        details: Optional[dict] = None) -> np.ndarray:
    """The faces ``remove_invisible_faces`` removes, as a bool mask [F] (same arguments).

    ``details``, if a dict, receives the counts of inner/outer/source-side faces and, per piece
    of the source side, its size, median visibility, largest opened loop area and the decision.
    """
    v, f = _to_numpy(vertices, faces)
    vis = np.asarray(visibility.detach().cpu().numpy() if hasattr(visibility, "detach")
                     else visibility, dtype=np.float64).reshape(-1)
    if len(vis) != len(f):
        raise ValueError(f"visibility has {len(vis)} entries for {len(f)} faces")
    stage, steps = "remove_invisible", 4
    _report(progress, stage, 0, steps)
    remove = np.zeros(len(f), dtype=bool)
    inner = vis == 0
    if len(f) == 0 or not inner.any():
        _report(progress, stage, steps, steps)
        return remove
    _check_cancel(cancel)
    n_faces = len(f)

    edge_of_he, ends, edge_use = _edges(f, len(v))
    fa, fb, fe = _dual_arcs(edge_of_he, n_faces)
    n_comp, comp = _components(n_faces, fa, fb)
    q75 = _group_quantile(vis, comp, n_comp, 0.75)
    threshold = np.minimum(np.maximum(q75, 0.25), 0.5)
    outer = vis > threshold[comp]
    _report(progress, stage, 1, steps)
    _check_cancel(cancel)

    # s-t minimum cut: nodes 0..F-1 are faces, F the source, F+1 the sink.
    source, sink = n_faces, n_faces + 1
    length = np.linalg.norm(v[ends[fe, 0]] - v[ends[fe, 1]], axis=1)
    arc_cap = np.rint(length * 1000.0 * _CUT_RESOLUTION)
    terminal = 1000 * _CUT_RESOLUTION
    inner_idx = np.nonzero(inner)[0]
    outer_idx = np.nonzero(outer)[0]
    rows = np.concatenate([fa, fb, np.full(len(inner_idx), source), outer_idx])
    cols = np.concatenate([fb, fa, inner_idx, np.full(len(outer_idx), sink)])
    cap = np.concatenate([arc_cap, arc_cap, np.full(len(inner_idx) + len(outer_idx), terminal)])
    graph = sp.csr_array((cap, (rows, cols)), shape=(n_faces + 2, n_faces + 2))
    if graph.data.size and graph.data.max() >= 2 ** 30:  # residuals reach 2x capacity (int32)
        raise ValueError("mesh too large for the integer min-cut (edges longer than ~1000 units)")
    graph = sp.csr_array((graph.data.astype(np.int32), graph.indices, graph.indptr),
                         shape=graph.shape)
    graph.sort_indices()
    flow = maximum_flow(graph, source, sink).flow
    residual = sp.csr_array(graph.astype(np.int64) - flow.astype(np.int64))
    residual.data = np.where(residual.data > 0, 1, 0).astype(np.int8)
    residual.eliminate_zeros()
    reached = breadth_first_order(residual, source, directed=True, return_predecessors=False)
    in_source = np.zeros(n_faces + 2, dtype=bool)
    in_source[reached] = True
    in_source = in_source[:n_faces]
    _report(progress, stage, 2, steps)
    _check_cancel(cancel)

    if not in_source.any():
        _report(progress, stage, steps, steps)
        return remove

    # Pieces = connected parts of the source side. Faces around one edge are pairwise adjacent in
    # the dual graph, so no edge touches two different pieces.
    both = in_source[fa] & in_source[fb]
    _, label_all = _components(n_faces, fa[both], fb[both])
    src_faces = np.nonzero(in_source)[0]
    _, piece_of_src = np.unique(label_all[src_faces], return_inverse=True)
    piece = np.full(n_faces, -1, dtype=np.int64)
    piece[src_faces] = piece_of_src
    n_pieces = int(piece_of_src.max()) + 1
    median = _group_quantile(vis[src_faces], piece_of_src, n_pieces, 0.5)
    _report(progress, stage, 3, steps)
    _check_cancel(cancel)

    # Newly opened edges: some faces in the piece, exactly one face left outside it.
    he_piece = np.repeat(piece, 3)
    in_piece_he = he_piece >= 0
    n_edges = len(ends)
    inside = np.bincount(edge_of_he[in_piece_he], minlength=n_edges)
    edge_piece = np.full(n_edges, -1, dtype=np.int64)
    edge_piece[edge_of_he[in_piece_he]] = he_piece[in_piece_he]
    opened = np.nonzero((inside > 0) & (edge_use - inside == 1))[0]
    max_area = np.zeros(n_pieces)
    if len(opened):
        op_piece = edge_piece[opened]
        a_vert, b_vert = ends[opened, 0], ends[opened, 1]
        # Loops: connected sets of opened edges of one piece (nodes are (piece, vertex) pairs).
        node_key = np.concatenate([op_piece * len(v) + a_vert, op_piece * len(v) + b_vert])
        _, node = np.unique(node_key, return_inverse=True)
        n_nodes = int(node.max()) + 1
        m = len(opened)
        _, node_loop = _components(n_nodes, node[:m], node[m:])
        loop = node_loop[node[:m]]
        n_loops = int(loop.max()) + 1
        pa, pb = v[a_vert], v[b_vert]
        mid = (pa + pb) / 2
        cnt = np.bincount(loop, minlength=n_loops).astype(np.float64)
        centre = np.stack([np.bincount(loop, mid[:, i], n_loops) for i in range(3)], -1)
        centre /= cnt[:, None]
        c = centre[loop]
        area_terms = 0.5 * np.linalg.norm(np.cross(pa - c, pb - c), axis=1)
        area = np.bincount(loop, area_terms, n_loops)
        loop_piece = np.zeros(n_loops, dtype=np.int64)
        loop_piece[loop] = op_piece
        np.maximum.at(max_area, loop_piece, area)
    loop_ok = max_area <= max_hole_size
    remove_piece = (median <= 0.25) & loop_ok
    if details is not None:
        details.update(inner=int(inner.sum()), outer=int(outer.sum()),
                       source_side=int(in_source.sum()),
                       piece_size=np.bincount(piece_of_src, minlength=n_pieces),
                       piece_median=median, piece_max_loop_area=max_area,
                       piece_removed=remove_piece)
    remove[src_faces] = remove_piece[piece_of_src]
    _report(progress, stage, steps, steps)
    return remove


# ---------------------------------------------------------------------------------------------
# §15.2 hole filling (our replacement for MeshFix's small-boundary filling)


def boundary_edges(faces, n_vertices: Optional[int] = None):
    """Oriented boundary half-edges [B,2] (tail, head): undirected edges used by one face."""
    return _boundary(np.asarray(faces, dtype=np.int64).reshape(-1, 3), n_vertices)[0]


def _boundary(f, n_vertices=None):
    """(boundary half-edges [B,2], the face each belongs to [B])."""
    if len(f) == 0:
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.int64)
    if n_vertices is None:
        n_vertices = int(f.max()) + 1
    he = f[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
    edge_of_he, _, count = _edges(f, n_vertices)
    keep = np.nonzero((count[edge_of_he] == 1) & (he[:, 0] != he[:, 1]))[0]
    return he[keep], keep // 3


def _rank_in_group(keys):
    """Rank of each element among the elements with an equal key, in index order."""
    order = np.argsort(keys, kind="stable")
    sk = keys[order]
    start = np.ones(len(sk), dtype=bool)
    start[1:] = sk[1:] != sk[:-1]
    first = np.maximum.accumulate(np.where(start, np.arange(len(sk)), 0))
    rank = np.empty(len(keys), dtype=np.int64)
    rank[order] = np.arange(len(sk)) - first
    return rank


def _boundary_cycles(bnd, n_vertices):
    """Successor of each boundary half-edge and the cycle it lies on (-1 if on no cycle).

    At a vertex with several incoming and outgoing boundary edges (non-manifold), the k-th
    incoming edge is paired with the k-th outgoing one; a cycle that then passes a vertex twice
    is split there (swapping the successors of its two edges entering that vertex), so every
    returned cycle is a simple loop. Unpaired edges (inconsistent winding) lie on no cycle.
    """
    b = len(bnd)
    tail, head = bnd[:, 0], bnd[:, 1]
    out_rank = _rank_in_group(tail)
    in_rank = _rank_in_group(head)
    width = int(max(out_rank.max(), in_rank.max())) + 1
    out_key = tail * width + out_rank
    in_key = head * width + in_rank
    order = np.argsort(out_key)
    pos = np.searchsorted(out_key[order], in_key)
    pos = np.minimum(pos, b - 1)
    succ = np.where(out_key[order][pos] == in_key, order[pos], -1)

    while True:
        has = succ >= 0
        src = np.nonzero(has)[0]
        n_comp, comp = _components(b, src, succ[src]) if b else (0, np.zeros(0, np.int64))
        open_comp = np.zeros(n_comp, dtype=bool)
        open_comp[comp[~has]] = True
        cycle = np.where(open_comp[comp], -1, comp)
        # A vertex entered twice by one cycle: swap the successors of the first two such edges.
        on = np.nonzero(cycle >= 0)[0]
        key = cycle[on] * np.int64(n_vertices) + head[on]
        order = np.lexsort((on, key))
        sk = key[order]
        dup = np.nonzero(sk[1:] == sk[:-1])[0]
        if len(dup) == 0:
            return succ, cycle
        e1, e2 = on[order[dup]], on[order[dup + 1]]
        cyc = cycle[e1]
        _, first = np.unique(cyc, return_index=True)  # one swap per cycle per round
        e1, e2 = e1[first], e2[first]
        succ[e1], succ[e2] = succ[e2].copy(), succ[e1].copy()


def fill_holes(vertices, faces, max_hole_edges: int, progress: Progress = None, cancel=None):
    """Close every boundary loop with 3..``max_hole_edges`` edges (spec §15.2, MeshFix's role).

    Boundary edges are the edges used by exactly one face, oriented as in that face; they are
    chained into simple loops (non-manifold vertices shared by two loops are handled, see
    ``_boundary_cycles``). A 3-edge loop gets one triangle; a longer loop gets a new vertex at
    the mean of its vertices and a fan of triangles (b, a, centre) for each loop edge a -> b, so
    each patch edge runs opposite to its neighbour's and the winding matches the surrounding
    faces. No refinement or fairing is done (the patch is a shallow cone). The rim of a lone
    triangle is left open. Loops whose edges do not chain up consistently (mixed winding around
    the hole) are left open too.
    """
    v, f = _to_numpy(vertices, faces)
    stage, steps = "fill_holes", 3
    _report(progress, stage, 0, steps)
    _check_cancel(cancel)
    bnd, bnd_face = _boundary(f, len(v))
    if len(bnd) == 0 or max_hole_edges < 3:
        _report(progress, stage, steps, steps)
        return _output(v, f)
    succ, cycle = _boundary_cycles(bnd, len(v))
    _report(progress, stage, 1, steps)
    _check_cancel(cancel)

    on = np.nonzero(cycle >= 0)[0]
    if len(on) == 0:
        _report(progress, stage, steps, steps)
        return _output(v, f)
    _, loop = np.unique(cycle[on], return_inverse=True)
    n_loops = int(loop.max()) + 1
    length = np.bincount(loop, minlength=n_loops)
    chosen = (length >= 3) & (length <= max_hole_edges)
    # A lone triangle's rim is a 3-edge loop; "closing" it would only add its back face.
    face_lo = np.full(n_loops, np.iinfo(np.int64).max)
    face_hi = np.full(n_loops, -1)
    np.minimum.at(face_lo, loop, bnd_face[on])
    np.maximum.at(face_hi, loop, bnd_face[on])
    chosen &= ~((length == 3) & (face_lo == face_hi))
    sel = chosen[loop]
    on, loop = on[sel], loop[sel]
    if len(on) == 0:
        _report(progress, stage, steps, steps)
        return _output(v, f)
    _, loop = np.unique(loop, return_inverse=True)
    n_loops = int(loop.max()) + 1
    length = np.bincount(loop, minlength=n_loops)
    a, b = bnd[on, 0], bnd[on, 1]

    new_faces = []
    tri = length[loop] == 3
    if tri.any():
        # Loop a -> b -> c -> a: the closing triangle runs the other way, (b, a, c).
        e = on[tri]
        c = bnd[succ[e], 1]
        lt = loop[tri]
        _, idx = np.unique(lt, return_index=True)
        pick = np.zeros(len(lt), dtype=bool)
        pick[idx] = True
        new_faces.append(np.stack([b[tri][pick], a[tri][pick], c[pick]], -1))
    fan = ~tri
    new_vertices = np.zeros((0, 3))
    if fan.any():
        fan_loops, fan_loop = np.unique(loop[fan], return_inverse=True)
        n_fan = len(fan_loops)
        cnt = np.bincount(fan_loop, minlength=n_fan).astype(np.float64)
        centre = np.stack([np.bincount(fan_loop, v[a[fan], i], n_fan) for i in range(3)], -1)
        new_vertices = centre / cnt[:, None]
        centre_id = len(v) + fan_loop
        new_faces.append(np.stack([b[fan], a[fan], centre_id], -1))
    _report(progress, stage, 2, steps)
    _check_cancel(cancel)
    v = np.concatenate([v, new_vertices], 0)
    f = np.concatenate([f] + new_faces, 0)
    _report(progress, stage, steps, steps)
    return _output(v, f)


_fill_holes = fill_holes


# ---------------------------------------------------------------------------------------------
# The whole chain


def clean_mesh_for_export(vertices, faces, simplify: float = 0.95, fill_holes: bool = True,
                          fill_holes_max_size: float = 0.04, device=None,
                          progress: Progress = None, cancel=None, simplified: Optional["BackgroundSimplify"] = None,
                          info: Optional[dict] = None, while_waiting: Optional[Callable[[], None]] = None,
                          **visibility_kwargs):
    """Spec §15.1-§15.2 in the reference's order: simplify, then (if ``fill_holes``) visibility,
    invisible-face removal (holes up to ``fill_holes_max_size``) and hole filling of loops with
    at most int(250 * sqrt(1 - simplify)) edges. ``visibility_kwargs`` go to
    ``face_visibility`` (num_views, resolution, radius, fov, near, far, pixel_budget); the
    defaults are the reference's 1000 views at 1024^2, ``num_views=FAST_VISIBILITY_VIEWS`` is the
    4x cheaper opt-in preset (module docstring: what it changes). ``simplified``: a
    ``BackgroundSimplify`` of these vertices/faces with the same ``simplify`` started earlier, whose
    result is used instead of simplifying here (the same arrays). ``while_waiting``: called
    over and over while the decimation's child processes run (``simplify_mesh``). ``info``, if a dict, receives the
    face counts after each step, the visibility views / resolution used and the seconds of each step
    (``info["seconds"]``: simplify, i.e. the wait for ``simplified``, visibility, remove_invisible,
    fill_holes).
    """
    import time

    record = info if info is not None else {}
    seconds = record.setdefault("seconds", {})
    clock = [time.perf_counter()]

    def lap(name):
        now = time.perf_counter()
        seconds[name] = round(now - clock[0], 3)
        clock[0] = now

    if simplified is not None:
        shape = tuple(getattr(faces, "shape", np.shape(faces)))   # torch (any device) or numpy
        n_faces = shape[0] if len(shape) == 2 else int(np.prod(shape)) // 3
        if simplified.reduction != float(simplify) or len(simplified.faces) != n_faces:
            raise ValueError("`simplified` was started for another mesh or another simplify value")
        v, f = simplified.result(progress=progress, cancel=cancel)
    else:
        v, f = simplify_mesh(vertices, faces, simplify, progress=progress, cancel=cancel, while_waiting=while_waiting)
    lap("simplify")
    record["simplified_faces"] = int(len(f))
    if fill_holes:
        if visibility_kwargs.get("num_views") is None or visibility_kwargs.get("resolution") is None:
            views, res = visibility_settings(v, f, device, radius=visibility_kwargs.get("radius", 2.0),
                                             fov=visibility_kwargs.get("fov", 40.0))
            chosen = {"num_views": views, "resolution": res}
            visibility_kwargs = {**visibility_kwargs, **{k: chosen[k] for k in chosen
                                                         if visibility_kwargs.get(k) is None}}
        record["visibility"] = {"views": int(visibility_kwargs["num_views"]),
                                "resolution": int(visibility_kwargs["resolution"])}
        vis = face_visibility(v, f, device=device, progress=progress, cancel=cancel,
                              **visibility_kwargs)
        lap("visibility")
        v, f = remove_invisible_faces(v, f, vis, max_hole_size=fill_holes_max_size,
                                      progress=progress, cancel=cancel)
        lap("remove_invisible")
        record["visible_faces"] = int(len(f))
        max_edges = int(250 * math.sqrt(1 - max(simplify, 0.0)))
        v, f = _fill_holes(v, f, max_edges, progress=progress, cancel=cancel)
        lap("fill_holes")
    record["faces"] = int(len(f))
    return _output(v, f)
