"""Spec §15.2: hole filling (our replacement for MeshFix's small-boundary filling): boundary loops up
to a number of edges are closed by the triangulation of their own vertices with the smallest largest
dihedral angle, then the smallest area, wound like the faces around."""
from __future__ import annotations

from typing import Optional

import numpy as np

from ...core.callbacks import StageProgress, check as _check_cancel
from ..arrays import output, report, to_numpy
from ..mesh_graph import components
from ..rows import row_max, row_min, row_norm, row_sum

__all__ = ["PATCH_MAX_EDGES", "boundary_edges", "boundary_with_faces", "boundary_cycles", "fill_holes"]


def boundary_edges(faces, n_vertices: Optional[int] = None):
    """Oriented boundary half-edges [B,2] (tail, head): undirected edges used by one face."""
    return boundary_with_faces(np.asarray(faces, dtype=np.int64).reshape(-1, 3), n_vertices)[0]


def boundary_with_faces(f, n_vertices=None):
    """(boundary half-edges [B,2], the face each belongs to [B])."""
    if len(f) == 0:
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.int64)
    if n_vertices is None:
        n_vertices = int(f.max()) + 1
    he = f[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
    n = np.int64(n_vertices)
    key = row_min(he) * n + row_max(he)               # the undirected edge, as mesh_graph.edges keys it
    # The keys that occur once, from a plain sort (no inverse of every half-edge, as the edge table would make).
    s = np.sort(key, kind="stable")                  # a merge sort uses the runs the faces' order leaves
    lone = np.ones(len(s), dtype=bool)
    lone[1:] = s[1:] != s[:-1]
    lone[:-1] &= s[:-1] != s[1:]
    single = s[lone]
    if len(single) == 0:
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.int64)
    proper = he[:, 0] != he[:, 1]
    if f.min() >= 0 and f.max() < n_vertices:
        # Only half-edges between two ends of lone edges can be one: look up just those.
        ends = np.zeros(n_vertices, dtype=bool)
        ends[single // n] = True
        ends[single % n] = True
        proper &= ends[he[:, 0]] & ends[he[:, 1]]
    cand = np.nonzero(proper)[0]
    pos = np.minimum(np.searchsorted(single, key[cand]), len(single) - 1)
    keep = cand[single[pos] == key[cand]]
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


def boundary_cycles(bnd, n_vertices):
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
        n_comp, comp = components(b, src, succ[src]) if b else (0, np.zeros(0, np.int64))
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


def _loop_order(succ, loop_edges):
    """Position of each loop edge along its loop, counted from the loop's smallest edge index.

    ``succ``: successor half-edge of every boundary half-edge; ``loop_edges``: the half-edges of whole
    loops. List ranking by pointer doubling (O(E log L), no Python loop over edges).
    """
    n = len(loop_edges)
    local = np.full(len(succ), -1, dtype=np.int64)
    local[loop_edges] = np.arange(n)
    nxt = local[succ[loop_edges]]
    # The loop's start: its smallest member (the minimum propagated around the cycle by doubling).
    lo = np.arange(n)
    hop = nxt.copy()
    span = 1
    while span < n:
        lo = np.minimum(lo, lo[hop])
        hop = hop[hop]
        span *= 2
    # Break every cycle before its start, then rank the chains by distance to their end.
    nxt = np.where(nxt == lo, -1, nxt)
    dist = np.where(nxt >= 0, 1, 0)
    hop = nxt.copy()
    while (hop >= 0).any():
        has = hop >= 0
        dist[has] += dist[hop[has]]
        hop = np.where(has, hop[np.maximum(hop, 0)], -1)
    size = np.bincount(lo, minlength=n)[lo]
    return lo, size - 1 - dist


def _min_weight_patches(points, rim_normal, forbidden, length=None):
    """Minimum-weight triangulation of same-length polygons without new vertices (the hole patches),
    weight = (largest dihedral angle, total area) compared lexicographically.

    ``points`` [B,N,3]: each polygon's vertices in boundary order; ``rim_normal`` [B,N,3]: unit normal
    of the mesh face on the far side of edge i -> i+1 (mod N); ``forbidden`` [B,N,N] bool: diagonals
    that may not be used (edges the mesh has already). Every patch triangle (i, j, k), i < k < j in
    loop order, is wound against the loop, so it agrees with the faces around the hole. The dihedral
    angle is measured as 1 - cos between unit normals (0 flat, 2 folded back), against the patch
    triangle or mesh face on each of its three sides. ``length`` [B] (default N): polygon b uses its
    first length[b] vertices (the rest is padding, never read into its result). Returns (triangles
    [B,N-2,3] of local indices, the first length[b] - 2 rows of polygon b valid; ok [B]: False where
    every triangulation needs a forbidden diagonal).
    """
    B, N, _ = points.shape
    length = np.full(B, N, dtype=np.int64) if length is None else np.asarray(length, dtype=np.int64)
    last = (length - 1)[:, None, None]
    rim_last = rim_normal[np.arange(B), length - 1][:, None, None, :]   # across edge L-1 -> 0
    big = np.inf
    ang = np.full((B, N, N), big)      # worst dihedral measure inside sub-polygon (i..j)
    area = np.full((B, N, N), big)
    top = np.zeros((B, N, N, 3))       # unit normal of the triangle on diagonal (i, j)
    split = np.zeros((B, N, N), dtype=np.int64)
    idx = np.arange(N - 1)
    ang[:, idx, idx + 1] = 0.0
    area[:, idx, idx + 1] = 0.0
    top[:, idx, idx + 1] = rim_normal[:, :N - 1]
    bi = np.arange(B)[:, None, None]
    for s in range(2, N):
        i = np.arange(N - s)[None, :, None]
        j = i + s
        k = i + np.arange(1, s)[None, None, :]
        pi, pj, pk = points[bi, i], points[bi, j], points[bi, k]
        n = np.cross(pj - pi, pk - pi)
        a2 = row_norm(n, -1)
        unit = n / np.maximum(a2, 1e-300)[..., None]
        worst = np.maximum(ang[bi, i, k], ang[bi, k, j])
        worst = np.maximum(worst, 1.0 - row_sum(unit * top[bi, i, k], -1))
        worst = np.maximum(worst, 1.0 - row_sum(unit * top[bi, k, j], -1))
        closing = (i == 0) & (j == last)     # the whole polygon: its last triangle meets edge L-1 -> 0 too
        worst = np.where(closing, np.maximum(worst, 1.0 - row_sum(unit * rim_last, -1)), worst)
        total = area[bi, i, k] + area[bi, k, j] + 0.5 * a2
        bad = forbidden[bi, i, j] & ~closing
        worst = np.where(bad | (a2 <= 0.0), big, worst)
        # Lexicographic minimum: the smallest angle measure (to rounding), then the smallest area.
        best = worst.min(-1, keepdims=True)
        total = np.where(worst <= best + 1e-9, total, big)
        pick = total.argmin(-1)
        ii, jj = np.arange(N - s), np.arange(s, N)
        take = lambda x: np.take_along_axis(x, pick[..., None], -1)[..., 0]  # noqa: E731
        ang[:, ii, jj] = take(worst)
        area[:, ii, jj] = take(total)
        top[:, ii, jj] = np.take_along_axis(unit, pick[..., None, None], -2)[..., 0, :]
        split[:, ii, jj] = ii + 1 + pick
    ok = np.isfinite(ang[np.arange(B), 0, length - 1])
    # Read the triangles back, one level of the split tree at a time for every polygon together.
    tris = np.zeros((B, N - 2, 3), dtype=np.int64)
    count = np.zeros(B, dtype=np.int64)
    fb, fi, fj = np.arange(B), np.zeros(B, dtype=np.int64), length - 1
    while len(fb):
        fk = split[fb, fi, fj]
        tris[fb, count[fb] + _rank_in_group(fb)] = np.stack([fi, fj, fk], -1)
        count += np.bincount(fb, minlength=B)
        left, right = fk - fi >= 2, fj - fk >= 2
        fb, fi, fj = (np.concatenate([fb[left], fb[right]]), np.concatenate([fi[left], fk[right]]),
                      np.concatenate([fk[left], fj[right]]))
    return tris, ok


# The patch search is cubic in a loop's length: longer loops get the centroid fan
# (docs/benchmarks/export.md#hole-patches).
PATCH_MAX_EDGES = 128


def _patch_loops(v, f, bnd, bnd_face, succ, on, loop):
    """Triangles closing the loops made of boundary half-edges ``on`` (loop id ``loop``, dense):
    minimum-weight patches (``_min_weight_patches``), loops of similar length in one batch. Returns
    (faces [P,3], ids of the loops not closed: longer than PATCH_MAX_EDGES, or every triangulation
    needs an existing edge)."""
    _, pos = _loop_order(succ, on)
    length = np.bincount(loop)
    order = np.empty(len(on), dtype=np.int64)
    first = np.concatenate([[0], np.cumsum(length)[:-1]])
    order[first[loop] + pos] = np.arange(len(on))   # loop edges laid out loop by loop, in boundary order
    ring = on[order]                                # the half-edges of each loop in order
    vert = bnd[ring, 0]
    v = np.asarray(v, dtype=np.float64)
    rf = f[bnd_face[ring]]
    rim = np.cross(v[rf[:, 1]] - v[rf[:, 0]], v[rf[:, 2]] - v[rf[:, 0]])
    rim = rim / np.maximum(row_norm(rim)[:, None], 1e-300)
    n_v = np.int64(len(v))
    # The mesh's edges between two loop vertices (the only ones a patch diagonal could repeat).
    on_loop = np.zeros(len(v), dtype=bool)
    on_loop[vert] = True
    he = f[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
    he = he[on_loop[he[:, 0]] & on_loop[he[:, 1]]]
    mesh_keys = np.unique(row_min(he) * n_v + row_max(he))
    if len(mesh_keys) == 0:
        mesh_keys = np.full(1, -1, dtype=np.int64)
    out, owner, failed = [], [], [np.nonzero(length > PATCH_MAX_EDGES)[0]]
    # Loops of similar length in one batch, padded to the batch's longest (the DP runs one step per
    # diagonal length for the whole batch), in chunks of bounded work (it is cubic in the length).
    bucket = np.ceil(np.log2(length) * 2).astype(np.int64)        # lengths within a factor 1.41
    for bkt in np.unique(bucket[length <= PATCH_MAX_EDGES]):
        ids = np.nonzero((bucket == bkt) & (length <= PATCH_MAX_EDGES))[0]
        n = int(length[ids].max())
        for chunk in np.array_split(ids, max(1, len(ids) * n * n * n // 4_000_000)):
            if len(chunk) == 0:
                continue
            lc = length[chunk]
            cols = first[chunk][:, None] + np.minimum(np.arange(n), lc[:, None] - 1)   # pad: repeat the last
            lv = vert[cols]
            key = np.minimum(lv[:, :, None], lv[:, None, :]) * n_v + np.maximum(lv[:, :, None], lv[:, None, :])
            hit = np.searchsorted(mesh_keys, key.ravel()).clip(0, len(mesh_keys) - 1)
            forbidden = (mesh_keys[hit] == key.ravel()).reshape(key.shape)
            tris, ok = _min_weight_patches(v[lv], rim[cols], forbidden, lc)
            valid = (np.arange(n - 2) < (lc - 2)[:, None]) & ok[:, None]
            out.append(lv[np.arange(len(chunk))[:, None, None], tris][valid])
            owner.append(np.broadcast_to(chunk[:, None], valid.shape)[valid])
            failed.append(chunk[~ok])
    faces = np.concatenate(out) if out else np.zeros((0, 3), dtype=np.int64)
    owner = np.concatenate(owner) if owner else np.zeros(0, dtype=np.int64)
    # Two loops that share two vertices may both pick the diagonal between them (an edge of four faces):
    # such loops get the fan instead (it adds no edge between loop vertices).
    if len(faces):
        pe = faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
        pk = row_min(pe) * n_v + row_max(pe)
        uk, inv, cnt = np.unique(pk, return_inverse=True, return_counts=True)
        in_mesh = np.isin(uk, mesh_keys)
        clash = (cnt + in_mesh) > 2
        if clash.any():
            bad = np.unique(np.repeat(owner, 3)[clash[inv]])
            failed.append(bad)
            keep = ~np.isin(owner, bad)
            faces = faces[keep]
    return faces, np.unique(np.concatenate(failed))


def fill_holes(vertices, faces, max_hole_edges: int, progress: StageProgress = None, cancel=None, boundary=None):
    """Close every boundary loop with 3..``max_hole_edges`` edges (spec §15.2, MeshFix's role).

    Boundary edges are the edges used by exactly one face, oriented as in that face; they are
    chained into simple loops (non-manifold vertices shared by two loops are handled, see
    ``_boundary_cycles``). A loop is closed by the triangulation of its own vertices that keeps the
    largest dihedral angle (between patch triangles and with the faces around the hole) smallest,
    then the area (``_min_weight_patches``; no new vertex, no refinement or fairing; a diagonal the
    mesh already has as an edge is never used): a centroid fan folds back over its neighbours in grooves, which
    then cost the UV atlas single-triangle charts. A loop no such triangulation closes (each needs an existing
    edge), one longer than PATCH_MAX_EDGES (the search is cubic in the length), and two loops that share two
    vertices and both picked the diagonal between them still get the centroid fan. The rim of a lone triangle
    is left open. Loops whose edges do not chain up consistently (mixed winding around the hole) are left open
    too. ``boundary``: (bnd, bnd_face, succ, cycle) as ``boundary_with_faces`` and ``boundary_cycles`` give them for
    these faces, found already by the caller.
    """
    v, f = to_numpy(vertices, faces)
    stage, steps = "fill_holes", 3
    report(progress, stage, 0, steps)
    _check_cancel(cancel)
    bnd, bnd_face = boundary_with_faces(f, len(v)) if boundary is None else boundary[:2]
    if len(bnd) == 0 or max_hole_edges < 3:
        report(progress, stage, steps, steps)
        return output(v, f)
    succ, cycle = boundary_cycles(bnd, len(v)) if boundary is None else boundary[2:]
    report(progress, stage, 1, steps)
    _check_cancel(cancel)

    on = np.nonzero(cycle >= 0)[0]
    if len(on) == 0:
        report(progress, stage, steps, steps)
        return output(v, f)
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
        report(progress, stage, steps, steps)
        return output(v, f)
    _, loop = np.unique(loop, return_inverse=True)
    patches, failed = _patch_loops(v, f, bnd, bnd_face, succ, on, loop)
    report(progress, stage, 2, steps)
    _check_cancel(cancel)
    new_vertices = np.zeros((0, 3))
    fan = np.isin(loop, failed)
    if fan.any():
        a, b = bnd[on[fan], 0], bnd[on[fan], 1]
        fan_loops, fan_loop = np.unique(loop[fan], return_inverse=True)
        n_fan = len(fan_loops)
        cnt = np.bincount(fan_loop, minlength=n_fan).astype(np.float64)
        centre = np.stack([np.bincount(fan_loop, v[a, i], n_fan) for i in range(3)], -1)
        new_vertices = centre / cnt[:, None]
        patches = np.concatenate([patches, np.stack([b, a, len(v) + fan_loop], -1)], 0)
    v = np.concatenate([v, new_vertices], 0)
    f = np.concatenate([f, patches.astype(f.dtype)], 0)
    report(progress, stage, steps, steps)
    return output(v, f)
