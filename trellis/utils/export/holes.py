"""Spec §15.2: hole filling (our replacement for MeshFix's small-boundary filling): boundary loops up
to a number of edges are closed by a fan around the loop's centroid, wound like the faces around."""
from __future__ import annotations

from typing import Optional

import numpy as np

from ...core.callbacks import check as _check_cancel
from .common import Progress, _output, _report, _to_numpy
from .graph import _components, _edges


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
