"""Spec §15.1: quadric decimation (fast-simplification, MIT), in pieces for large meshes, and in child
processes the caller drives (``BackgroundSimplify``).

Arrays are numpy float32 vertices [V,3] and int64 faces [F,3]; torch tensors are accepted too.
"""
from __future__ import annotations

import math
import threading
from typing import Callable, Optional

import numpy as np

from ...core.callbacks import check as _check_cancel
from .. import owned_dirs
from . import child
from .common import Progress, _drop_unreferenced, _output, _report, _to_numpy


def merge_duplicate_vertices(vertices, faces):
    """Merge equal vertex positions (-0.0 and 0.0 are equal: every zero becomes 0.0) and drop faces that
    become degenerate. The merged vertices come sorted by x, then y, then z."""
    v = np.asarray(vertices)
    f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if len(v) == 0:
        return v, f
    v = v + v.dtype.type(0)        # -0.0 -> 0.0, as the device twin does; otherwise the same values
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
# 2026-11-23: smaller pieces from 300 k faces (were 150 k+ from 1 M). The decimator's time grows faster than
# the faces (the nut's 1.1 M faces: 1.9-2.3 s in one pass, its four 274 k-face pieces 0.25-0.37 s each, its
# sixteen 68 k-face pieces 0.05 s each), and pieces decimate in child processes while the caller renders
# (``to_glb``'s observation views). The realistic bunny (731 k faces) is now cut in 8 pieces instead of one
# pass in this process, the nut in 8 instead of 4. First decimation of to_glb (reduction 0.9375), 2 CPU cores
# (benchmarks/decimation.py; distance mean / p99 in voxels): bunny 1 / 4 / 8 / 16 pieces 1.12 / 0.94 / 0.89 /
# 0.92 s, 0.188 / 0.437, 0.187 / 0.437, 0.188 / 0.436, 0.189 / 0.439; nut 1.92 / 1.44 / 1.31 / 1.57 s, 0.259 /
# 0.772, 0.240 / 0.577, 0.240 / 0.577, 0.240 / 0.579. Several pieces share one child on a machine with fewer
# cores than pieces (the pieces, and so the result, are the same on every machine).
# 2026-11-23 (twelfth session, H100 host): a child's import of numpy + fast-simplification takes 0.46-0.58 s
# there (0.1 s on a desktop), and the pieces paid it twice in series (pieces, then the re-joined mesh): 8
# pieces were slower than one pass for the bunny (1.58-2.05 vs 1.19-1.74 s). The children now start before
# the merge and the cut, take their work through stdin and serve the last pass too (``_PIECE_CHILD``):
# to_glb's simplify stage on that host bunny 1.79 -> 0.92 s, nut 2.10 -> 1.16 s; 2 cores: bunny 8 pieces
# 0.85 -> 0.75 s.
PIECE_MIN_FACES = 80_000
PIECES_FROM_FACES = 300_000
MAX_PIECES = 16
PIECE_SLACK = 2.0

# The decimation's temp folder: ``trellis_simplify_<random>`` in the temp folder, owned by its process
# (``trellis.utils.owned_dirs``), so that an app's start removes only the folders of dead processes.
TEMP_PREFIX = "trellis_simplify_"

# A decimation child process. It starts before its work is known (importing numpy and fast-simplification
# takes 0.1 s on a desktop and up to 0.6 s on a busy GPU host, so it overlaps the caller's merge and the cut
# into pieces), then reads its work from stdin: one JSON line per batch, a list of [input .npz, output .npz]
# pairs, each output written under another name and renamed when complete (the caller sees only whole
# files). It serves batches until stdin closes (the caller closes or dies), so the re-joined mesh's pass
# goes to a child that is already warm; one left idle for CHILD_IDLE_S by a caller that never closed it
# exits by itself. No trellis import.
CHILD_IDLE_S = 300.0
_PIECE_CHILD_CODE = r"""
import json, os, sys, threading, time
import numpy as np, fast_simplification
state = {"busy": False, "since": time.monotonic()}
def idle_exit():
    while True:
        time.sleep(min(5.0, IDLE / 2))
        if not state["busy"] and time.monotonic() - state["since"] > IDLE:
            os._exit(0)
threading.Thread(target=idle_exit, daemon=True).start()
for line in sys.stdin:
    state["busy"] = True
    for src, dst in json.loads(line):
        d = np.load(src)
        v, f = fast_simplification.simplify(d["vertices"], d["faces"], target_count=int(d["target"]),
                                            preserve_border=bool(d["preserve_border"]))
        np.savez(dst + ".part.npz", vertices=np.asarray(v, dtype=np.float64), faces=np.asarray(f, dtype=np.int32))
        os.replace(dst + ".part.npz", dst)
    state["busy"], state["since"] = False, time.monotonic()
"""


def _piece_child(idle_s: float) -> str:
    """The decimation child's code, exiting after ``idle_s`` seconds without work."""
    return _PIECE_CHILD_CODE.replace("IDLE", repr(float(idle_s)))


_PIECE_CHILD = _piece_child(CHILD_IDLE_S)

# Warm children between decimations. A decimation's children that are idle when it ends wait here (at most
# POOL_MAX, each ~30 MB; they still leave by themselves after CHILD_IDLE_S without work, or when this process
# ends: their stdin closes) and the next decimation takes them instead of starting new ones, so the app's
# second export onwards (and its first, after ``warm_pool()`` at start-up) skips the children's imports
# (0.5 s on a busy GPU host). Only where ``child.SAFE_PATH``: pooled children outlive the decimation's folder,
# so they work in the temp folder itself, which ``-P`` keeps off their sys.path. Keyed by the child's code.
POOL_MAX = MAX_PIECES
_pool: list = []                      # (code, Popen), idle
_pool_lock = threading.Lock()


def _child_folder(folder: str) -> str:
    """The working folder of a decimation child: the temp folder where children may be pooled, else ``folder``."""
    import tempfile

    return tempfile.gettempdir() if child.SAFE_PATH else folder


def _take_child(code: str):
    """A live idle child running ``code`` from the pool, or None."""
    while True:
        with _pool_lock:
            found = next((i for i, (c, _) in enumerate(_pool) if c == code), None)
            if found is None:
                return None
            proc = _pool.pop(found)[1]
        if proc.poll() is None:
            return proc
        child.stop(proc)                  # left by itself while idle: reaped, try the next


def _give_back(code: str, proc) -> None:
    """Keep an idle child for the next decimation (where pooling is possible and there is room), else stop it."""
    if child.SAFE_PATH and proc.poll() is None:
        with _pool_lock:
            if len(_pool) < POOL_MAX:
                _pool.append((code, proc))
                return
    child.stop(proc)


def pooled_children() -> int:
    """Idle decimation children waiting in the pool (alive or not yet reaped)."""
    with _pool_lock:
        return len(_pool)


def drain_pool() -> None:
    """Stop every pooled child (tests; an app that wants its memory back)."""
    with _pool_lock:
        procs = [p for _, p in _pool]
        _pool.clear()
    for proc in procs:
        child.stop(proc)


def warm_pool(children: Optional[int] = None) -> int:
    """Start decimation children into the pool now (default: as many as the decimation of a decoder's mesh of a
    million faces uses, ``min(cores, decimation_pieces(10**6))`` = 8 on 8+ cores), so that the next export's
    decimation finds them warm; returns how many wait there. Nothing where children cannot be pooled."""
    if not child.SAFE_PATH:
        return 0
    default = min(_workers(), decimation_pieces(1_000_000))
    want = min(POOL_MAX, children if children is not None else default)
    code = _PIECE_CHILD
    with _pool_lock:
        have = sum(1 for c, p in _pool if c == code and p.poll() is None)
    for _ in range(max(0, want - have)):
        proc = child.start(code, (), _child_folder(""), stdin=True)
        if proc is None:
            break
        _give_back(code, proc)
    return pooled_children()


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


def _in_pieces(pieces: int, target: int, n_faces: int) -> bool:
    """Whether a decimation of ``n_faces`` to ``target`` goes through pieces (else one pass): only when
    the pieces' share (PIECE_SLACK x the target) still removes faces."""
    return pieces > 1 and target * PIECE_SLACK < n_faces


class _Decimation:
    """The decimation of a merged mesh to ``target`` faces in child processes that ``poll()`` advances
    (it never blocks on a child): either one child for the whole mesh, or ``pieces`` compact pieces (borders
    kept, PIECE_SLACK times their share) shared out among at most one child per core (``_workers()``; each
    child decimates its pieces one after the other, so a machine with few cores starts few interpreters),
    and then the re-joined mesh, given to the first child that is done with its pieces. The children are
    started first, so their start-up overlaps the cut and the writing of the pieces. The pieces, and so
    the result, do not depend on the cores. A child that fails or cannot start is replaced by the same
    calls in this process, with the same result. ``result()`` is the raw decimator output; ``close()``
    gives the idle children to the pool of warm children, kills the busy ones and removes the folder
    (``folder``)."""

    def __init__(self, children: int):
        """Starts the folder and ``children`` child processes (they import while the caller prepares the
        mesh); ``begin()`` gives them the work."""
        import time

        self._t0 = time.perf_counter()
        self.timeline = []           # (seconds since construction, event): where the time goes (benchmarks)
        # Owned (an OS lock held until close()): another process's start tells it from a killed export's leftover.
        self._owned = owned_dirs.make(TEMP_PREFIX)
        self.folder = self._owned.path
        self.proc = None             # the last child started
        self._idle, self._busy, self._done, self._result, self._pending = [], {}, {}, None, []
        self.child_calls = 0         # calls whose result a child wrote (the rest were done here)
        self.pooled = 0              # children taken warm from the pool
        self.steps = 0
        self._code = _PIECE_CHILD
        try:
            for _ in range(children):
                self._start_child()
        except BaseException:
            self.close()
            raise
        self._mark(f"{len(self._idle)} children started")

    @staticmethod
    def children_for(pieces: int, target: int, n_faces: int) -> int:
        """The children a decimation of ``n_faces`` to ``target`` in ``pieces`` uses."""
        return min(pieces, _workers()) if _in_pieces(pieces, target, n_faces) else 1

    @classmethod
    def of(cls, v, f, target: int, pieces: int) -> "_Decimation":
        """A decimation of merged ``v``, ``f`` to ``target`` faces, started."""
        job = cls(cls.children_for(pieces, target, len(f)))
        job.begin(v, f, target, pieces)
        return job

    def begin(self, v, f, target: int, pieces: int) -> None:
        """Cuts and writes the work (the merged mesh ``v``, ``f`` to ``target`` faces, in ``pieces``) and
        gives it out; starts more children if this needs more than were started."""
        try:
            self.target = target
            self.phase = "pieces" if _in_pieces(pieces, target, len(f)) else "whole"
            for _ in range(self.children_for(pieces, target, len(f)) - len(self._idle)):
                self._start_child()
            if self.phase == "pieces":
                groups = _split_compact(v[f[:, 0]], pieces)    # a face's first corner stands for the face
                files = []
                for g in groups:
                    used = np.zeros(len(v), dtype=bool)
                    used[f[g].reshape(-1)] = True
                    share = max(1, int(math.ceil(target * PIECE_SLACK * len(g) / len(f))))
                    files.append(self._write(v[used], (np.cumsum(used) - 1)[f[g]], share, True))
                self._mark(f"{len(files)} pieces written")
                batches = max(1, len(self._idle))
                self._pending = [files[c::batches] for c in range(batches)]
            else:
                self._pending = [[self._write(v, f, target, False)]]
            self.steps = sum(map(len, self._pending)) + (1 if self.phase == "pieces" else 0)
        except BaseException:
            self.close()
            raise

    def _start_child(self) -> None:
        proc = _take_child(self._code)
        if proc is not None:
            self.pooled += 1
        else:
            proc = child.start(self._code, (), _child_folder(self.folder), stdin=True)
        if proc is not None:
            self.proc = proc
            self._idle.append(proc)

    def _mark(self, event: str) -> None:
        import time

        self.timeline.append((round(time.perf_counter() - self._t0, 4), event))

    def _write(self, v, f, target, preserve_border):
        """(index, input file, output file) of one decimation call, its input written."""
        import os

        i = self._files = getattr(self, "_files", -1) + 1
        src, dst = os.path.join(self.folder, f"in{i}.npz"), os.path.join(self.folder, f"out{i}.npz")
        np.savez(src, vertices=v, faces=f.astype(np.int32), target=target, preserve_border=preserve_border)
        return i, src, dst

    def finished_steps(self) -> int:
        return len(self._done) if self.phase == "pieces" else len(self._done) + (self.steps - 1)

    def _send(self, calls) -> None:
        """Give ``calls`` to an idle child, or do them here when there is none or it cannot take them."""
        import json

        while self._idle:
            proc = self._idle.pop(0)
            try:
                proc.stdin.write((json.dumps([[src, dst] for _, src, dst in calls]) + "\n").encode())
                proc.stdin.flush()
            except (OSError, ValueError):     # it has exited (e.g. no fast-simplification there)
                child.stop(proc)
                continue
            self._busy[id(proc)] = (proc, calls)
            self._mark(f"calls {[i for i, _, _ in calls]} sent")
            return
        for i, src, dst in calls:
            self._done[i] = self._collect(False, src, dst)

    def poll(self) -> bool:
        """Gives out what may start, collects what ended; True once the result is in."""
        import os

        if self._result is not None:
            return True
        for key, (proc, calls) in list(self._busy.items()):
            complete = all(os.path.exists(dst) for _, _, dst in calls)
            if not complete and proc.poll() is None:
                continue
            del self._busy[key]
            for i, src, dst in calls:         # a child that died: what it did not write is done here
                written = os.path.exists(dst)
                self.child_calls += written
                self._done[i] = self._collect(written, src, dst)
            if complete and proc.poll() is None:
                self._idle.append(proc)
            else:
                child.stop(proc)
            self._mark(f"calls {[i for i, _, _ in calls]} collected")
        while self._pending and (self._idle or not self._busy):
            self._send(self._pending.pop(0))
        if self._pending or self._busy:
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
            self._mark(f"re-joined: {len(f)} faces")
            self.phase, self._done = "whole", {}
            if self.target < len(f):
                self._pending = [[self._write(v, f, self.target, False)]]
                return self.poll()
            parts = [(v, f)]
        self._result = parts[0]
        return True

    @staticmethod
    def _collect(written: bool, src, dst):
        if written:
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
        # Idle children go to the pool for the next decimation; busy ones (cancel, error) are killed and waited
        # for (where children cannot be pooled, idle ones too, so that their working folder, this decimation's,
        # can go: Windows keeps a process's working folder).
        for proc in self._idle:
            _give_back(self._code, proc)
        for proc, _ in self._busy.values():
            child.stop(proc)
        self._idle, self._busy = [], {}
        self._owned.remove()


def merge_duplicate_vertices_on_device(vertices, faces):
    """``merge_duplicate_vertices`` of torch tensors, on their device, as numpy (float64 [V,3], int64 [F,3]): the
    same arrays, bit for bit. A GPU sorts the rows in milliseconds where numpy's lexsort took 0.12 s for the
    realistic nut's 548 k vertices on 2 CPU cores (0.2-0.3 s on the H100 hosts' CPUs), on the export's critical
    path."""
    import torch

    v = vertices.detach().reshape(-1, 3)
    if v.dtype not in (torch.float32, torch.float64):
        v = v.double()
    f = faces.detach().reshape(-1, 3).to(device=v.device, dtype=torch.int64)
    if v.shape[0] == 0:
        return v.double().cpu().numpy(), f.cpu().numpy()
    # Rows sorted lexicographically (x, then y, then z) and equal rows merged, as the lexsort does; zeros made
    # positive first so that -0.0 and 0.0 merge into the same value on both.
    merged, remap = torch.unique(v + 0.0, dim=0, sorted=True, return_inverse=True)
    f = remap[f]
    f = f[(f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 2] != f[:, 0])]
    return merged.double().cpu().numpy(), f.cpu().numpy()


def _on_accelerator(x) -> bool:
    return hasattr(x, "detach") and getattr(x, "device", None) is not None and x.device.type != "cpu"


def _prepare(vertices, faces, reduction):
    """(merged vertices float64, faces int64, target face count) for a decimation by ``reduction``."""
    if reduction >= 1:
        raise ValueError(f"reduction must be below 1 (got {reduction}); 0.95 removes 95 % of faces")
    if reduction > 0 and _on_accelerator(vertices) and _on_accelerator(faces) and len(faces):
        v, f = merge_duplicate_vertices_on_device(vertices, faces)
        return v, f, max(1, int(round(len(f) * (1.0 - reduction))))
    v, f = _to_numpy(vertices, faces)
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
                  pieces: Optional[int] = None, while_waiting: Optional[Callable[[], None]] = None,
                  info: Optional[dict] = None):
    """Quadric decimation removing the fraction ``reduction`` of the faces (0.95 keeps 5 %).

    Duplicate vertices are merged first (decimation needs shared vertices to see connectivity);
    non-manifold input is fine (the decimator works on any triangle set). A large mesh is decimated
    in ``pieces`` (default ``decimation_pieces(faces)``; 1: one pass, in this process) in parallel
    child processes, then once more as a whole (see PIECE_MIN_FACES); meanwhile ``while_waiting()``, if
    given, is called over and over (e.g. to render something on the GPU; keep each call short).
    Afterwards, faces that collapsed onto the same three vertices are cancelled
    (``_cancel_coincident_faces``). ``reduction <= 0`` returns the input unchanged (as float32 /
    int64 arrays). Progress is reported per piece; cancel is checked between steps and while the
    children run (which it kills). ``info``, if a dict, receives "timeline" for a decimation in pieces:
    (seconds, event) from the children's start to the result (benchmarks/decimation.py --timeline).
    """
    import time

    # The children start before the merge of duplicate vertices when the face count says that pieces
    # will be used (they import meanwhile); the merged count decides, as everywhere.
    n_raw = len(faces)
    job = None
    if 0 < reduction < 1 and n_raw:
        p = decimation_pieces(n_raw) if pieces is None else max(1, int(pieces))
        t = max(1, int(round(n_raw * (1.0 - reduction))))
        if _in_pieces(p, t, n_raw):
            job = _Decimation(_Decimation.children_for(p, t, n_raw))
    try:
        v, f, target = _prepare(vertices, faces, reduction)
        if reduction <= 0 or len(f) == 0:
            return _output(v, f)
        _check_cancel(cancel)
        pieces = decimation_pieces(len(f)) if pieces is None else max(1, int(pieces))
        if target >= len(f):
            return _finish(v, f)
        if not _in_pieces(pieces, target, len(f)):
            if job is not None:
                job.close()
            _report(progress, "simplify", 0, 1)
            v, f = _decimate(v, f, target)
            _check_cancel(cancel)
            _report(progress, "simplify", 1, 1)
            return _finish(v, f)
        if job is None:
            job = _Decimation(_Decimation.children_for(pieces, target, len(f)))
        job._mark("merged")
        job.begin(v, f, target, pieces)
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
        job._mark("done")
        if info is not None:
            info["timeline"] = job.timeline
    finally:                                 # also on cancel or an error: children killed, files removed
        if job is not None:
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
        # children started first (they import while the duplicate vertices are merged), as many as the
        # face count says; the merged count decides the pieces
        n = len(self.faces)
        job = None
        if 0 < self.reduction < 1 and n:
            t = max(1, int(round(n * (1.0 - self.reduction))))
            job = _Decimation(_Decimation.children_for(decimation_pieces(n), t, n))
        try:
            v, f, target = _prepare(self.vertices, self.faces, self.reduction)
            if self.reduction <= 0 or len(f) == 0:
                self._result = _output(v, f)
            elif target >= len(f):
                self._result = _finish(v, f)
            else:
                job.begin(v, f, target, decimation_pieces(len(f)))
                self._job, job = job, None
                self._job.poll()
        finally:
            if job is not None:              # not needed, or an error
                job.close()

    @property
    def _dir(self):
        """The children's temporary folder (None when no decimation was needed)."""
        return self._job.folder if self._job is not None else None

    @property
    def _proc(self):
        """The last child process started (None if none was)."""
        return self._job.proc if self._job is not None else None

    def running(self) -> bool:
        """Whether the decimation is still going on (False once its result is in)."""
        return self._result is None and self._job is not None and not self._job.poll()

    def result(self, progress: Progress = None, cancel=None, while_waiting: Optional[Callable[[], None]] = None):
        """(vertices float32 [V,3], faces int64 [F,3]) as ``simplify_mesh(vertices, faces, reduction)``.
        ``progress("simplify", percent, 100)`` about every 0.2 s while the children work (an estimate
        from the face count, ``simplify_time_estimate``), 100 when the result is in. ``while_waiting()``,
        if given, is called over and over meanwhile (as in ``simplify_mesh``)."""
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
                if while_waiting is not None:
                    while_waiting()
                else:
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
