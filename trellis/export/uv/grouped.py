"""The grouped chart layout ("grouped" in ``unwrap_uv``): charts of faces facing one way, projected flat, packed.

Time grows with the faces (sorts and sparse products, no per-face Python), so it needs no budget and no kill:

* Each face is classed by the nearest of ``DIRECTIONS`` to its normal averaged over ``SMOOTH_RINGS`` rings of
  neighbours (surface noise does not shatter the classes), unless its own normal leans less than ``MIN_LEAN`` toward
  that direction (then by its own normal's nearest). Edge-connected faces of one class form a chart.
* Charts of fewer than ``SMALL_CHART_FACES`` faces join a neighbouring chart whose direction every one of their faces
  leans toward by at least ``MIN_LEAN`` (the neighbour sharing most edges first), over ``MERGE_ROUNDS`` rounds.
* Each chart is projected orthographically along its direction in a right-handed frame: every face leans toward it,
  so every face keeps its winding and its area (times its lean >= ``MIN_LEAN``), none folds over.
* A chart whose projection still runs over itself (a surface winding around its direction) is cut in two across
  its longer side, up to ``SPLIT_ROUNDS`` times; what still overlaps then becomes charts of one face.
* Charts filling little of their box, or very large, are halved (``BOX_FILL``); then packed by ``pack_turned`` (turned to their smallest box, shelf-packed, vectorised).
"""
from __future__ import annotations

import time
from typing import Callable, Optional

import numpy as np

from ...core.callbacks import check
from ..arrays import to_numpy
from ..mesh_graph import components, face_adjacency_pairs
from ..options import DEFAULT_TEXTURE_SIZE
from .chart_mesh import unique_keys
from .overlap import box_pairs, charts_that_may_overlap, signed_area
from .pack_turned import chart_boxes, pack_turned

__all__ = ["DIRECTIONS", "SMOOTH_RINGS", "MIN_LEAN", "SMALL_CHART_FACES", "MERGE_ROUNDS", "SPLIT_ROUNDS", "BOX_FILL",
           "MAX_AREA_SHARE", "HALVE_ROUNDS", "HALVE_MIN_FACES", "halve_loose_charts",
           "classify_faces", "merge_small_charts", "project_charts", "split_overlapping", "grouped_layout"]

Progress = Optional[Callable[[int, int], None]]

# The chart directions: the 6 axes and the 8 cube diagonals (a face is never more than ~35 degrees from one).
_DIAG = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], np.float64) / np.sqrt(3.0)
DIRECTIONS = np.concatenate([np.eye(3), -np.eye(3), _DIAG])
SMOOTH_RINGS = 8            # rings of neighbours averaged into the normal that classes a face
MIN_LEAN = 0.3              # cosine between a face's own normal and its chart's direction, at least
SMALL_CHART_FACES = 64      # charts below this many faces look for a neighbour to join
MERGE_ROUNDS = 8
SPLIT_ROUNDS = 10
# Before packing, a chart filling less than BOX_FILL of its smallest box, or holding more than MAX_AREA_SHARE of the
# flat area, is halved across its longer side (up to HALVE_ROUNDS times; charts of at least HALVE_MIN_FACES):
# shelves of boxes waste what a ragged or very large chart leaves empty.
BOX_FILL = 0.6
MAX_AREA_SHARE = 0.02
HALVE_ROUNDS = 4
HALVE_MIN_FACES = 16


def _frames(d):
    """Right-handed in-plane axes (e1, e2) [K,3] each for unit directions ``d`` [K,3]: e1 x e2 = d."""
    helper = np.where(np.abs(d[:, :1]) < 0.9, np.array([[1.0, 0, 0]]), np.array([[0, 1.0, 0]]))
    e1 = np.cross(helper, d)
    e1 /= np.linalg.norm(e1, axis=1, keepdims=True)
    return e1, np.cross(d, e1)


def _smoothed(n, pairs, rings):
    """Area-weighted normals ``n`` [F,3] summed over ``rings`` rings of edge neighbours, unit length."""
    from scipy.sparse import coo_matrix
    out = n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-30)
    if rings <= 0 or len(pairs) == 0:
        return out
    nf = len(n)
    adj = coo_matrix((np.ones(2 * len(pairs)), (np.r_[pairs[:, 0], pairs[:, 1]], np.r_[pairs[:, 1], pairs[:, 0]])),
                     shape=(nf, nf)).tocsr()
    for _ in range(rings):
        out = out + adj @ out
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-30)
    return out


def classify_faces(unit_n, smooth_n, directions=DIRECTIONS, min_lean=MIN_LEAN):
    """(class per face [F], lean [F,K] of each face's own normal toward each direction): see the module
    docstring."""
    lean = unit_n @ directions.T
    cls = np.argmax(smooth_n @ directions.T, axis=1)
    own = np.argmax(lean, axis=1)
    ok = lean[np.arange(len(cls)), cls] >= min_lean
    return np.where(ok, cls, own), lean


def _charts_of(cls, pairs, nf):
    same = cls[pairs[:, 0]] == cls[pairs[:, 1]]
    return components(nf, pairs[same, 0], pairs[same, 1])[1]


def merge_small_charts(chart, cls, lean, pairs, min_faces=SMALL_CHART_FACES, rounds=MERGE_ROUNDS,
                       min_lean=MIN_LEAN):
    """(chart [F], class [F]) after small charts joined neighbours they all lean toward (module docstring). A chart
    that another joins this round does not move itself, so every face keeps leaning toward its chart's direction."""
    for _ in range(rounds):
        k = int(chart.max()) + 1
        size = np.bincount(chart, minlength=k)
        ccls = np.zeros(k, np.int64)
        ccls[chart] = cls
        small = size < min_faces
        if not small.any():
            break
        # the least lean of each chart's faces toward every direction
        worst = np.full((k, lean.shape[1]), np.inf)
        np.minimum.at(worst, chart, lean)
        a, b = chart[pairs[:, 0]], chart[pairs[:, 1]]
        cross = a != b
        src, dst = np.r_[a[cross], b[cross]], np.r_[b[cross], a[cross]]
        ok = small[src] & (worst[src, ccls[dst]] >= min_lean) & ((size[dst] > size[src])
                                                                   | ((size[dst] == size[src]) & (dst > src)))
        if not ok.any():
            break
        key, cnt = np.unique(src[ok] * k + dst[ok], return_counts=True)
        s, d = key // k, key % k
        order = np.lexsort((-size[d], -cnt, s))          # per source: most shared edges, then the larger
        first = np.r_[True, s[order][1:] != s[order][:-1]]
        s, d = s[order][first], d[order][first]
        target = np.arange(k)
        moving = np.zeros(k, bool)
        moving[s] = True
        stay = ~moving[d]                               # a target that moves itself this round is left for the next
        target[s[stay]] = d[stay]
        chart = target[chart]
        cls = ccls[chart]
        _, chart = np.unique(chart, return_inverse=True)
    return chart, cls


def project_charts(v, f, chart, direction):
    """Corner coordinates [F,3,2] of each face projected along its chart's unit ``direction`` [K,3]
    (right-handed frames: faces leaning toward it keep their winding)."""
    e1, e2 = _frames(direction)
    p = v[f]                                              # [F,3,3]
    a, b = e1[chart][:, None, :], e2[chart][:, None, :]
    return np.stack([(p * a).sum(-1), (p * b).sum(-1)], -1)


def _mean_directions(n_area, chart, cls, k, unit_n, min_lean):
    """Per chart: its area-weighted mean normal where all its faces lean toward that by ``min_lean``, else its class
    direction (a chart projected square to its mean normal shrinks least)."""
    mean = np.zeros((k, 3))
    np.add.at(mean, chart, n_area)
    mean /= np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-30)
    worst = np.full(k, np.inf)
    np.minimum.at(worst, chart, (unit_n * mean[chart]).sum(1))
    ccls = np.zeros(k, np.int64)
    ccls[chart] = cls
    return np.where((worst >= min_lean)[:, None], mean, DIRECTIONS[ccls])


def _self_overlaps(f, chart, tri, test):
    """Bool per face: it overlaps another face of its chart, looked for in the charts ``test`` (bool per chart) that
    ``charts_that_may_overlap`` does not clear. Faces sharing an edge with their third corners on its two sides do
    not overlap; faces
    around a vertex whose angles add up to more than a turn do, and are all counted; other pairs whose boxes meet
    get the separating-axis test (a shared corner touches, it does not overlap)."""
    out = np.zeros(len(f), bool)
    sub = np.nonzero(test[chart])[0]
    if len(sub) == 0:
        return out
    _, local = np.unique(chart[sub], return_inverse=True)
    suspect = charts_that_may_overlap(f[sub], local, tri[sub])
    sub = sub[suspect[local]]
    if len(sub) == 0:
        return out
    t, fs, cs = tri[sub], f[sub], chart[sub]
    nxt, prv = t[:, [1, 2, 0]] - t, t[:, [2, 0, 1]] - t
    angle = np.abs(np.arctan2(nxt[..., 0] * prv[..., 1] - nxt[..., 1] * prv[..., 0],
                              nxt[..., 0] * prv[..., 0] + nxt[..., 1] * prv[..., 1]))
    keys, inv = unique_keys(cs[:, None] * (int(f.max()) + 1) + fs, (int(cs.max()) + 1) * (int(f.max()) + 1))
    turn = np.bincount(inv, weights=angle.reshape(-1), minlength=len(keys))
    out[sub[(turn[inv.reshape(-1, 3)] > 2 * np.pi + 1e-6).any(1)]] = True
    pa, pb = box_pairs(t.min(1), t.max(1), cs)
    eq = fs[pa][:, :, None] == fs[pb][:, None, :]
    edge = eq.sum((1, 2)) == 2
    apart = np.zeros(len(pa), bool)
    apart[edge] = _opposite_sides(t[pa[edge]], t[pb[edge]], eq[edge])
    pa, pb = pa[~apart], pb[~apart]
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
    """Bool per pair of triangles [N,3,2]: their interiors meet (no edge normal of either separates them)."""
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


def _halves(chart, tri, sel, k):
    """Bool per face of ``sel``: in the upper half of its chart along the chart's longer side."""
    c = tri[sel].mean(1)
    cs = chart[sel]
    lo = np.full((k, 2), np.inf)
    hi = np.full((k, 2), -np.inf)
    np.minimum.at(lo, cs, c)
    np.maximum.at(hi, cs, c)
    x = c[np.arange(len(sel)), np.argmax(hi - lo, axis=1)[cs]]
    order = np.lexsort((x, cs))                        # per chart by the coordinate: the lower half is one side
    start = np.searchsorted(cs[order], cs[order], side="left")
    count = np.bincount(cs, minlength=k)[cs[order]]
    upper = np.zeros(len(sel), bool)
    upper[order] = (np.arange(len(sel)) - start) >= count // 2
    return upper


def split_overlapping(f, chart, tri, rounds=SPLIT_ROUNDS, pairs=None, cancel=None):
    """(chart [F], number of rounds used): in charts whose flat triangles ``tri`` overlap (``chart_self_overlaps``)
    the overlapping faces are cut out into charts of their own (a fold of the surface: its sheets part), or where
    they are most of their chart, it is cut at the median of its longer side; connected parts become charts, and
    only those holding a face found overlapping are tested again, up to ``rounds`` times; faces still overlapping after that become
    charts of one face."""
    nf = len(f)
    pairs = face_adjacency_pairs(f) if pairs is None else pairs
    test = np.ones(int(chart.max()) + 1, bool)
    for used in range(rounds + 1):
        check(cancel)
        bad = _self_overlaps(f, chart, tri, test)
        if not bad.any():
            return chart, used
        k = int(chart.max()) + 1
        if used == rounds:
            chart = np.where(bad, k + np.cumsum(bad) - 1, chart)
            return np.unique(chart, return_inverse=True)[1], used
        size = np.bincount(chart, minlength=k)
        share = np.bincount(chart[bad], minlength=k) / np.maximum(size, 1)
        side = bad & (share[chart] < 0.5)
        halve = np.nonzero((share >= 0.5)[chart])[0]
        side[halve] = _halves(chart, tri, halve, k)
        key = chart * 2 + side
        keep = key[pairs[:, 0]] == key[pairs[:, 1]]
        new = components(nf, pairs[keep, 0], pairs[keep, 1])[1]
        test = np.zeros(int(new.max()) + 1, bool)
        test[new[bad]] = True          # a face that overlapped nothing overlaps nothing in a part of its chart
        chart = new
    return chart, rounds


def halve_loose_charts(chart, tri, pairs, rounds=HALVE_ROUNDS):
    """Chart [F] after the halving of loose or very large charts (see ``BOX_FILL``)."""
    nf = len(chart)
    area = np.abs(signed_area(tri))
    total = max(float(area.sum()), 1e-300)
    for _ in range(rounds):
        k = int(chart.max()) + 1
        _, _, ext = chart_boxes(tri, chart, k)
        own = np.bincount(chart, weights=area, minlength=k)
        loose = ((own < BOX_FILL * ext[:, 0] * ext[:, 1]) | (own > MAX_AREA_SHARE * total)) \
            & (np.bincount(chart, minlength=k) >= HALVE_MIN_FACES)
        if not loose.any():
            break
        sel = np.nonzero(loose[chart])[0]
        side = np.zeros(nf, bool)
        side[sel] = _halves(chart, tri, sel, k)
        key = chart * 2 + side
        keep = key[pairs[:, 0]] == key[pairs[:, 1]]
        chart = components(nf, pairs[keep, 0], pairs[keep, 1])[1]
    return chart


def grouped_layout(vertices, faces, texture_size: int = DEFAULT_TEXTURE_SIZE, padding: int = 2,
                   progress: Progress = None, cancel=None, info: Optional[dict] = None):
    """The grouped charts (module docstring). Same outputs as ``unwrap_uv``. A dict ``info`` receives "charts",
    "split_rounds" and "phases" (seconds per step: "charts", "project", "split", "pack")."""
    info = {} if info is None else info
    phases = info.setdefault("phases", {})
    mark = [time.perf_counter()]

    def lap(name, done):
        now = time.perf_counter()
        phases[name] = round(now - mark[0], 4)
        mark[0] = now
        check(cancel)
        if progress is not None:
            progress(done, 100)

    v, f = to_numpy(vertices, faces)
    nf = len(f)
    if nf == 0:
        info.update(charts=0, split_rounds=0)
        return v.astype(np.float32), f, np.zeros((len(v), 2), np.float32), np.arange(len(v), dtype=np.int64)
    n_area = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    unit_n = n_area / np.maximum(np.linalg.norm(n_area, axis=1, keepdims=True), 1e-30)
    pairs = face_adjacency_pairs(f)
    check(cancel)
    cls, lean = classify_faces(unit_n, _smoothed(n_area, pairs, SMOOTH_RINGS))
    chart, cls = merge_small_charts(_charts_of(cls, pairs, nf), cls, lean, pairs)
    lap("charts", 30)
    k = int(chart.max()) + 1
    direction = _mean_directions(n_area, chart, cls, k, unit_n, MIN_LEAN)
    tri = project_charts(v, f, chart, direction)
    lap("project", 40)
    chart, rounds = split_overlapping(f, chart, tri, pairs=pairs, cancel=cancel)
    chart = halve_loose_charts(chart, tri, pairs)
    lap("split", 60)
    corner_uv = pack_turned(tri, chart, int(texture_size), int(padding), cancel=cancel)
    lap("pack", 95)
    # one output vertex per (chart, input vertex): duplicates along seams, shared inside a chart
    key = chart.astype(np.int64)[:, None] * len(v) + f
    _, first, inverse = unique_keys(key, (int(chart.max()) + 1) * len(v), return_index=True)
    vmapping = f.reshape(-1)[first]
    uv = corner_uv.reshape(-1, 2)[first].astype(np.float32)
    info.update(charts=int(chart.max()) + 1, split_rounds=int(rounds))
    if progress is not None:
        progress(100, 100)
    return v[vmapping].astype(np.float32), inverse.reshape(-1, 3).astype(np.int64), uv, vmapping.astype(np.int64)
