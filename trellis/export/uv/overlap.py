"""Faces that lie over others in UV space: every overlap test of the UV stage, from the cheapest to the exact.

* ``overlapping_faces``: in a packed atlas, faces sharing a texel centre with another (what a bake can see).
* ``under_covered_faces``: in a packed atlas, faces that own clearly fewer texels of the layout's raster than
  their area (the fallback chart layout's quick test).
* ``overlapping_faces_exact``: in the flat charts before packing, triangles of one chart whose interiors meet
  (a separating-axis test on candidate pairs from a grid); ``charts_that_may_overlap`` clears the charts that
  are provably one sheet first, and ``chart_self_overlaps`` runs the exact test on the rest only.
* ``triangle_overlaps``: one triangle against a chart's triangles (a face put back into a chart).
"""
from __future__ import annotations

import numpy as np

from ...core.callbacks import CancelCheck, check
from .chart_mesh import unique_keys
from .stats import centre_counts, row_spans, uv_coverage
from ..rows import column_min, row_all, row_any, row_max, row_min

__all__ = ["overlapping_faces", "under_covered_faces", "overlapping_faces_exact", "charts_that_may_overlap",
           "chart_self_overlaps", "triangle_overlaps", "signed_area", "box_pairs", "orient"]


def overlapping_faces(faces, uvs, texture_size: int, margin: float = 1e-4) -> np.ndarray:
    """Bool per face: some texel centre inside it is inside another face too."""
    s = int(texture_size)
    tri, rows, c0, c1 = row_spans(faces, uvs, s, margin)
    over = (centre_counts(rows, c0, c1, s) > 1).astype(np.int32)
    prefix = np.zeros((s, s + 1), dtype=np.int32)
    np.cumsum(over, axis=1, out=prefix[:, 1:])
    hit = prefix[rows, c1 + 1] - prefix[rows, c0] > 0
    out = np.zeros(len(np.asarray(faces).reshape(-1, 3)), dtype=bool)
    out[tri[hit]] = True
    return out


def under_covered_faces(faces, uvs, size, cancel=None):
    """Faces that own clearly fewer texels of the layout's raster (``uv_coverage``; ``cancel``: its) than their UV
    area (at least 6 texels): they lie under other faces."""
    face_id = uv_coverage(faces, uvs, size, cancel=cancel).reshape(-1).cpu().numpy()
    owned = np.bincount(face_id, minlength=len(faces) + 1)[1:]
    t = uvs[faces] * size
    area = 0.5 * np.abs((t[:, 1, 0] - t[:, 0, 0]) * (t[:, 2, 1] - t[:, 0, 1])
                        - (t[:, 1, 1] - t[:, 0, 1]) * (t[:, 2, 0] - t[:, 0, 0]))
    return (area >= 6) & (owned < 0.5 * area)


def signed_area(tri):
    """Signed area of each flat triangle ``tri`` [F,3,2]: > 0 counter-clockwise."""
    return 0.5 * ((tri[:, 1, 0] - tri[:, 0, 0]) * (tri[:, 2, 1] - tri[:, 0, 1])
                  - (tri[:, 1, 1] - tri[:, 0, 1]) * (tri[:, 2, 0] - tri[:, 0, 0]))


def box_pairs(lo, hi, group):
    """(i, j), i < j: items of the same ``group`` whose boxes ``lo`` / ``hi`` [N,2] overlap. Candidates from
    a grid per group of about the median box size (each item entered in every cell its box covers), never
    finer than 1/64 of the largest box (so no box covers more than 65 x 65 cells)."""
    n = len(lo)
    none = (np.zeros(0, np.int64),) * 2
    if n < 2:
        return none
    size = row_max(np.maximum(hi - lo, 0.0))
    cell = max(float(np.median(size)), float(size.max()) / 64) or 1.0
    base = column_min(np.floor(lo / cell).astype(np.int64))
    i0 = np.floor(lo / cell).astype(np.int64) - base
    i1 = np.floor(hi / cell).astype(np.int64) - base
    nx, ny = (i1 - i0 + 1).T
    cnt = nx * ny
    ent = np.repeat(np.arange(n), cnt)                          # one entry per (item, cell its box covers)
    k = np.arange(len(ent)) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    gx, gy = i0[ent, 0] + k % nx[ent], i0[ent, 1] + k // nx[ent]
    span = int(i1.max()) + 1
    key = (np.asarray(group, np.int64)[ent] * span + gx) * span + gy
    order = np.lexsort((ent, key))
    key, ent = key[order], ent[order]
    first = np.r_[True, key[1:] != key[:-1]]
    end = np.r_[np.nonzero(first)[0][1:], len(key)][np.cumsum(first) - 1]
    after = end - np.arange(len(key)) - 1                       # partners after each entry in its cell
    a = np.repeat(np.arange(len(key)), after)
    b = a + 1 + (np.arange(len(a)) - np.repeat(np.cumsum(after) - after, after))
    pa, pb = ent[a], ent[b]
    meet = row_all((lo[pa] <= hi[pb]) & (lo[pb] <= hi[pa]))
    if not meet.any():
        return none
    pair = np.unique(np.minimum(pa[meet], pb[meet]) * n + np.maximum(pa[meet], pb[meet]))
    return pair // n, pair % n


def overlapping_faces_exact(chart: np.ndarray, tri: np.ndarray, faces: np.ndarray = None) -> np.ndarray:
    """Bool per face: its flat triangle (``tri`` [F,3,2], each chart in its own plane) overlaps another
    triangle of its own chart, i.e. their interiors meet (triangles that only share an edge or a corner do
    not; allowance 1e-9 of their size). Exact, unlike a test at texel centres (``overlapping_faces``).
    ``faces``: only these (indices) are tested, against each other. Separating-axis test on the six edge
    normals of each pair of triangles whose boxes overlap (``box_pairs``)."""
    tri = np.asarray(tri, np.float64)
    out = np.zeros(len(tri), bool)
    idx = np.arange(len(tri)) if faces is None else np.asarray(faces, np.int64)
    corners = tri[idx]
    lo, hi = row_min(corners), row_max(corners)
    size = row_max(np.maximum(hi - lo, 0.0))
    real = np.abs(signed_area(tri[idx])) > 1e-12 * max(float((size * size).max(initial=0.0)), 1e-300)
    idx, lo, hi, size = idx[real], lo[real], hi[real], size[real]
    pa, pb = box_pairs(lo, hi, np.asarray(chart, np.int64)[idx])
    if len(pa) == 0:
        return out
    A, B = tri[idx[pa]], tri[idx[pb]]
    # projections written out as products and one sum (not einsum, whose inner loops may fuse them): a corner
    # both triangles share then projects to the same number and a shared edge separates them exactly
    slack = 1e-9 * np.maximum(size[pa], size[pb])
    apart = np.zeros(len(pa), bool)
    for X in (A, B):
        for e in range(3):
            d = X[:, (e + 1) % 3] - X[:, e]
            length = np.maximum(np.hypot(d[:, 0], d[:, 1]), 1e-300)
            nx, ny = (-d[:, 1] / length)[:, None], (d[:, 0] / length)[:, None]
            ka = A[..., 0] * nx + A[..., 1] * ny
            kb = B[..., 0] * nx + B[..., 1] * ny
            apart |= np.maximum(row_min(kb) - row_max(ka), row_min(ka) - row_max(kb)) >= -slack
    out[idx[pa[~apart]]] = True
    out[idx[pb[~apart]]] = True
    return out


def charts_that_may_overlap(faces, chart: np.ndarray, tri: np.ndarray, tol: float = 1e-6,
                            cancel: CancelCheck = None) -> np.ndarray:
    """Bool per chart: its flattening may run over itself. A chart is cleared when every triangle of it keeps
    its orientation, the angles around each of its inner vertices add up to one turn, those at its border
    vertices to less than one, and its border (edges of one of its faces only) neither crosses nor touches
    itself (border segments without a common vertex): a disc so flattened is one sheet. A chart with a
    half-edge in two of its faces (faces wound against each other, or three on one edge) is never cleared.
    (``tol``: radians, and of the segments' size squared for the crossings; ``cancel`` asked between the passes.)"""
    f = np.asarray(faces, np.int64).reshape(-1, 3)
    chart = np.asarray(chart, np.int64)
    tri = np.asarray(tri, np.float64)
    k = int(chart.max()) + 1 if len(chart) else 0
    out = np.zeros(k, bool)
    if k == 0:
        return out
    out[chart[signed_area(tri) <= 0]] = True
    nv = int(f.max()) + 1
    corner = chart[:, None] * nv + f                                                    # (chart, vertex)
    to = f[:, [1, 2, 0]]
    # the half-edges i -> i + 1 sorted by (chart, edge), then direction: one alone on its edge is on its chart's
    # border; two in one direction (faces wound against each other across the edge, or more than two faces on it)
    # make a chart the tests below, made for a consistently wound disc, do not see. (Where a chart has none of the
    # latter, alone on its edge is without its twin; a face on a repeated vertex has no area: its chart is out.)
    lo, hi = np.minimum(f, to), np.maximum(f, to)
    half = ((((chart[:, None] * nv + lo) * nv + hi) << 1) | (f > to)).reshape(-1)
    order = np.argsort(half)
    check(cancel)
    ordered = half[order]
    same_edge = (ordered[1:] >> 1) == (ordered[:-1] >> 1)
    twice = np.zeros(len(half), bool)
    both = ordered[1:] == ordered[:-1]
    twice[order[1:][both]] = True
    out[chart[row_any(twice.reshape(-1, 3))]] = True
    alone = np.ones(len(half), bool)
    alone[1:] &= ~same_edge
    alone[:-1] &= ~same_edge
    border = np.empty(len(half), bool)
    border[order] = alone
    border = border.reshape(-1, 3)
    nxt, prv = tri[:, [1, 2, 0]] - tri, tri[:, [2, 0, 1]] - tri
    angle = np.arctan2(nxt[..., 0] * prv[..., 1] - nxt[..., 1] * prv[..., 0],
                       nxt[..., 0] * prv[..., 0] + nxt[..., 1] * prv[..., 1])           # [F,3], at each corner
    check(cancel)
    keys, inv = unique_keys(corner, k * nv)
    check(cancel)
    turn = np.bincount(inv, weights=angle.reshape(-1), minlength=len(keys))
    # (chart, vertex) at either end of a border half-edge: its own corner and the face's next one
    inv = inv.reshape(-1, 3)
    on_border = np.zeros(len(keys), bool)
    on_border[inv[border]] = True
    on_border[inv[:, [1, 2, 0]][border]] = True
    wrong = np.where(on_border, turn > 2 * np.pi - tol, np.abs(turn - 2 * np.pi) > tol)
    out[keys[wrong] // nv] = True
    # border crossings: segments of one chart that share no vertex and cross properly
    fi, ci = np.nonzero(border)
    p0, p1 = tri[fi, ci], tri[fi, (ci + 1) % 3]
    va, vb = f[fi, ci], to[fi, ci]
    check(cancel)
    sa, sb = box_pairs(np.minimum(p0, p1), np.maximum(p0, p1), chart[fi])
    keep = (va[sa] != va[sb]) & (va[sa] != vb[sb]) & (vb[sa] != va[sb]) & (vb[sa] != vb[sb])
    sa, sb = sa[keep], sb[keep]
    if len(sa):
        scale = np.maximum(row_max(np.abs(p1[sa] - p0[sa])), row_max(np.abs(p1[sb] - p0[sb]))) ** 2 * tol
        d1, d2 = orient(p0[sb], p1[sb], p0[sa]), orient(p0[sb], p1[sb], p1[sa])
        d3, d4 = orient(p0[sa], p1[sa], p0[sb]), orient(p0[sa], p1[sa], p1[sb])
        # crossing or touching (an end on the other segment, up to the allowance): neither segment has both
        # ends strictly on one side of the other
        meet = (np.minimum(d1, d2) <= scale) & (np.maximum(d1, d2) >= -scale) & \
               (np.minimum(d3, d4) <= scale) & (np.maximum(d3, d4) >= -scale)
        out[chart[fi[sa[meet]]]] = True
    return out


def chart_self_overlaps(faces, chart: np.ndarray, tri: np.ndarray) -> np.ndarray:
    """Bool per face: it overlaps another face of its chart (``overlapping_faces_exact``), tested in the
    charts ``charts_that_may_overlap`` does not clear only."""
    suspect = charts_that_may_overlap(faces, chart, tri)
    if not suspect.any():
        return np.zeros(len(tri), bool)
    return overlapping_faces_exact(chart, tri, np.nonzero(suspect[np.asarray(chart, np.int64)])[0])


def orient(a, b, c):
    """Twice the signed area of triangle a, b, c (arrays [...,2]): > 0 when c lies left of a -> b."""
    return (b[..., 0] - a[..., 0]) * (c[..., 1] - a[..., 1]) - (b[..., 1] - a[..., 1]) * (c[..., 0] - a[..., 0])


def _seg_cross(p1, p2, q1, q2):
    """Proper crossing of segments p1p2 and q1q2 (arrays [...,2]), touching excluded."""
    d1, d2 = orient(q1, q2, p1), orient(q1, q2, p2)
    d3, d4 = orient(p1, p2, q1), orient(p1, p2, q2)
    return (d1 * d2 < 0) & (d3 * d4 < 0)


def _inside(p, t, eps):
    """Point(s) p [...,2] strictly inside triangles t [N,3,2] (counter-clockwise or not)."""
    out = []
    for k in range(3):
        a, b = t[:, k], t[:, (k + 1) % 3]
        out.append((b[:, 0] - a[:, 0]) * (p[..., 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (p[..., 0] - a[:, 0]))
    s = np.stack(out, -1)
    return row_all(s > eps, -1) | row_all(s < -eps, -1)


def triangle_overlaps(new, others, scale):
    """Does triangle ``new`` [3,2] overlap any of ``others`` [N,3,2] (sharing edges / corners is fine)?"""
    if len(others) == 0:
        return False
    lo, hi = new.min(0), new.max(0)
    near = row_all(row_max(others) >= lo) & row_all(row_min(others) <= hi)
    t = others[near]
    if len(t) == 0:
        return False
    # shrink the new triangle a little towards its centre so shared edges and corners do not count
    c = new.mean(0)
    shrunk = c + (new - c) * (1 - 1e-6)
    eps = 1e-12 * scale * scale
    for k in range(3):
        a, b = shrunk[k], shrunk[(k + 1) % 3]
        for j in range(3):
            if _seg_cross(a, b, t[:, j], t[:, (j + 1) % 3]).any():
                return True
    if _inside(shrunk[None, None, 0], t, eps).any() or _inside(shrunk[None, None, 1], t, eps).any():
        return True
    centres = t.mean(1)
    sa = np.stack([shrunk] * len(t))
    return bool(_inside(centres[:, None], sa, eps).any())
