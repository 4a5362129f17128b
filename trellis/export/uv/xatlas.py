"""xatlas (``xatlas.parametrize``'s library) in a child process, bounded in time: ``xatlas_layout``.

The mesh is given to xatlas cut into compact pieces of ~``PIECE_FACES`` faces (its chart search is strongly
superlinear in the size of a connected piece; the cuts only add seams where a chart would have crossed a piece
boundary), packed for the texture size with a margin of ``padding`` texels (the default packs charts edge to
edge, so bilinear lookups bleed between them) and without turning charts (a turn is a transpose: a mirror).
xatlas holds the GIL, a call cannot be interrupted, and it crashes on some inputs, so it runs in a child
Python process that is killed when the time budget is spent or the caller cancels (``run_children``, which
``xatlas_groups`` runs its children with as well).
"""
from __future__ import annotations

import os
import tempfile
import time

import numpy as np

from ...core.callbacks import check
from .. import processes
from .winding import unmirror_charts

__all__ = ["PIECE_FACES", "XATLAS_CHILD", "split_pieces", "piece_order", "xatlas_time_estimate", "start_children",
           "go", "run_children", "xatlas_layout"]

# Faces per piece given to xatlas: the same texel use as the whole mesh in a fraction of the time
# (docs/benchmarks/export.md#uv-unwrap).
PIECE_FACES = 2000

# Child process: load the pieces, run xatlas, save the result. Kept free of any trellis import so that
# the child starts fast; started before its input is written, it imports meanwhile and reads it once a line (or the
# end) comes on its stdin. Input: vertices, faces sorted by piece, piece start offsets. Output,
# pieces concatenated in order: vmapping (input vertex of each output vertex), faces (indices into the
# output vertices, in the sorted order) and uvs. It leaves by ``os._exit`` once its output is written: freeing the
# atlas at a normal exit takes about a tenth of a second more.
XATLAS_CHILD = r"""
import os, sys, numpy as np, xatlas
sys.stdin.readline()
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
os._exit(0)
"""



def _split_loop(centroid: np.ndarray, piece_faces: int, partition: bool) -> list:
    """The pieces' face arrays, in their numbering: one piece halved at a time, the last one made first."""
    pieces, done = [np.arange(len(centroid))], []
    while pieces:
        g = pieces.pop()
        if len(g) <= piece_faces:
            done.append(g)
            continue
        c = centroid[g]
        axis = int(np.argmax(c.max(0) - c.min(0)))
        half = len(g) // 2
        order = g[np.argpartition(c[:, axis], half) if partition else np.argsort(c[:, axis], kind="stable")]
        pieces += [order[:half], order[half:]]
    return done


def _split_levels(centroid: np.ndarray, piece_faces: int):
    """``_split_loop``'s pieces (without ``partition``), every piece of a level halved at once: each piece's stable
    sort along its axis is one integer sort of the level (piece, the centroid's rank along the piece's axis, the
    face's place in its piece), distinct keys. None where those keys need more than 63 bits."""
    n = len(centroid)
    rank = np.empty((3, n), dtype=np.int64)
    for axis in range(3):                      # equal coordinates share a rank: the stable sort keeps their order
        rank[axis] = np.unique(centroid[:, axis], return_inverse=True)[1].reshape(-1)
    rank_bits = max((n - 1).bit_length(), 1)
    faces, starts, nodes = np.arange(n), np.array([0, n]), [0]
    leaves, children, next_id = {}, {}, 1
    while nodes:
        size = np.diff(starts)
        split = size > piece_faces
        for node, s, e in zip(np.array(nodes)[~split], starts[:-1][~split], starts[1:][~split]):
            leaves[int(node)] = faces[s:e]
        if not split.any():
            break
        parts = [faces[s:e] for s, e in zip(starts[:-1][split], starts[1:][split])]
        size = size[split]
        nodes = [node for node, cut in zip(nodes, split) if cut]
        faces = np.concatenate(parts)
        starts = np.concatenate([[0], np.cumsum(size)])
        piece_bits, place_bits = max((len(nodes) - 1).bit_length(), 1), max((len(faces) - 1).bit_length(), 1)
        if piece_bits + rank_bits + place_bits > 63:
            return None
        c = centroid[faces]
        axis = np.argmax(np.maximum.reduceat(c, starts[:-1], 0) - np.minimum.reduceat(c, starts[:-1], 0), axis=1)
        piece = np.repeat(np.arange(len(nodes), dtype=np.int64), size)
        key = (piece << np.int64(rank_bits)) | rank[np.repeat(axis, size), faces]
        key <<= np.int64(place_bits)
        key |= np.arange(len(faces), dtype=np.int64)
        key.sort()                             # distinct keys: the stable order whatever the algorithm
        faces = faces[key & np.int64((1 << place_bits) - 1)]
        half = size // 2
        starts = np.stack([starts[:-1], starts[:-1] + half], 1).reshape(-1)
        starts = np.append(starts, len(faces))
        kids = []
        for node in nodes:
            children[node] = (next_id, next_id + 1)
            kids += children[node]
            next_id += 2
        nodes = kids
    # numbered as the loop finishes them: depth first, the upper half first
    done, stack = [], [0]
    while stack:
        node = stack.pop()
        if node in leaves:
            done.append(leaves[node])
        else:
            stack += children[node]
    return done


def split_pieces(vertices: np.ndarray, faces: np.ndarray, piece_faces: int = PIECE_FACES,
                 partition: bool = False) -> np.ndarray:
    """Piece id per face: the largest piece is halved at the median face centroid along the longest
    side of its centroids' box until every piece has at most ``piece_faces`` faces. ``partition``: each half
    found by a median partition instead of a sort (linear time; the same halves but where centroids tie at the
    median)."""
    n = len(faces)
    pieces = [np.arange(n)]
    if n > piece_faces:
        centroid = vertices[faces].mean(1)
        pieces = None if partition else _split_levels(centroid, piece_faces)
        if pieces is None:
            pieces = _split_loop(centroid, piece_faces, partition)
    piece = np.empty(n, dtype=np.int64)
    for i, g in enumerate(pieces):
        piece[g] = i
    return piece


def piece_order(piece: np.ndarray):
    """(face order, piece starts): the faces sorted by piece id (stable), and where each piece begins in that
    order (one more entry: the end), for ``split_pieces``'s ``piece``."""
    order = np.argsort(piece, kind="stable")
    return order, np.searchsorted(piece[order], np.arange(int(piece.max(initial=0)) + 2))


def xatlas_time_estimate(num_faces: int) -> float:
    """Rough xatlas run time in seconds with the mesh cut into pieces (about linear in the faces, measured on 2
    CPU cores). CPUs differ several-fold, so this only skips hopeless cases; the budget is what bounds the
    time."""
    return 1.0 * max(num_faces, 1) / 30000.0


def start_children(code, jobs, tmp, procs: list, stdin: bool = False) -> list:
    """Start one child of ``code`` per job (its output file, then its other arguments; the input is ``tmp``'s
    in.npz) into ``procs`` (the caller stops them: ``processes.stop_all``); with ``stdin``, each with a pipe on its
    stdin (``go``). RuntimeError where no child can start."""
    for dst, *args in jobs:
        proc = processes.start(code, (os.path.join(tmp, "in.npz"), dst, *args), tmp, keep_stderr=True, stdin=stdin)
        if proc is None:
            raise RuntimeError("xatlas: no child process can be started here")
        procs.append(proc)
    return procs


def go(procs) -> None:
    """A line on each child's stdin, then its end: children started by ``start_children(stdin=True)`` waiting for
    their input read it now (one that has died meanwhile is found by ``run_children``)."""
    for proc in procs:
        try:
            proc.stdin.write(b"\n")
            proc.stdin.close()
        except OSError:
            pass


def run_children(code, jobs, tmp, deadline, budget, progress, estimate, cancel, name="xatlas", procs=None):
    """Start one child of ``code`` per job (``start_children``; ``procs``: those children, started already and
    told to ``go``), wait for them all; their outputs in order, each read into a dict. Raises TimeoutError past
    ``deadline`` (``budget`` seconds after the start; ``name`` says who ran past it), ``Cancelled`` on cancel,
    RuntimeError when a child fails (the others are stopped then); every child is stopped and reaped whichever way
    this ends."""
    started, procs = procs is not None, [] if procs is None else procs
    try:
        if not started:
            start_children(code, jobs, tmp, procs)
        start = deadline - budget
        while any(p.poll() is None for p in procs):
            if any(p.returncode not in (None, 0) for p in procs):
                break                          # one failed: the others are stopped, its error raised below
            check(cancel)
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} ran past its {budget:.1f} s budget")
            if progress is not None:
                progress(min(99, int(100 * (time.monotonic() - start) / estimate)), 100)
            time.sleep(0.02)
    finally:
        processes.stop_all(procs)
    errors = []
    for proc in procs:
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        if proc.stderr:
            proc.stderr.close()
        if proc.returncode != 0:       # the children stopped here (SIGTERM) after one failed come last
            errors.append((proc.returncode == -15, f"xatlas exited with {proc.returncode}: {err.strip()[-500:]}"))
    if errors:
        raise RuntimeError(min(errors)[1])
    outs = []
    for dst, *_ in jobs:
        with np.load(dst) as out:          # read now: the folder goes with the caller's block
            outs.append({key: out[key] for key in out.files})
    return outs


def xatlas_layout(v, f, budget, texture_size, padding, progress, cancel):
    """(vertices, faces, uvs, vmapping) as ``unwrap_uv`` returns them, from xatlas in a child process; raises on
    a failure, TimeoutError past ``budget`` seconds (the child is killed then, and on cancel)."""
    deadline = time.monotonic() + float(budget)
    estimate = max(xatlas_time_estimate(len(f)), 0.1)
    with tempfile.TemporaryDirectory(prefix="trellis_uv_") as tmp:
        jobs, procs = [(os.path.join(tmp, "out.npz"),)], []
        try:
            # Same interpreter and environment (so xatlas is found wherever this process finds it), started in the
            # temporary folder so that nothing in the caller's cwd shadows a module; it imports while the pieces
            # are cut and written.
            start_children(XATLAS_CHILD, jobs, tmp, procs, stdin=True)
            order, starts = piece_order(split_pieces(v, f))
            np.savez(os.path.join(tmp, "in.npz"), vertices=v, faces=f[order].astype(np.uint32), starts=starts,
                     resolution=int(texture_size), padding=int(padding))
            go(procs)
        except BaseException:
            processes.stop_all(procs)
            raise
        out = run_children(XATLAS_CHILD, jobs, tmp, deadline, float(budget), progress, estimate, cancel,
                           procs=procs)[0]
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
