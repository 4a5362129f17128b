"""Charts cut along the geometry: a hierarchical variant of variational shape approximation
(``geometric_charts``: a chart id per face), flattened next by ``lscm``.

* Each face is described by its normal averaged over ``SMOOTH_RINGS`` rings of neighbours and by its
  centroid (a compactness term: charts are round rather than long strips).
* Start with one cluster per connected piece, then split (2-means on those features, seeded at the two faces
  farthest apart) every cluster that is not a good chart: normals spread more than ``MAX_CONE_DEG`` around
  its mean (LSCM stretches more the more a chart bends), more than ``MAX_CHART_FACES`` faces, or not a disc
  (Euler characteristic != 1: a tube or a handle cannot be flattened without overlap).
* Borders are smoothed (a face whose edge-neighbours mostly belong to another chart moves there) and every
  chart of fewer than ``MIN_CHART_FACES`` faces is merged into the neighbour it shares the longest border with.
* With ``compact`` the borders are then diffused, shortened and merged again, a chart that is no longer a disc
  is split as above, too few charts of many faces are split for the packing, and border teeth are cut off
  last (``borders``).

The constants were chosen on the realistic objects' meshes by texel use of the packed atlas
(docs/benchmarks/export.md#charts).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ...core.callbacks import CancelCheck, check
from ..mesh_graph import components
from . import borders, chart_mesh
from .chart_mesh import ChartMesh, dense, label_components, members, mesh_edges, sorted_pairs
from ..rows import column_max, column_min, row_sum

__all__ = ["MAX_CONE_DEG", "MAX_CHART_FACES", "MIN_CHARTS", "FEW_CHARTS_SHARE", "FEW_CHARTS_MIN_FACES",
           "MIN_CHART_FACES", "SMALL_CHARTS_MESH_FACES", "MIN_CHART_FACES_SMALL_MESH",
           "POSITION_WEIGHT", "BORDER_SWEEPS", "DIFFUSE_STEPS", "SHORTEN_SWEEPS", "STRAIGHTEN_SWEEPS",
           "MERGED_LIMIT_FACTOR", "TooManyCharts", "sharp_pair_share", "geometric_charts", "at_most", "bad_charts",
           "distinct_per_chart"]

MAX_CONE_DEG = 70.0         # the bend a chart may have: more charts pack no better, fewer pack worse
MAX_CHART_FACES = 6000      # bounds one chart's LSCM block
# Too few charts pack badly (the holes between big ones stay empty): when the segmentation ends with fewer than
# MIN_CHARTS, the charts holding more than FEW_CHARTS_SHARE of the faces are split again, on meshes where that
# share is at least FEW_CHARTS_MIN_FACES faces (small meshes pack worse split).
# They are split already at the first merge when it ends with too few (the borders are then compacted once, not
# twice), and again after the compaction when it still leaves too few.
MIN_CHARTS = 40
FEW_CHARTS_SHARE = 0.055
FEW_CHARTS_MIN_FACES = 500
# Small charts fill the holes between larger ones (the diffusion removes the smallest); on small meshes charts
# that small lie over themselves through every packing, so those keep MIN_CHART_FACES_SMALL_MESH.
MIN_CHART_FACES = 10
SMALL_CHARTS_MESH_FACES = 5000
MIN_CHART_FACES_SMALL_MESH = 20
POSITION_WEIGHT = 1.0       # centroid distance (in chart diameters) against normal distance
BORDER_SWEEPS = 3
DIFFUSE_STEPS = 80          # random-walk steps of the border diffusion (0: off)
SHORTEN_SWEEPS = 20         # sweeps of the border shortening after it
STRAIGHTEN_SWEEPS = 3       # sweeps of the vertex teeth cut (0: off)
# ``geometric_charts(max_charts=N)`` gives up early when the first merge leaves more than this many times N
# charts: the compaction after it removes up to about half of them, no more.
MERGED_LIMIT_FACTOR = 3.0


class TooManyCharts(RuntimeError):
    """``geometric_charts`` stopped: the mesh would fall apart into more charts than asked for."""


def sharp_pair_share(m: ChartMesh, degrees: float = 45.0) -> float:
    """The share of neighbouring faces whose normals differ by more than ``degrees``: ~0.5-1 % on the
    realistic objects' meshes at the balanced budget, 50-85 % on noisy random-weight decoder surfaces."""
    if len(m.pairs) == 0:
        return 0.0
    cos = row_sum(m.normal[m.pairs[:, 0]] * m.normal[m.pairs[:, 1]])
    return float((cos < np.cos(np.radians(degrees))).mean())


def _two_means(m: ChartMesh, idx: np.ndarray, iters: int = 6) -> np.ndarray:
    """Split faces ``idx`` in two (bool mask of the second half) by normal and position."""
    c = m.centroid[idx]
    extent = column_max(c) - column_min(c)
    diam = max(float(np.linalg.norm(extent)), 1e-12)
    feat = np.concatenate([m.smooth[idx], POSITION_WEIGHT * c / diam], 1)
    w = m.area[idx] + 1e-30
    wf = w[:, None] * feat
    total, wsum = wf.sum(0), w.sum()
    mean = total / wsum
    a = int(np.argmax(row_sum((feat - mean) ** 2)))
    b = int(np.argmax(row_sum((feat - feat[a]) ** 2)))
    ca, cb = feat[a], feat[b]
    side = np.zeros(len(idx), dtype=bool)
    for _ in range(iters):
        # nearer to cb than to ca: |x - cb|^2 < |x - ca|^2, i.e. 2 x.(ca - cb) < |ca|^2 - |cb|^2
        side = feat @ (2 * (ca - cb)) < ca @ ca - cb @ cb
        if side.all() or not side.any():
            break
        sb, wb = side.astype(np.float64) @ wf, float(w[side].sum())
        ca, cb = (total - sb) / (wsum - wb), sb / wb
    if side.all() or not side.any():   # degenerate (identical features): halve by position
        order = np.argsort(c[:, int(np.argmax(extent))], kind="stable")
        side = np.zeros(len(idx), dtype=bool)
        side[order[len(idx) // 2:]] = True
    return side


def _euler_of(m: ChartMesh, idx: np.ndarray) -> int:
    """V - E + F of faces ``idx``: distinct vertices and edges (the mesh's edge ids) counted with stamp
    arrays kept on the mesh (an entry holds the last position written to it: an id is counted once,
    at its last occurrence; no sort, no array of the mesh's size per call)."""
    mesh_edges(m)
    return _distinct(m.stamp_v, m.f[idx].reshape(-1)) - _distinct(m.stamp_e, m.face_edges[idx].reshape(-1)) + len(idx)


def _distinct(stamp: np.ndarray, ids: np.ndarray) -> int:
    """How many distinct values ``ids`` holds (``stamp``: scratch, at least max(ids) + 1 long)."""
    pos = np.arange(len(ids))
    stamp[ids] = pos                                   # the last write of a repeated id wins
    return int(np.count_nonzero(stamp[ids] == pos))


def _sub_pairs(m: ChartMesh, idx: np.ndarray):
    """Face pairs (both ways) among faces ``idx``, as local indices into ``idx`` (rows, cols): the
    entries of ``m.adj[idx][:, idx]`` gathered from the CSR rows of ``idx`` only."""
    indptr, indices = m.adj.indptr, m.adj.indices
    st = indptr[idx].astype(np.int64)
    cnt = indptr[idx + 1] - st
    total = int(cnt.sum())
    rows = np.repeat(np.arange(len(idx)), cnt)
    nb = indices[np.repeat(st - (np.cumsum(cnt) - cnt), cnt) + np.arange(total)]
    pos = np.full(len(m.f), -1, np.int64)
    pos[idx] = np.arange(len(idx))
    col = pos[nb]
    ok = col >= 0
    return rows[ok], col[ok]


def _needs_split(m: ChartMesh, idx: np.ndarray, cos_cone: float, max_faces: int = MAX_CHART_FACES) -> bool:
    if len(idx) <= 1:
        return False
    if len(idx) > min(MAX_CHART_FACES, max_faces):
        return True
    n = m.smooth[idx]
    mean = (n * m.area[idx, None]).sum(0)
    mean /= max(float(np.linalg.norm(mean)), 1e-30)
    if (n @ mean).min() < cos_cone:
        return True
    return _euler_of(m, idx) != 1


def _smooth_borders(m: ChartMesh, label: np.ndarray, sweeps: int) -> np.ndarray:
    """A face with at least two of its edge-neighbours in one other chart moves there."""
    p = m.pairs
    for _ in range(sweeps):
        # count neighbours by (face, neighbour label)
        a = np.r_[p[:, 0], p[:, 1]]
        b = label[np.r_[p[:, 1], p[:, 0]]]
        diff = b != label[a]
        key = a[diff].astype(np.int64) * (int(label.max()) + 1) + b[diff]
        uniq, cnt = np.unique(key, return_counts=True)
        move = cnt >= 2
        if not move.any():
            break
        faces_mv = uniq[move] // (int(label.max()) + 1)
        new = uniq[move] % (int(label.max()) + 1)
        label = label.copy()
        label[faces_mv] = new
    return label


def _merge_small(m: ChartMesh, label: np.ndarray, min_faces: int) -> np.ndarray:
    """Charts of fewer than ``min_faces`` faces join the neighbour they share most edges with."""
    p = m.pairs
    for _ in range(8):
        label = dense(label)
        size = np.bincount(label)
        small = size < min_faces
        if not small.any():
            break
        la, lb = label[p[:, 0]], label[p[:, 1]]
        cross = la != lb
        la, lb = la[cross], lb[cross]
        src = np.r_[la, lb]
        dst = np.r_[lb, la]
        keep = small[src] & ~(small[dst] & (size[dst] < size[src]))   # into a larger neighbour
        keep |= small[src] & small[dst] & (size[dst] == size[src]) & (dst > src)
        if not keep.any():
            break
        k = len(size)
        key, cnt = np.unique(src[keep].astype(np.int64) * k + dst[keep], return_counts=True)
        s, d = key // k, key % k
        best = np.full(k, -1)
        order = np.lexsort((-cnt, s))                     # per source: the most shared edges first
        first = np.r_[True, s[order][1:] != s[order][:-1]]
        best[s[order][first]] = d[order][first]
        target = np.where(best >= 0, best, np.arange(k))
        label = target[label]
    return dense(label)


def geometric_charts(vertices, faces, *, mesh: ChartMesh = None, split: np.ndarray = None,
                     label: np.ndarray = None, compact: bool = True, max_faces: int = MAX_CHART_FACES,
                     max_charts: Optional[int] = None, cancel: CancelCheck = None) -> np.ndarray:
    """Chart id per face (0..K-1), see the module docstring. ``label`` with ``split`` (bool per
    chart): refine only those charts of an earlier labelling. ``compact``: diffuse and shorten the
    borders after the splits (``DIFFUSE_STEPS``, ``SHORTEN_SWEEPS``). ``max_faces``: split charts
    above this many faces too (below ``MAX_CHART_FACES``); fewer than ``MIN_CHARTS`` charts at the end:
    see ``FEW_CHARTS_SHARE``. ``max_charts``: raise ``TooManyCharts`` as soon as the mesh is seen to
    need far more (``MERGED_LIMIT_FACTOR``) and when it ends with more. ``cancel`` is checked per chart split
    and between the steps."""
    m = mesh if mesh is not None else ChartMesh(np.asarray(vertices, np.float64), np.asarray(faces, np.int64))
    cos_cone = float(np.cos(np.radians(MAX_CONE_DEG)))
    if label is None:
        label = components(len(m.f), sorted_pairs(m)[:, 0], sorted_pairs(m)[:, 1])[1]
        todo = list(range(int(label.max()) + 1))
        forced = set()
    else:
        label = label.copy()
        todo = [int(i) for i in np.nonzero(split)[0]]
        forced = set(todo)
    owned = members(label)
    nxt = int(label.max()) + 1
    while todo:
        check(cancel)
        c = todo.pop()
        idx = owned.get(c)
        if idx is None or len(idx) <= 1:
            continue
        if c not in forced and not _needs_split(m, idx, cos_cone, max_faces):
            continue
        forced.discard(c)
        side = _two_means(m, idx)
        # each connected part of either half is a chart of its own
        row, col = _sub_pairs(m, idx)
        keep = side[row] == side[col]
        parts = components(len(idx), row[keep], col[keep])[1]
        for k in range(int(parts.max()) + 1):
            part = idx[parts == k]
            lab = c if k == 0 else nxt
            if k:
                nxt += 1
            label[part] = lab
            owned[lab] = part
            todo.append(lab)
    check(cancel)
    label = label_components(m, label)
    label = _smooth_borders(m, label, BORDER_SWEEPS)
    label = label_components(m, label)
    check(cancel)
    min_faces = MIN_CHART_FACES if len(m.f) >= SMALL_CHARTS_MESH_FACES else MIN_CHART_FACES_SMALL_MESH
    label = _merge_small(m, label, min_faces)
    if max_charts is not None and split is None and label.max() + 1 > MERGED_LIMIT_FACTOR * max_charts:
        raise TooManyCharts(f"geometric charts: {int(label.max()) + 1} charts after the first merge "
                            f"(limit {max_charts})")
    if not compact or DIFFUSE_STEPS <= 0 or label.max() == 0:
        return at_most(label, max_charts)
    cap = int(FEW_CHARTS_SHARE * len(m.f))
    few_rule = split is None and cap >= max(FEW_CHARTS_MIN_FACES, 4 * min_faces)
    if few_rule and label.max() + 1 < MIN_CHARTS:
        big = np.bincount(label) > cap
        if big.any():   # split before the compaction, which then runs once over all charts
            label = geometric_charts(vertices, faces, mesh=m, split=big, label=label, compact=False, max_faces=cap,
                                     cancel=cancel)
    # compact charts (see the module docstring): smoothed borders, then shorter ones
    check(cancel)
    label = label_components(m, borders.diffuse_borders(m, label, DIFFUSE_STEPS))
    check(cancel)
    label = label_components(m, borders.shorten_borders(m, label, SHORTEN_SWEEPS))
    label = _merge_small(m, label, min_faces)
    check(cancel)
    bad = bad_charts(m, label)
    if bad.any():       # a chart grown around a handle (or past the size cap): split as before
        label = geometric_charts(vertices, faces, mesh=m, split=bad, label=label, compact=False, cancel=cancel)
    k = int(label.max()) + 1
    if few_rule and k < MIN_CHARTS:
        big = np.bincount(label, minlength=k) > cap
        if big.any():   # (the split's own compaction straightens the borders)
            return at_most(geometric_charts(vertices, faces, mesh=m, split=big, label=label, max_faces=cap,
                                            cancel=cancel), max_charts)
    check(cancel)
    if STRAIGHTEN_SWEEPS > 0:
        label = dense(borders.straighten_borders(m, label, STRAIGHTEN_SWEEPS))
    return at_most(label, max_charts)


def at_most(label: np.ndarray, max_charts: Optional[int], when: str = "") -> np.ndarray:
    """``label`` (chart id per face), or ``TooManyCharts`` when it has more than ``max_charts`` charts (``when``:
    the step that made them, for the message)."""
    if max_charts is not None and label.max() + 1 > max_charts:
        raise TooManyCharts(f"geometric charts: {int(label.max()) + 1} charts{when} (more than {max_charts})")
    return label


def bad_charts(m: ChartMesh, label: np.ndarray) -> np.ndarray:
    """Bool per chart: more than ``MAX_CHART_FACES`` faces or not a disc (V - E + F != 1)."""
    k = int(label.max()) + 1
    f, nv = m.f, len(m.v)
    size = np.bincount(label, minlength=k)
    mesh_edges(m)
    ne = max(m.n_edges, 1)
    lab = label[:, None].astype(np.int64)
    euler = distinct_per_chart(lab * nv + f, k, nv) - distinct_per_chart(lab * ne + m.face_edges, k, ne) + size
    return (size > 1) & ((size > MAX_CHART_FACES) | (euler != 1))


def distinct_per_chart(keys: np.ndarray, k: int, n: int) -> np.ndarray:
    """Per chart c < ``k``: how many distinct ids (below ``n``) ``keys`` = c * n + id holds: in a table of flags up
    to ``chart_mesh.KEY_TABLE_LIMIT`` slots, by a sort beyond."""
    if k * n <= chart_mesh.KEY_TABLE_LIMIT:
        seen = np.zeros(k * n, bool)
        seen[keys.reshape(-1)] = True
        return np.count_nonzero(seen.reshape(k, n), axis=1)
    return np.bincount(np.unique(keys) // n, minlength=k)
