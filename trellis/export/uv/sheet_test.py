"""Faces of flat charts that lie over other faces of their own chart, for charts of any topology whose triangles all
keep their winding (the grouped layout's projections, ``grouped``), cheaper than testing every pair of nearby
triangles (``overlap.overlapping_faces_exact``):

* ``overlap.charts_that_may_overlap`` clears a disc that is one sheet; a chart with holes (V - E + F != 1) is
  never cleared (a hole's border can run the wrong way round with every local test passing).
* Two faces sharing an edge overlap exactly when their third corners lie on one side of it.
* Two faces sharing one corner overlap only if the faces around that corner do not form one fan turning at most once:
  within such a fan each face lies in its own angular sector. Those corners' faces get the separating-axis test with
  all other pairs whose boxes meet.
"""
from __future__ import annotations

import numpy as np

from ...core.callbacks import CancelCheck, check
from .chart_mesh import unique_keys
from .overlap import box_pairs, charts_that_may_overlap

__all__ = ["chart_overlaps", "not_discs"]


def not_discs(f, chart, k, cancel: CancelCheck = None):
    """Bool per chart (of ``k``): its faces ``f`` do not make a disc (V - E + F != 1); ``cancel`` asked between
    the vertex and the edge counts."""
    nv = int(f.max()) + 1
    corners = chart[:, None] * nv + f
    v_keys = unique_keys(corners, k * nv)[0]
    check(cancel)
    e = np.sort(np.stack([f, f[:, [1, 2, 0]]], -1), -1)                     # [F,3,2]
    ekey = (chart[:, None] * nv + e[..., 0]) * nv + e[..., 1]
    e_keys = np.sort(ekey, axis=None)              # distinct by hand: numpy's hashed unique is far slower here
    e_keys = e_keys[np.r_[True, e_keys[1:] != e_keys[:-1]]]
    euler = (np.bincount(v_keys // nv, minlength=k) - np.bincount(e_keys // (nv * nv), minlength=k)
             + np.bincount(chart, minlength=k))
    return euler != 1


def _corner_turns(t):
    nxt, prv = t[:, [1, 2, 0]] - t, t[:, [2, 0, 1]] - t
    return np.abs(np.arctan2(nxt[..., 0] * prv[..., 1] - nxt[..., 1] * prv[..., 0],
                             nxt[..., 0] * prv[..., 0] + nxt[..., 1] * prv[..., 1]))


def chart_overlaps(f, chart, tri, test, cancel: CancelCheck = None):
    """Bool per face: it overlaps another face of its chart, looked for in the charts ``test`` (bool per chart);
    see the module docstring. Faces around a corner whose angles add up to more than a turn are all counted.
    ``cancel`` is asked between the passes."""
    out = np.zeros(len(f), bool)
    sub = np.nonzero(test[chart])[0]
    if len(sub) == 0:
        return out
    _, local = np.unique(chart[sub], return_inverse=True)
    k = int(local.max()) + 1
    check(cancel)
    suspect = charts_that_may_overlap(f[sub], local, tri[sub], cancel=cancel)
    check(cancel)
    suspect |= not_discs(f[sub], local, k, cancel)
    sub = sub[suspect[local]]
    check(cancel)
    if len(sub) == 0:
        return out
    t, fs, cs = tri[sub], f[sub], chart[sub]
    nv = int(f.max()) + 1
    keys, inv = unique_keys(cs[:, None] * nv + fs, (int(cs.max()) + 1) * nv)
    inv = inv.reshape(-1, 3)
    turn = np.bincount(inv.reshape(-1), weights=_corner_turns(t).reshape(-1), minlength=len(keys))
    out[sub[(turn[inv] > 2 * np.pi + 1e-6).any(1)]] = True
    # one fan per corner: its faces less its inner edges (edges of two of the chart's faces) at most one
    e_corner = np.stack([inv, inv[:, [1, 2, 0]]], -1).reshape(-1, 2)
    e_corner.sort(1)
    ek, ecount = np.unique(e_corner[:, 0] * len(keys) + e_corner[:, 1], return_counts=True)
    inner = ek[ecount == 2]
    fans = np.bincount(inv.reshape(-1), minlength=len(keys)) \
        - np.bincount(np.r_[inner // len(keys), inner % len(keys)], minlength=len(keys))
    good = (fans <= 1) & (turn <= 2 * np.pi + 1e-6) & (np.bincount(ek[ecount > 2] // len(keys), minlength=len(keys))
                                                         + np.bincount(ek[ecount > 2] % len(keys),
                                                                       minlength=len(keys)) == 0)
    check(cancel)
    pa, pb = box_pairs(t.min(1), t.max(1), cs)
    check(cancel)
    eq = fs[pa][:, :, None] == fs[pb][:, None, :]
    shared = eq.sum((1, 2))
    apart = np.zeros(len(pa), bool)
    edge = shared == 2
    apart[edge] = _opposite_sides(t[pa[edge]], t[pb[edge]], eq[edge])
    one = np.nonzero(shared == 1)[0]
    if len(one):
        ia = np.argmax(eq[one].any(2), axis=1)               # A's corner on the shared vertex
        apart[one] = good[inv[pa[one], ia]]
    pa, pb = pa[~apart], pb[~apart]
    check(cancel)
    if len(pa):
        hit = _meet(t[pa], t[pb])
        out[sub[pa[hit]]] = True
        out[sub[pb[hit]]] = True
    return out


def _opposite_sides(A, B, eq):
    """Bool per pair of triangles [N,3,2] sharing an edge (``eq`` [N,3,3]: corner i of A is corner j of B): their
    third corners lie strictly on opposite sides of it, so they cannot overlap."""
    rows = np.arange(len(A))
    ia = np.argmin(eq.any(2), axis=1)                     # A's corner off the shared edge
    ib = np.argmin(eq.any(1), axis=1)
    p, q = A[rows, (ia + 1) % 3], A[rows, (ia + 2) % 3]
    d = q - p

    def side(r):
        return d[:, 0] * (r[:, 1] - p[:, 1]) - d[:, 1] * (r[:, 0] - p[:, 0])

    return side(A[rows, ia]) * side(B[rows, ib]) < 0


def _meet(A, B):
    """Bool per pair of triangles [N,3,2]: their interiors meet (no edge normal of either separates them; the
    projections are written alike for both, so a shared corner projects to the same number and only touches)."""
    size = np.maximum(np.ptp(A, axis=1).max(1), np.ptp(B, axis=1).max(1))
    apart = np.zeros(len(A), bool)
    for X in (A, B):
        for e in range(3):
            d = X[:, (e + 1) % 3] - X[:, e]
            nx, ny = -d[:, 1:2], d[:, 0:1]
            ka, kb = A[..., 0] * nx + A[..., 1] * ny, B[..., 0] * nx + B[..., 1] * ny
            slack = 1e-9 * size * np.hypot(nx[:, 0], ny[:, 0])
            apart |= np.maximum(kb.min(1) - ka.max(1), ka.min(1) - kb.max(1)) >= -slack
    return ~apart
