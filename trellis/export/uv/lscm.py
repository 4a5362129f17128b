"""Charts flattened by least-squares conformal maps (LSCM): ``flatten_charts`` gives each corner its 2-D
coordinates in its chart (world units, ready to pack).

All charts are solved in one sparse complex least-squares system (two vertices of each chart pinned), and
each chart is scaled so that its 2-D area equals its 3-D area (even texel density). LSCM keeps orientation, so
a face it maps folded is a 3-D fold-over (decimation leaves faces turned against their neighbours): such faces
are cut out of their chart and the chart re-solved (``MAX_ROUNDS`` times at most); a chart that runs over
itself has its overlapping faces cut out too (``OVERLAP_ROUNDS``); each face cut out alone is put back into a
neighbouring chart, unfolded across a shared edge, where it overlaps nothing (``attach_single_faces``).
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ...core.callbacks import CancelCheck, check
from . import segment
from .chart_mesh import ChartMesh, dense, label_components, members, unique_keys
from .overlap import chart_self_overlaps, signed_area, triangle_overlaps
from ..rows import row_norm, row_sum

__all__ = ["MAX_ROUNDS", "OVERLAP_ROUNDS", "lscm", "flatten_charts", "single_face_charts", "attach_single_faces"]

MAX_ROUNDS = 3              # rounds of cutting folded faces out and solving again
# Rounds of cutting out faces that lie over their own chart (exact test, so the packed atlas has none and the
# UV layout packs once); after them such faces are cut out one by one.
OVERLAP_ROUNDS = 2


def lscm(v, f, chart):
    """Corner coordinates [F,3,2] of every chart by LSCM, one sparse solve for all charts, each chart
    scaled to its 3-D area; and each face's signed 2-D area before that scaling."""
    nf = len(f)
    key = chart.astype(np.int64)[:, None] * len(v) + f                  # one unknown per (chart, vertex)
    uniq, corner = unique_keys(key, (int(chart.max(initial=-1)) + 1) * len(v))
    corner = corner.reshape(nf, 3)
    nv = len(uniq)
    vert = uniq % len(v)
    vchart = uniq // len(v)
    # each triangle in its own isometric frame
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    e0 = b - a
    n = np.cross(e0, c - a)
    area2 = row_norm(n)
    e0 = e0 / np.maximum(row_norm(e0)[:, None], 1e-30)
    e1 = np.cross(n / np.maximum(area2[:, None], 1e-30), e0)
    w = np.zeros((nf, 3), dtype=np.complex128)
    w[:, 1] = row_sum((b - a) * e0) + 1j * row_sum((b - a) * e1)
    w[:, 2] = row_sum((c - a) * e0) + 1j * row_sum((c - a) * e1)
    scale = np.maximum(area2, np.median(area2) * 1e-6 + 1e-30)
    W = np.stack([w[:, 2] - w[:, 1], w[:, 0] - w[:, 2], w[:, 1] - w[:, 0]], 1) / np.sqrt(scale)[:, None]
    # pins: per chart the two vertices farthest apart along the chart's longest box side
    p = v[vert]
    nchart = int(chart.max()) + 1
    lo = np.full((nchart, 3), np.inf)
    hi = np.full((nchart, 3), -np.inf)
    np.minimum.at(lo, vchart, p)
    np.maximum.at(hi, vchart, p)
    axis = np.argmax(hi - lo, 1)[vchart]
    coord = p[np.arange(nv), axis]
    order = np.lexsort((coord, vchart))
    starts = np.searchsorted(vchart[order], np.arange(nchart))
    ends = np.searchsorted(vchart[order], np.arange(nchart), side="right")
    pin0, pin1 = order[starts], order[ends - 1]
    pinned = np.zeros(nv, dtype=bool)
    pinned[pin0] = True
    pinned[pin1] = True
    target = np.zeros((nv, 2))
    span = row_norm(p[pin1] - p[pin0])
    target[pin1, 0] = np.maximum(span, 1e-9)
    # complex least squares, one unknown U = u + i v per (chart, vertex): |sum_j W_tj U_j|^2 is the real
    # system's Re^2 + Im^2 (rows Re, Im per triangle over u and v), solved in half the unknowns
    rows = np.repeat(np.arange(nf), 3)
    A = sp.csr_matrix((W.reshape(-1), (rows, corner.reshape(-1))), shape=(nf, nv))
    free = ~pinned
    x_p = (target[:, 0] + 1j * target[:, 1])[pinned]
    A_f, A_p = A[:, free], A[:, pinned]
    rhs = -(A_p @ x_p)
    from scipy.sparse.linalg import splu
    A_h = A_f.conj().T.tocsr()
    N = (A_h @ A_f).tocsr()
    # a vertex that only zero-area faces touch has no equation: a whisker of regularisation keeps
    # the system non-singular (such a vertex lands near its chart's first pin)
    N = (N + sp.identity(N.shape[0], format="csr") * (1e-10 * float(N.diagonal().real.mean() or 1.0))).tocsc()
    x = np.zeros(nv, np.complex128)
    x[pinned] = x_p
    # minimum degree on N + N^H's pattern, rows ordered as the columns and diagonal pivots (N is Hermitian
    # positive definite): faster than a general LU's row pivoting (docs/benchmarks/export.md#charts)
    x[free] = splu(N, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                   options={"SymmetricMode": True}).solve(A_h @ rhs)
    uv = np.stack([x.real, x.imag], 1)
    tri = uv[corner]                                                    # [F,3,2]
    signed = 0.5 * ((tri[:, 1, 0] - tri[:, 0, 0]) * (tri[:, 2, 1] - tri[:, 0, 1])
                    - (tri[:, 1, 1] - tri[:, 0, 1]) * (tri[:, 2, 0] - tri[:, 0, 0]))
    a2 = np.bincount(chart, weights=np.abs(signed), minlength=nchart)
    a3 = np.bincount(chart, weights=0.5 * area2, minlength=nchart)
    s = np.sqrt(a3 / np.maximum(a2, 1e-30))
    s = np.where(np.isfinite(s) & (a2 > 0), s, 1.0)
    tri = tri * s[chart][:, None, None]
    return tri, signed


def _detach(m: ChartMesh, v, f, chart, tri, signed, faces_out, single: bool = False):
    """Cut ``faces_out`` (bool per face) out of their charts (edge-connected groups of them become
    charts of their own; ``single``: each face alone) and re-solve the charts they left."""
    redo = np.isin(chart, np.unique(chart[faces_out])) | faces_out
    chart = chart.copy()
    chart[faces_out] = int(chart.max()) + 1 + (np.arange(int(np.sum(faces_out))) if single else 0)
    chart = label_components(m, chart)
    tri, signed = tri.copy(), signed.copy()
    sub = np.unique(chart[redo], return_inverse=True)[1]
    tri[redo], signed[redo] = lscm(v, f[redo], sub)
    return chart, tri, signed


def flatten_charts(vertices, faces, chart: np.ndarray = None, mesh: ChartMesh = None, tri: np.ndarray = None,
                   detach: np.ndarray = None, cancel: CancelCheck = None):
    """(chart id per face, corner coordinates [F,3,2] in world units, one flat chart each).

    A face that LSCM maps folded (3-D fold-overs left by decimation: a face turned against its
    neighbours) is cut out of its chart and the rest of that chart re-solved (``MAX_ROUNDS`` times
    at most); the faces cut out are then put back into a neighbouring chart where they fit
    (``attach_single_faces``). ``tri`` and ``detach`` (bool per face): an earlier result and faces
    to cut out of it first (faces found overlapping in the atlas); only their charts are re-solved. ``cancel`` is
    checked between the solves."""
    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces, np.int64)
    m = mesh if mesh is not None else ChartMesh(v, f)
    if chart is None:
        chart = segment.geometric_charts(v, f, mesh=m, cancel=cancel)
    check(cancel)
    chart = np.asarray(chart, np.int64).copy()
    real = m.area > 1e-12 * max(float(m.area.max(initial=0)), 1e-30)
    if tri is None:
        tri, signed = lscm(v, f, chart)
    else:
        tri = np.asarray(tri, np.float64)
        signed = signed_area(tri)
    if detach is not None and np.any(detach):
        chart, tri, signed = _detach(m, v, f, chart, tri, signed, np.asarray(detach, bool))
    for _ in range(MAX_ROUNDS):
        check(cancel)
        folded = real & (signed <= 0)
        if not folded.any():
            break
        chart, tri, signed = _detach(m, v, f, chart, tri, signed, folded)
    for r in range(OVERLAP_ROUNDS + 1):
        check(cancel)
        over = chart_self_overlaps(f, chart, tri)
        if not over.any():
            break
        # after OVERLAP_ROUNDS the faces still over their own chart (a group cut out that, re-solved, lies
        # over itself again) are cut out one by one (a face alone cannot) and put back below where they fit,
        # instead of ending as charts of one face each
        chart, tri, signed = _detach(m, v, f, chart, tri, signed, over, single=r == OVERLAP_ROUNDS)
    check(cancel)
    folded = real & (signed <= 0)
    if folded.any():    # still folded after the rounds: those charts are flattened face by face
        bad = np.isin(chart, np.unique(chart[folded]))
        chart[bad] = int(chart.max()) + 1 + np.arange(int(bad.sum()))
        tri[bad] = lscm(v, f[bad], np.arange(int(bad.sum())))[0]
    chart = dense(chart)
    chart, tri = attach_single_faces(m, chart, tri)
    return chart, tri


def single_face_charts(vertices, faces, chart, tri, which):
    """Faces ``which`` (bool) made charts of their own, each flattened as it is in 3-D."""
    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces, np.int64)
    chart, tri = chart.copy(), tri.copy()
    n = int(np.sum(which))
    chart[which] = int(chart.max()) + 1 + np.arange(n)
    tri[which] = lscm(v, f[which], np.arange(n))[0]
    return dense(chart), tri


def attach_single_faces(m: ChartMesh, chart: np.ndarray, tri: np.ndarray):
    """Put each one-face chart back into a neighbouring chart: unfolded across a shared edge (its
    shape as in 3-D, at that chart's scale, on the far side of the edge), where it overlaps none of
    that chart's triangles. A single face that fits nowhere stays a chart of its own."""
    sizes = np.bincount(chart)
    single = np.nonzero(sizes[chart] == 1)[0]
    if len(single) == 0:
        return chart, tri
    f, v = m.f, m.v
    chart, tri = chart.copy(), tri.copy()
    owned = members(chart)
    p = m.pairs
    nb = {}
    both = np.r_[p, p[:, ::-1]]
    for a, b in both[sizes[chart[both[:, 0]]] == 1].tolist():
        nb.setdefault(a, []).append(b)
    for s in single:
        s = int(s)
        for n in nb.get(s, []):
            c = int(chart[n])
            if c == chart[s] or len(owned.get(c, ())) == 0:
                continue
            shared = [k for k in range(3) if f[s, k] in f[n]]
            if len(shared) != 2:
                continue
            # corner indices: the shared edge's two corners in s and in n, and the third of each
            i0, i1 = shared
            i2 = 3 - i0 - i1
            j0 = int(np.nonzero(f[n] == f[s, i0])[0][0])
            j1 = int(np.nonzero(f[n] == f[s, i1])[0][0])
            j2 = 3 - j0 - j1
            ua, ub, un = tri[n, j0], tri[n, j1], tri[n, j2]
            e3 = np.linalg.norm(v[f[s, i1]] - v[f[s, i0]])
            e2 = np.linalg.norm(ub - ua)
            if e3 <= 0 or e2 <= 0:
                continue
            k = e2 / e3                                     # that chart's scale at this edge
            # the third corner of s in the frame of the edge, from its 3-D shape
            d = v[f[s, i2]] - v[f[s, i0]]
            e = (v[f[s, i1]] - v[f[s, i0]]) / e3
            along = float(d @ e)
            across = float(np.linalg.norm(d - along * e))
            ex = (ub - ua) / e2
            ey = np.array([-ex[1], ex[0]])
            side = np.sign((un - ua) @ ey) or 1.0
            w = ua + k * (along * ex - side * across * ey)  # on the far side from n's third corner
            idx = owned[c]
            has = f[idx] == f[s, i2]
            if has.any():       # the third corner is in that chart already: it must be used as it is
                r, col = np.argwhere(has)[0]
                w = tri[idx[r], col]
            new = np.empty((3, 2))
            new[i0], new[i1], new[i2] = ua, ub, w
            area = 0.5 * ((new[1, 0] - new[0, 0]) * (new[2, 1] - new[0, 1])
                          - (new[1, 1] - new[0, 1]) * (new[2, 0] - new[0, 0]))
            if area <= 0:                                   # would be mirrored in the chart
                continue
            scale = float(np.abs(tri[idx]).max()) + 1e-30
            if triangle_overlaps(new, tri[idx], scale):
                continue
            tri[s] = new
            owned[c] = np.r_[idx, s]
            owned.pop(int(chart[s]), None)
            chart[s] = c
            break
    return dense(chart), tri
