"""Chart borders made compact, short and straight: the segmentation's last steps (``segment.geometric_charts``).

The 2-means halves have jagged, concave borders, and the gaps between such charts are texture lost in the
atlas. ``diffuse_borders`` smooths them at the scale of a few rings (each chart's indicator diffused by a
random walk over the faces, every face to the strongest chart), ``shorten_borders`` moves border faces to the
chart they share more edge length with, and ``straighten_borders`` cuts off teeth of several faces around one
border vertex that face-by-face moves cannot (docs/benchmarks/export.md#charts).
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .chart_mesh import ChartMesh, mesh_edges
from ..rows import row_any, row_norm

__all__ = ["DIFFUSE_TAIL", "shared_edge_lengths", "diffuse_borders", "shorten_borders",
           "straighten_borders"]

# The diffusion runs by its Chebyshev series (``_chebyshev_walk``: the lazy walk's labels in ~30 products instead of
# ``steps``), cut where its remaining coefficients add up to less than this.
DIFFUSE_TAIL = 1e-6


def shared_edge_lengths(m: ChartMesh) -> np.ndarray:
    """Length of the edge each face pair of ``m.pairs`` shares."""
    if m.edge_len is None:
        fa, fb = m.f[m.pairs[:, 0]], m.f[m.pairs[:, 1]]
        shared = row_any(fa[:, :, None] == fb[:, None, :], 2)     # corners of a that b has too
        first = np.argmax(shared, 1)
        second = 2 - np.argmax(shared[:, ::-1], 1)
        rows = np.arange(len(fa))
        m.edge_len = row_norm(m.v[fa[rows, first]] - m.v[fa[rows, second]])
    return m.edge_len


def _chart_colours(label: np.ndarray, pairs: np.ndarray):
    """A colour per chart such that a chart, its neighbours and their neighbours all differ (greedy
    colouring of the chart graph squared), and the chart adjacency (sparse, K x K)."""
    k = int(label.max()) + 1
    la, lb = label[pairs[:, 0]], label[pairs[:, 1]]
    d = la != lb
    adj = sp.csr_matrix((np.ones(2 * int(d.sum())), (np.r_[la[d], lb[d]], np.r_[lb[d], la[d]])), shape=(k, k))
    adj.data[:] = 1.0
    two = (adj + adj @ adj).tolil()
    two.setdiag(0)
    two = two.tocsr()
    two.eliminate_zeros()
    colour = np.full(k, -1)
    for c in np.argsort(-np.diff(two.indptr), kind="stable").tolist():
        taken = set(colour[two.indices[two.indptr[c]:two.indptr[c + 1]]].tolist())
        j = 0
        while j in taken:
            j += 1
        colour[c] = j
    return colour, adj


def diffuse_borders(m: ChartMesh, label: np.ndarray, steps: int) -> np.ndarray:
    """Each chart's indicator diffused ``steps`` steps of a lazy random walk over the face graph (edge
    weight: the shared edge's length); each face then goes to the chart whose indicator is largest
    there. Borders move towards shorter, smoother curves at the scale of ~sqrt(steps) rings, charts
    smaller than that shrink away. Charts are diffused by colour (``_chart_colours``): a face near
    the border of its chart sees at most one chart of each colour among that chart and its neighbours,
    so ~15-25 columns instead of one per chart; a face whose winning colour is none of those keeps its
    chart."""
    p = m.pairs
    nf = len(label)
    w = shared_edge_lengths(m)
    deg = np.bincount(p[:, 0], w, nf) + np.bincount(p[:, 1], w, nf)
    colour, adj = _chart_colours(label, p)
    ncol = int(colour.max()) + 1
    ind = np.zeros((nf, ncol), np.float32)
    ind[np.arange(nf), colour[label]] = 1.0
    ind = _chebyshev_walk(p, w, deg, nf, ind, steps)
    win = np.argmax(ind, 1)
    k = len(colour)
    a = adj.tocoo()
    chart_of = np.full((k, ncol), -1)
    chart_of[a.row, colour[a.col]] = a.col
    chart_of[np.arange(k), colour] = np.arange(k)
    new = chart_of[label, win]
    return np.where(new >= 0, new, label)


def _chebyshev_walk(p, w, deg, nf, x, steps):
    """``((I + P) / 2)^steps x`` for the walk P (row i: shared edge length / the face's total; a face
    with no neighbour stays) by its Chebyshev series in P: ((1 + y) / 2)^n = sum_k c_k T_k(y) with
    c_0 = C(2n, n) / 4^n, c_k = 2 C(2n, n + k) / 4^n, cut where the remaining coefficients add up to
    less than ``DIFFUSE_TAIL`` (|T_k| <= 1 on P's spectrum, [-1, 1]): ~30 products with P (3 entries
    a row) instead of ``steps`` with the lazy walk (4); summed by Clenshaw's recurrence."""
    import math
    n = int(steps)
    c = [math.comb(2 * n, n) / 4 ** n] + [2 * math.comb(2 * n, n + k) / 4 ** n for k in range(1, n + 1)]
    tail = np.cumsum(c[::-1])[::-1]                     # tail[k] = sum of c[k:]
    d = next((k for k in range(1, n) if tail[k + 1] < DIFFUSE_TAIL), n)
    inv = 1.0 / np.maximum(deg, 1e-30)
    # 2 P (the recurrence's factor 2 folded in; exact in floating point)
    P2 = sp.csr_matrix((np.r_[2 * w * inv[p[:, 0]], 2 * w * inv[p[:, 1]], 2.0 * (deg <= 0)],
                        (np.r_[p[:, 0], p[:, 1], np.arange(nf)], np.r_[p[:, 1], p[:, 0], np.arange(nf)])),
                       shape=(nf, nf)).astype(np.float32)
    add_product = _add_product(P2)
    # b_k = c_k x + 2 P b_{k+1} - b_{k+2} from k = d down to 1 (b_{d+1} = b_{d+2} = 0); the sum is
    # c_0 x + P b_1 - b_2
    b1, b2 = np.zeros_like(x), np.zeros_like(x)        # b_{k+1}, b_{k+2}
    for k in range(d, 0, -1):
        np.subtract(x * np.float32(c[k]), b2, out=b2)   # b2 <- c_k x - b_{k+2} + 2 P b_{k+1} = b_k
        add_product(b1, b2)
        b1, b2 = b2, b1
    out = x * np.float32(c[0])
    out -= b2
    b1 *= np.float32(0.5)
    add_product(b1, out)
    return out


def _add_product(A):
    """f(x, y): y += A @ x for C-contiguous float32 x, y [n, k] (scipy's kernel for ``A @ x`` without
    its result allocation; ``A @ x`` where that kernel is not found)."""
    try:
        from scipy.sparse import _sparsetools
        kernel = _sparsetools.csr_matvecs
    except (ImportError, AttributeError):
        kernel = None
    n, m = A.shape

    def add(x, y):
        if kernel is None or not (x.flags.c_contiguous and y.flags.c_contiguous):
            y += A @ x
        else:
            kernel(n, m, x.shape[1], A.indptr, A.indices, A.data, x.ravel(), y.ravel())
    return add


def shorten_borders(m: ChartMesh, label: np.ndarray, sweeps: int) -> np.ndarray:
    """A border face moves to the neighbouring chart it shares more edge length with than with its own
    (the chart border gets shorter); per sweep only faces no neighbour of which gains more move."""
    p = m.pairs
    nf = len(label)
    w = shared_edge_lengths(m)
    a, b, ww = np.r_[p[:, 0], p[:, 1]], np.r_[p[:, 1], p[:, 0]], np.r_[w, w]
    for _ in range(sweeps):
        la, lb = label[a], label[b]
        same = la == lb
        own = np.bincount(a[same], ww[same], nf)
        k = int(label.max()) + 1
        key, inv = np.unique(a[~same].astype(np.int64) * k + lb[~same], return_inverse=True)
        gain = np.bincount(inv, ww[~same]) - own[key // k]
        order = np.lexsort((-gain, key // k))                  # per face: its best other chart first
        first = np.r_[True, (key // k)[order][1:] != (key // k)[order][:-1]]
        face, target, gain = (key // k)[order][first], (key % k)[order][first], gain[order][first]
        ok = gain > 0
        face, target, gain = face[ok], target[ok], gain[ok]
        if len(face) == 0:
            break
        score = np.full(nf, -np.inf)
        score[face] = gain + 1e-9 * face / nf                   # ties broken by face index
        best_nb = np.full(nf, -np.inf)
        np.maximum.at(best_nb, a, score[b])
        move = score[face] > best_nb[face]
        label = label.copy()
        label[face[move]] = target[move]
    return label


def straighten_borders(m: ChartMesh, label: np.ndarray, sweeps: int) -> np.ndarray:
    """Teeth of the chart borders cut off: at an inner vertex where two charts meet (two border edges),
    the faces of one chart around it move to the other when the rim of those faces is shorter than the
    border's two edges there; per sweep only vertices whose gain is the largest within two rings move."""
    f, nv = m.f, len(m.v)
    mesh_edges(m)
    fe, ends, count = m.face_edges, m.edge_ends, m.edge_count
    ne = max(m.n_edges, 1)
    elen = row_norm(m.v[ends[:, 0]] - m.v[ends[:, 1]])
    # inner vertices of a closed fan: every edge at them in two faces, as many faces as edges
    bad = np.zeros(nv, bool)
    bad[ends[count != 2].reshape(-1)] = True
    bad |= np.bincount(f.reshape(-1), minlength=nv) != np.bincount(ends[count > 0].reshape(-1), minlength=nv)
    two = count == 2
    cv = f.reshape(-1)                                       # corner -> vertex, face, opposite edge's length
    cf = np.repeat(np.arange(len(f)), 3)
    ce = fe.reshape(-1)                                      # the edge from the corner to the next one
    opp = elen[fe[:, [1, 2, 0]].reshape(-1)]
    label = np.asarray(label).copy()
    for _ in range(sweeps):
        # an edge of two faces is on a border where their labels a, b differ: 2 (a² + b²) - (a + b)² > 0
        lc = label[cf].astype(np.float64)
        s1 = np.bincount(ce, lc, ne)
        cut = two & (2 * np.bincount(ce, lc * lc, ne) - s1 * s1 > 0.5)
        eb = np.nonzero(cut)[0]
        ev = ends[eb].reshape(-1)                            # border edges' ends, twice each
        nb = np.bincount(ev, minlength=nv)
        cand = (nb == 2) & ~bad
        if not cand.any():
            break
        blen = np.bincount(ev, np.repeat(elen[eb], 2), minlength=nv)
        side = np.full(nv, -1, np.int64)                     # one of the two charts at the vertex
        side[cv] = label[cf]
        sel = cand[cv]
        cvs, cfs = cv[sel], cf[sel]
        rim_all = np.bincount(cvs, opp[sel], minlength=nv)
        mine = label[cfs] == side[cvs]
        rim_a = np.bincount(cvs[mine], opp[sel][mine], minlength=nv)
        # moving the faces of chart ``side`` (rim_a) or of the other one (the rest of the rim)
        gain_a, gain_b = blen - rim_a, blen - (rim_all - rim_a)
        # only where the rim's inner vertices lie inside the chart that gives the faces up (no border
        # edge, not on the mesh's boundary): both charts stay discs, none falls apart
        inner = (nb == 0) & ~bad
        k_at = np.nonzero(sel)[0] % 3                       # the corner's place in its face
        nxt_v, prv_v = f[cfs, (k_at + 1) % 3], f[cfs, (k_at + 2) % 3]
        # each of the face's two other corners: an end of the border at the vertex (the edge to it is
        # on the border) or inside the chart
        ok = (cut[fe[cfs, k_at]] | inner[nxt_v]) & (cut[fe[cfs, (k_at + 2) % 3]] | inner[prv_v])
        gain_a[np.bincount(cvs[mine & ~ok], minlength=nv) > 0] = -np.inf
        gain_b[np.bincount(cvs[~mine & ~ok], minlength=nv) > 0] = -np.inf
        gain = np.where(cand, np.maximum(gain_a, gain_b), -np.inf)
        vv = np.nonzero(gain > 0)[0]
        if len(vv) == 0:
            break
        # moves at least three edges apart (the best gain within two rings): what decides one move (the faces
        # around its rim and its ends) is not changed by another in the same sweep
        score = np.full(nv, -np.inf)
        score[vv] = gain[vv] + 1e-12 * vv / nv                # ties broken by vertex index
        ring = score
        for _ in range(2):                                   # the largest score one ring further
            at = np.nonzero(np.isfinite(ring)[cv])[0]
            faces_at = cf[at]
            fmax = np.full(len(f), -np.inf)
            np.maximum.at(fmax, faces_at, ring[cv[at]])
            ring = ring.copy()
            np.maximum.at(ring, f[faces_at].reshape(-1), np.repeat(fmax[faces_at], 3))
        vv = vv[score[vv] >= ring[vv]]
        go = np.zeros(nv, bool)
        go[vv] = True
        moving_a = gain_a >= gain_b
        c = go[cv]
        fc, vc = cf[c], cv[c]
        from_a = label[fc] == side[vc]
        move = from_a == moving_a[vc]
        # the other chart at each moving vertex: that of its faces that stay
        other = np.full(nv, -1, np.int64)
        other[vc[~move]] = label[fc[~move]]
        label[fc[move]] = other[vc[move]]
    return label
