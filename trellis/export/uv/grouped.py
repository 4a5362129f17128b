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
from typing import Optional

import numpy as np

from ...core.callbacks import StepProgress, check
from ..arrays import to_numpy
from ..mesh_graph import components, face_adjacency_pairs
from ..options import DEFAULT_TEXTURE_SIZE
from .chart_mesh import unique_keys
from .overlap import overlapping_faces, signed_area
from .sheet_test import chart_overlaps
from .pack_skyline import pack_skyline
from .pack_turned import chart_boxes

__all__ = ["DIRECTIONS", "SMOOTH_RINGS", "MIN_LEAN", "SMALL_CHART_FACES", "MERGE_ROUNDS", "BORDER_SWEEPS", "MERGE_LEAN", "SPLIT_ROUNDS", "BOX_FILL",
           "MAX_AREA_SHARE", "HALVE_ROUNDS", "HALVE_MIN_FACES", "GUARD_ROUNDS", "halve_loose_charts",
           "classify_faces", "merge_small_charts", "smooth_borders", "project_charts", "split_overlapping", "grouped_layout"]


# The chart directions: the 6 axes and the 8 cube diagonals (a face is never more than ~35 degrees from one).
_DIAG = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], np.float64) / np.sqrt(3.0)
DIRECTIONS = np.concatenate([np.eye(3), -np.eye(3), _DIAG])
SMOOTH_RINGS = 8            # rings of neighbours averaged into the normal that classes a face
MIN_LEAN = 0.3              # cosine between a face's own normal and its chart's direction, at least
MERGE_LEAN = 0.3            # ... for a face of a small chart joining a neighbour
SMALL_CHART_FACES = 64      # charts below this many faces look for a neighbour to join
MERGE_ROUNDS = 8
BORDER_SWEEPS = 3
SPLIT_ROUNDS = 10
# Before packing, a chart filling less than BOX_FILL of its smallest box, or holding more than MAX_AREA_SHARE of the
# flat area, is halved across its longer side (up to HALVE_ROUNDS times; charts of at least HALVE_MIN_FACES):
# shelves of boxes waste what a ragged or very large chart leaves empty.
BOX_FILL = 0.6
MAX_AREA_SHARE = 0.02
HALVE_ROUNDS = 4
HALVE_MIN_FACES = 16
GUARD_ROUNDS = 2            # packings again after faces found sharing a texel (a gap in the tests before packing)


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


def smooth_borders(chart, cls, lean, pairs, sweeps=BORDER_SWEEPS, min_lean=MIN_LEAN):
    """(chart [F], class [F]) after ``sweeps`` sweeps in which a face with at least two of its edge neighbours in
    one other chart moves there, where it leans toward that chart's direction by ``min_lean`` (ragged borders fill
    their boxes badly); parts a move cut off become charts of their own."""
    nf = len(chart)
    for _ in range(sweeps):
        k = int(chart.max()) + 1
        ccls = np.zeros(k, np.int64)
        ccls[chart] = cls
        a = np.r_[pairs[:, 0], pairs[:, 1]]
        b = chart[np.r_[pairs[:, 1], pairs[:, 0]]]
        other = b != chart[a]
        key, cnt = np.unique(a[other] * k + b[other], return_counts=True)
        face, to = key // k, key % k
        move = (cnt >= 2) & (lean[face, ccls[to]] >= min_lean)
        if not move.any():
            break
        chart = chart.copy()
        chart[face[move]] = to[move]
        cls = ccls[chart]
        same = chart[pairs[:, 0]] == chart[pairs[:, 1]]
        chart = components(nf, pairs[same, 0], pairs[same, 1])[1]
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
    """(chart [F], number of rounds used): in charts whose flat triangles ``tri`` overlap (``sheet_test``)
    the overlapping faces are cut out into charts of their own (a fold of the surface: its sheets part), or where
    they are most of their chart, it is cut at the median of its longer side; connected parts become charts, and
    only those holding a face found overlapping are tested again, up to ``rounds`` times; faces still overlapping after that become
    charts of one face."""
    nf = len(f)
    pairs = face_adjacency_pairs(f) if pairs is None else pairs
    test = np.ones(int(chart.max()) + 1, bool)
    for used in range(rounds + 1):
        check(cancel)
        bad = chart_overlaps(f, chart, tri, test, cancel)
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


def halve_loose_charts(chart, tri, pairs, rounds=HALVE_ROUNDS, cancel=None):
    """Chart [F] after the halving of loose or very large charts (see ``BOX_FILL``); ``cancel`` asked within each
    round."""
    nf = len(chart)
    area = np.abs(signed_area(tri))
    total = max(float(area.sum()), 1e-300)
    for _ in range(rounds):
        k = int(chart.max()) + 1
        _, _, ext = chart_boxes(tri, chart, k, cancel)
        own = np.bincount(chart, weights=area, minlength=k)
        loose = ((own < BOX_FILL * ext[:, 0] * ext[:, 1]) | (own > MAX_AREA_SHARE * total)) \
            & (np.bincount(chart, minlength=k) >= HALVE_MIN_FACES)
        if not loose.any():
            break
        sel = np.nonzero(loose[chart])[0]
        side = np.zeros(nf, bool)
        side[sel] = _halves(chart, tri, sel, k)
        check(cancel)
        key = chart * 2 + side
        keep = key[pairs[:, 0]] == key[pairs[:, 1]]
        chart = components(nf, pairs[keep, 0], pairs[keep, 1])[1]
    return chart


def grouped_layout(vertices, faces, texture_size: int = DEFAULT_TEXTURE_SIZE, padding: int = 2,
                   progress: StepProgress = None, cancel=None, info: Optional[dict] = None):
    """The grouped charts (module docstring). Same outputs as ``unwrap_uv``. A dict ``info`` receives "charts",
    "split_rounds", "guard_faces" (faces found sharing a texel centre after packing, made charts of their own and
    packed again, up to ``GUARD_ROUNDS`` times) and "phases" (seconds per step: "charts", "project", "split",
    "pack")."""
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
    check(cancel)
    chart, cls = merge_small_charts(_charts_of(cls, pairs, nf), cls, lean, pairs, min_lean=MERGE_LEAN)
    check(cancel)
    chart, cls = smooth_borders(chart, cls, lean, pairs, BORDER_SWEEPS)
    check(cancel)
    chart, cls = merge_small_charts(chart, cls, lean, pairs, min_lean=MERGE_LEAN)
    lap("charts", 30)
    k = int(chart.max()) + 1
    direction = _mean_directions(n_area, chart, cls, k, unit_n, MIN_LEAN)
    tri = project_charts(v, f, chart, direction)
    lap("project", 40)
    # halved first: the overlap test then looks into the small charts around a fold, not into a whole large one
    chart = halve_loose_charts(chart, tri, pairs, cancel=cancel)
    chart, rounds = split_overlapping(f, chart, tri, pairs=pairs, cancel=cancel)
    lap("split", 60)
    corners = np.arange(3 * nf).reshape(-1, 3)
    for attempt in range(GUARD_ROUNDS + 1):
        corner_uv = pack_skyline(tri, chart, int(texture_size), int(padding), cancel=cancel, info=info)
        # what a bake sees: faces sharing a texel centre in the packed atlas (none expected) become one-face charts
        bad = overlapping_faces(corners, corner_uv.reshape(-1, 2), int(texture_size))
        info["guard_faces"] = info.get("guard_faces", 0) + int(bad.sum())
        if not bad.any() or attempt == GUARD_ROUNDS:
            break
        chart = np.unique(np.where(bad, chart.max() + 1 + np.cumsum(bad), chart), return_inverse=True)[1]
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
