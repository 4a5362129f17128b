"""Charts cut along the geometry and flattened by least-squares conformal maps (LSCM).

``geometric_charts(vertices, faces)`` gives a chart id per face; ``flatten_charts`` gives each
corner its 2-D coordinates in its chart (world units, ready to pack). Used by ``uv_unwrap``.

Segmentation (a hierarchical variant of variational shape approximation):

* Each face is described by its normal averaged over ``SMOOTH_RINGS`` rings of neighbours (a
  decimated iso-surface has "spike" faces whose own normal differs by 60-100° from all around them;
  clustered on their own normals they end up as single-triangle charts, which xatlas does with them)
  and by its centroid (a compactness term: charts are round rather than long strips).
* Start with one cluster per connected piece, then split (2-means on those features, seeded at the
  two faces farthest apart) every cluster that is not a good chart: normals spread more than
  ``MAX_CONE_DEG`` around its mean (LSCM stretches more the more a chart bends), more than
  ``MAX_CHART_FACES`` faces, or not a disc (Euler characteristic != 1: a tube or a handle cannot
  be flattened without overlap).
* Borders are smoothed (a face whose edge-neighbours mostly belong to another chart moves there),
  so they run along creases instead of saw-tooth, and every chart of fewer than ``MIN_CHART_FACES``
  faces is merged into the neighbour it shares the longest border with.
* Compact charts (``compact=True``): the 2-means halves still have jagged, concave borders (teeth of
  several faces along slivers), and the gaps between such charts are texture lost in the atlas. Each
  chart's indicator is diffused ``DIFFUSE_STEPS`` steps of a random walk over the faces (weights: the
  shared edge lengths) and every face goes to the chart that is strongest there: borders smooth out
  at the scale of a few rings and charts smaller than that shrink away. Then border faces move to
  the neighbouring chart they share more edge length with (``SHORTEN_SWEEPS``), small charts merge
  again, and a chart that is no longer a disc is split as above. The bend limit is not checked again
  (it was not after the smoothing and merging either); the flattening's distortion is measured
  instead (``benchmarks/uv_atlas_study.py``: the area distortion spread fell, 0.38 -> 0.14 on the bunny).
* Straight borders (``STRAIGHTEN_SWEEPS``, last, on the final charts): face by face the shortening cannot
  cut a tooth of two or more faces around one border vertex (each of them shares more edge length with
  its own chart; on the decimated CAD nut such teeth, a vertex pulled 10-20 texels out of the border,
  kept neighbouring charts apart in the atlas). At an inner vertex where two charts meet, the faces of one
  of them around it move to the other when the rim of those faces is shorter than the border's two edges
  there, only where the rim's inner vertices lie inside that chart (both stay discs, none falls apart)
  and per sweep at vertices three edges apart at least (moves decided on the same labels do not meet).
  1-2.5 % of the faces move; texel use with ``chart_pack``'s box orientation, mean over 17 first scales:
  the H100 host's nut 0.708 -> 0.718, bunny 0.716 -> 0.721, the study's outer sheets 0.718 -> 0.732,
  0.730 -> 0.740, the quick cleaned meshes 0.661 -> 0.667, 0.701 -> 0.717 (chart_pack's docstring);
  ~10 ms on 27 k faces (2 cores).

Flattening: LSCM (each triangle's map as close to a similarity as possible, two vertices of the
chart pinned) for all charts in one sparse least-squares solve; each chart is then scaled so its
2-D area equals its 3-D area (even texel density). LSCM keeps orientation, so a face it maps folded
is a 3-D fold-over (decimation leaves faces turned against their neighbours): such faces are cut out
of their chart, the chart re-solved (``MAX_ROUNDS`` times at most), and each face cut out alone is
put back into a neighbouring chart, unfolded across a shared edge, where it overlaps nothing
(``attach_single_faces``).

Measured (2 busy cores) on the realistic bunny after the balanced clean-up (18 k faces): 92 charts,
none of one triangle; segmentation ~0.2 s, LSCM ~0.1 s (with compact charts and 20-face charts: 76
charts, the diffusion and shortening ~0.06 s more; texel use of the packed atlas 0.644 -> 0.719). On 150 k faces of the same shape: ~450
charts, 8 % of them single fold-over faces that fit nowhere, segmentation ~2 s, LSCM ~1.5 s.

Speed (2026-11-23, same labels and maps): LSCM solved as a complex system (one unknown u + i v per chart
vertex, half the real system's size: 0.11 -> 0.05 s on the 27 k-face nut), the diffusion by its Chebyshev
series (~31 products instead of 80), components on CSR graphs built directly, Euler characteristics from
edge ids and stamp arrays. The meshes to_glb unwrapped: segmentation + flattening bunny ~0.25 s, nut ~0.35 s
(2 CPU cores).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import scipy.sparse as sp

from .graph import _components, _edges, face_adjacency_pairs

__all__ = ["geometric_charts", "flatten_charts", "single_face_charts", "attach_single_faces", "MAX_CONE_DEG",
           "MIN_CHART_FACES", "MAX_CHART_FACES", "overlapping_faces_exact", "charts_that_may_overlap",
           "chart_self_overlaps"]

SMOOTH_RINGS = 4
# 70° / 40 faces: 92 charts on the 18 k-face bunny (55° / 12 faces: 156 charts, the same texel use
# at padding 2 after packing; 90° or 80 faces: 58 charts, 2 points less, larger charts pack worse)
MAX_CONE_DEG = 70.0
MAX_CHART_FACES = 6000      # bounds one chart's LSCM block
# Too few charts pack badly: the cleaned CAD nut at the balanced budget (27 k faces) made 29 charts, 12
# of them 6-11 % of the surface each and almost nothing between (17 charts held 3 %), so the holes between
# the big ones stayed empty (texel use 0.63). When the segmentation ends with fewer than MIN_CHARTS charts,
# the charts holding more than FEW_CHARTS_SHARE of the faces (the curved ones: decimation leaves more
# faces where the surface bends) are split again (2-means, as above) and the borders made compact again:
# 45 charts, texel use 0.705 (2 CPU cores, uv_atlas_study --mesh-file). Only where that share is at least
# FEW_CHARTS_MIN_FACES faces: the 5 k-face bumpy sphere of the tests (37 charts of ~140 faces) packed
# worse split (0.694 -> 0.661), as did the study meshes split further (76 -> 95 / 45 -> 53 charts:
# 0.719 -> 0.702, 0.738 -> 0.716 mean over five layout scales).
MIN_CHARTS = 40
FEW_CHARTS_SHARE = 0.055
FEW_CHARTS_MIN_FACES = 500
# with compact borders: 20 (smaller charts fill the holes between larger ones; the diffusion removes
# the smallest) packs better than 40: 9-scale mean layout density bunny 0.698 -> 0.715, nut 0.694 ->
# 0.737 (with DIFFUSE_STEPS 80); 60-80: 0.68 / 0.67-0.68. 10 (2026-11-23; mean over ten layout scales
# 0.785-0.875, 2 CPU cores): the meshes to_glb unwrapped on the H100 bunny 0.690 -> 0.701 (102 -> 113 charts),
# nut 0.689 -> 0.698 (45 -> 54), the study's outer sheets 0.716 -> 0.718, 0.729 -> 0.720; 8: bunny 0.708,
# nut 0.698, study nut 0.720 (five scales); 12-14: between
MIN_CHART_FACES = 10
# ... on meshes of at least SMALL_CHARTS_MESH_FACES faces; below, 20 (MIN_CHART_FACES_SMALL_MESH): on the quick
# cleaned bunny (1 120 faces) 10-face charts left 19 faces lying over their own chart through every packing,
# which ended as charts of one face each (34-40 % of the charts, texel use 0.707 -> 0.684)
SMALL_CHARTS_MESH_FACES = 5000
MIN_CHART_FACES_SMALL_MESH = 20
POSITION_WEIGHT = 1.0       # centroid distance (in chart diameters) against normal distance
BORDER_SWEEPS = 3
DIFFUSE_STEPS = 80          # random-walk steps of the border diffusion (0: off; 48-112 measured, 64-112 alike)
DIFFUSE_CHEBYSHEV = True    # the diffusion by its Chebyshev series (``_chebyshev_walk``)
DIFFUSE_TAIL = 1e-6
SHORTEN_SWEEPS = 20         # sweeps of the border shortening after it
STRAIGHTEN_SWEEPS = 3       # sweeps of the vertex teeth cut (0: off; 2, 5 and 8 measured alike)
MAX_ROUNDS = 3
# ``geometric_charts(max_charts=N)`` gives up early on a mesh that will end with far more than N charts (a
# noisy random-weight decoder surface: 35 k faces split into ~7 900 pieces, ~1 400 charts after the first
# merge at 0.9 s, 1 816 at the end after 1.8 s, 2 cores): when the first merge leaves more than
# MERGED_LIMIT_FACTOR x N charts. The compaction after that merge removes up to 45 % of the charts (first
# merge / end: bunny 142 / 97, nut 29 / 46, noisy spheres 147 / 81 to 738 / 446, the e2e mesh 1 835 / 1 816),
# so 3 x N leaves a margin. The pieces of the splits say too little to stop earlier: a noisy 5 k-face sphere
# splits into over 1 100 pieces and ends with 109 charts, the e2e mesh ~7 900 / 1 816.
MERGED_LIMIT_FACTOR = 3.0

# faces of a chart that LSCM maps over itself are cut out before packing, OVERLAP_ROUNDS times at most
# (``chart_self_overlaps``: exact, so the packed atlas has none and ``uv_unwrap`` packs once. Until
# 2026-11-23 this was a test at texel centres of the charts laid side by side, which missed slivers that
# the packing's scale then put on a texel centre: the product-like nut made on a CPU was packed 3 times,
# UV 2.95 s, now once, 1.36 s; bunny 1.09 -> 0.51 s; docs/BENCHMARKS.md, tenth session)
OVERLAP_ROUNDS = 2


class TooManyCharts(RuntimeError):
    """``geometric_charts`` stopped: the mesh would fall apart into more charts than asked for."""


class _Mesh:
    """Per-face arrays the segmentation needs."""

    def __init__(self, v, f):
        self.v, self.f = v, f
        cr = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
        self.area = 0.5 * np.linalg.norm(cr, axis=1)
        self.normal = cr / np.maximum(2 * self.area[:, None], 1e-30)
        self.centroid = v[f].mean(1)
        self.pairs = face_adjacency_pairs(f)
        self.edge_len = None              # shared edge per pair, on first use
        self.face_edges, self.n_edges = None, 0     # edge id per face side, on first use (_mesh_edges)
        self.edge_ends = self.edge_count = None     # per edge: its two vertices, faces using it (ditto)
        self.stamp_v = self.stamp_e = None    # scratch of _euler_of
        self.pairs_by_face = None         # pairs ordered by their first face, on first use
        nf = len(f)
        p = self.pairs
        self.adj = sp.csr_matrix((np.ones(2 * len(p)), (np.r_[p[:, 0], p[:, 1]], np.r_[p[:, 1], p[:, 0]])),
                                 shape=(nf, nf))
        ns = cr.copy()                    # area-weighted: slivers count little
        for _ in range(SMOOTH_RINGS):
            ns = ns + self.adj @ ns
        self.smooth = ns / np.maximum(np.linalg.norm(ns, axis=1, keepdims=True), 1e-30)


def sharp_pair_share(m: _Mesh, degrees: float = 45.0) -> float:
    """The share of neighbouring faces whose normals differ by more than ``degrees``: ~0.5-1 % on the
    realistic objects' meshes at the balanced budget, 50-85 % on noisy random-weight decoder surfaces."""
    if len(m.pairs) == 0:
        return 0.0
    cos = (m.normal[m.pairs[:, 0]] * m.normal[m.pairs[:, 1]]).sum(1)
    return float((cos < np.cos(np.radians(degrees))).mean())


def _two_means(m: _Mesh, idx: np.ndarray, iters: int = 6) -> np.ndarray:
    """Split faces ``idx`` in two (bool mask of the second half) by normal and position."""
    c = m.centroid[idx]
    diam = max(float(np.linalg.norm(c.max(0) - c.min(0))), 1e-12)
    feat = np.concatenate([m.smooth[idx], POSITION_WEIGHT * c / diam], 1)
    w = m.area[idx] + 1e-30
    wf = w[:, None] * feat
    total, wsum = wf.sum(0), w.sum()
    mean = total / wsum
    a = int(np.argmax(((feat - mean) ** 2).sum(1)))
    b = int(np.argmax(((feat - feat[a]) ** 2).sum(1)))
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
        order = np.argsort(c[:, int(np.argmax(c.max(0) - c.min(0)))], kind="stable")
        side = np.zeros(len(idx), dtype=bool)
        side[order[len(idx) // 2:]] = True
    return side


def _mesh_edges(m: _Mesh) -> None:
    """Fill the mesh's edge tables on first use: ``face_edges`` (edge id per face side), ``n_edges``,
    ``edge_ends`` [E,2], ``edge_count`` [E] (faces per edge) and the stamp arrays of ``_euler_of``."""
    if m.face_edges is None:
        edge_of_he, m.edge_ends, m.edge_count = _edges(m.f, len(m.v))
        m.face_edges = edge_of_he.reshape(-1, 3)
        m.n_edges = int(m.face_edges.max(initial=-1)) + 1
        m.stamp_v = np.zeros(len(m.v), np.int64)
        m.stamp_e = np.zeros(max(m.n_edges, 1), np.int64)


def _euler_of(m: _Mesh, idx: np.ndarray) -> int:
    """V - E + F of faces ``idx``: distinct vertices and edges (the mesh's edge ids) counted with stamp
    arrays kept on the mesh (an entry holds the last position written to it: an id is counted once,
    at its last occurrence; no sort, no array of the mesh's size per call)."""
    _mesh_edges(m)
    return _distinct(m.stamp_v, m.f[idx].reshape(-1)) - _distinct(m.stamp_e, m.face_edges[idx].reshape(-1)) + len(idx)


def _distinct(stamp: np.ndarray, ids: np.ndarray) -> int:
    """How many distinct values ``ids`` holds (``stamp``: scratch, at least max(ids) + 1 long)."""
    pos = np.arange(len(ids))
    stamp[ids] = pos                                   # the last write of a repeated id wins
    return int(np.count_nonzero(stamp[ids] == pos))


def _sub_pairs(m: _Mesh, idx: np.ndarray):
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


def _needs_split(m: _Mesh, idx: np.ndarray, cos_cone: float, max_faces: int = MAX_CHART_FACES) -> bool:
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


def _dense(label: np.ndarray) -> np.ndarray:
    """Labels renumbered 0..K-1 in their order (``np.unique(label, return_inverse=True)[1]`` without
    the sort)."""
    label = np.asarray(label, np.int64)
    if len(label) == 0:
        return label.copy()
    return (np.cumsum(np.bincount(label) > 0) - 1)[label]


def _sorted_pairs(m: _Mesh) -> np.ndarray:
    """``m.pairs`` ordered by their first face (``_components`` then builds its graph directly)."""
    if m.pairs_by_face is None:
        m.pairs_by_face = m.pairs[np.argsort(m.pairs[:, 0], kind="stable")]
    return m.pairs_by_face


def _label_components(m: _Mesh, label: np.ndarray) -> np.ndarray:
    p = _sorted_pairs(m)
    same = label[p[:, 0]] == label[p[:, 1]]
    return _components(len(label), p[same, 0], p[same, 1])[1]


def _smooth_borders(m: _Mesh, label: np.ndarray, sweeps: int) -> np.ndarray:
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


def _merge_small(m: _Mesh, label: np.ndarray, min_faces: int) -> np.ndarray:
    """Charts of fewer than ``min_faces`` faces join the neighbour they share most edges with."""
    p = m.pairs
    for _ in range(8):
        label = _dense(label)
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
    return _dense(label)


def geometric_charts(vertices, faces, *, mesh: _Mesh = None, split: np.ndarray = None,
                     label: np.ndarray = None, compact: bool = True, max_faces: int = MAX_CHART_FACES,
                     max_charts: Optional[int] = None) -> np.ndarray:
    """Chart id per face (0..K-1), see the module docstring. ``label`` with ``split`` (bool per
    chart): refine only those charts of an earlier labelling. ``compact``: diffuse and shorten the
    borders after the splits (``DIFFUSE_STEPS``, ``SHORTEN_SWEEPS``). ``max_faces``: split charts
    above this many faces too (below ``MAX_CHART_FACES``); fewer than ``MIN_CHARTS`` charts at the end:
    see ``FEW_CHARTS_SHARE``. ``max_charts``: raise ``TooManyCharts`` as soon as the mesh is seen to
    need far more (``MERGED_LIMIT_FACTOR``) and when it ends with more."""
    m = mesh if mesh is not None else _Mesh(np.asarray(vertices, np.float64), np.asarray(faces, np.int64))
    cos_cone = float(np.cos(np.radians(MAX_CONE_DEG)))
    if label is None:
        label = _components(len(m.f), _sorted_pairs(m)[:, 0], _sorted_pairs(m)[:, 1])[1]
        todo = list(range(int(label.max()) + 1))
        forced = set()
    else:
        label = label.copy()
        todo = [int(i) for i in np.nonzero(split)[0]]
        forced = set(todo)
    members = _members(label)
    nxt = int(label.max()) + 1
    while todo:
        c = todo.pop()
        idx = members.get(c)
        if idx is None or len(idx) <= 1:
            continue
        if c not in forced and not _needs_split(m, idx, cos_cone, max_faces):
            continue
        forced.discard(c)
        side = _two_means(m, idx)
        # each connected part of either half is a chart of its own
        row, col = _sub_pairs(m, idx)
        keep = side[row] == side[col]
        parts = _components(len(idx), row[keep], col[keep])[1]
        for k in range(int(parts.max()) + 1):
            part = idx[parts == k]
            lab = c if k == 0 else nxt
            if k:
                nxt += 1
            label[part] = lab
            members[lab] = part
            todo.append(lab)
    label = _label_components(m, label)
    label = _smooth_borders(m, label, BORDER_SWEEPS)
    label = _label_components(m, label)
    min_faces = MIN_CHART_FACES if len(m.f) >= SMALL_CHARTS_MESH_FACES else MIN_CHART_FACES_SMALL_MESH
    label = _merge_small(m, label, min_faces)
    if max_charts is not None and split is None and label.max() + 1 > MERGED_LIMIT_FACTOR * max_charts:
        raise TooManyCharts(f"geometric charts: {int(label.max()) + 1} charts after the first merge "
                            f"(limit {max_charts})")
    if not compact or DIFFUSE_STEPS <= 0 or label.max() == 0:
        return at_most(label, max_charts)
    # compact charts (see the module docstring): smoothed borders, then shorter ones
    label = _label_components(m, _diffuse_borders(m, label, DIFFUSE_STEPS))
    label = _label_components(m, _shorten_borders(m, label, SHORTEN_SWEEPS))
    label = _merge_small(m, label, min_faces)
    bad = _bad_charts(m, label)
    if bad.any():       # a chart grown around a handle (or past the size cap): split as before
        label = geometric_charts(vertices, faces, mesh=m, split=bad, label=label, compact=False)
    k = int(label.max()) + 1
    cap = int(FEW_CHARTS_SHARE * len(m.f))
    if split is None and k < MIN_CHARTS and cap >= max(FEW_CHARTS_MIN_FACES, 4 * min_faces):
        big = np.bincount(label, minlength=k) > cap
        if big.any():   # (the split's own compaction straightens the borders)
            return at_most(geometric_charts(vertices, faces, mesh=m, split=big, label=label, max_faces=cap),
                           max_charts)
    if STRAIGHTEN_SWEEPS > 0:
        label = _dense(_straighten_borders(m, label, STRAIGHTEN_SWEEPS))
    return at_most(label, max_charts)


def at_most(label: np.ndarray, max_charts: Optional[int], when: str = "") -> np.ndarray:
    """``label`` (chart id per face), or ``TooManyCharts`` when it has more than ``max_charts`` charts (``when``:
    the step that made them, for the message)."""
    if max_charts is not None and label.max() + 1 > max_charts:
        raise TooManyCharts(f"geometric charts: {int(label.max()) + 1} charts{when} (more than {max_charts})")
    return label


def _shared_edge_lengths(m: _Mesh) -> np.ndarray:
    """Length of the edge each face pair of ``m.pairs`` shares."""
    if m.edge_len is None:
        fa, fb = m.f[m.pairs[:, 0]], m.f[m.pairs[:, 1]]
        shared = (fa[:, :, None] == fb[:, None, :]).any(2)         # corners of a that b has too
        first = np.argmax(shared, 1)
        second = 2 - np.argmax(shared[:, ::-1], 1)
        rows = np.arange(len(fa))
        m.edge_len = np.linalg.norm(m.v[fa[rows, first]] - m.v[fa[rows, second]], axis=1)
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


def _diffuse_borders(m: _Mesh, label: np.ndarray, steps: int) -> np.ndarray:
    """Each chart's indicator diffused ``steps`` steps of a lazy random walk over the face graph (edge
    weight: the shared edge's length); each face then goes to the chart whose indicator is largest
    there. Borders move towards shorter, smoother curves at the scale of ~sqrt(steps) rings, charts
    smaller than that shrink away. Charts are diffused by colour (``_chart_colours``): a face near
    the border of its chart sees at most one chart of each colour among that chart and its neighbours,
    so ~15-25 columns instead of one per chart; a face whose winning colour is none of those keeps its
    chart."""
    p = m.pairs
    nf = len(label)
    w = _shared_edge_lengths(m)
    deg = np.bincount(p[:, 0], w, nf) + np.bincount(p[:, 1], w, nf)
    inv = 0.5 / np.maximum(deg, 1e-30)
    colour, adj = _chart_colours(label, p)
    ncol = int(colour.max()) + 1
    ind = np.zeros((nf, ncol), np.float32)
    ind[np.arange(nf), colour[label]] = 1.0
    if DIFFUSE_CHEBYSHEV:
        ind = _chebyshev_walk(p, w, deg, nf, ind, steps)
    else:
        walk = sp.csr_matrix((np.r_[w * inv[p[:, 0]], w * inv[p[:, 1]], 0.5 * (deg > 0) + (deg <= 0)],
                              (np.r_[p[:, 0], p[:, 1], np.arange(nf)], np.r_[p[:, 1], p[:, 0], np.arange(nf)])),
                             shape=(nf, nf)).astype(np.float32)
        for _ in range(steps):
            ind = walk @ ind
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


def _shorten_borders(m: _Mesh, label: np.ndarray, sweeps: int) -> np.ndarray:
    """A border face moves to the neighbouring chart it shares more edge length with than with its own
    (the chart border gets shorter); per sweep only faces no neighbour of which gains more move."""
    p = m.pairs
    nf = len(label)
    w = _shared_edge_lengths(m)
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


def _straighten_borders(m: _Mesh, label: np.ndarray, sweeps: int) -> np.ndarray:
    """Teeth of the chart borders cut off: at an inner vertex where two charts meet (two border edges),
    the faces of one chart around it move to the other when the rim of those faces is shorter than the
    border's two edges there; per sweep only vertices whose gain is the largest within two rings move."""
    f, nv = m.f, len(m.v)
    _mesh_edges(m)
    fe, ends, count = m.face_edges, m.edge_ends, m.edge_count
    ne = max(m.n_edges, 1)
    elen = np.linalg.norm(m.v[ends[:, 0]] - m.v[ends[:, 1]], axis=1)
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


def _bad_charts(m: _Mesh, label: np.ndarray) -> np.ndarray:
    """Bool per chart: more than ``MAX_CHART_FACES`` faces or not a disc (V - E + F != 1)."""
    k = int(label.max()) + 1
    f, nv = m.f, len(m.v)
    size = np.bincount(label, minlength=k)
    _mesh_edges(m)
    ne = max(m.n_edges, 1)
    ekey = np.unique(label[:, None].astype(np.int64) * ne + m.face_edges)
    vkey = np.unique(label[:, None].astype(np.int64) * nv + f)
    euler = np.bincount(vkey // nv, minlength=k) - np.bincount(ekey // ne, minlength=k) + size
    return (size > 1) & ((size > MAX_CHART_FACES) | (euler != 1))


def _members(label: np.ndarray) -> dict:
    order = np.argsort(label, kind="stable")
    bounds = np.searchsorted(label[order], np.arange(int(label.max()) + 2))
    return {i: order[bounds[i]:bounds[i + 1]] for i in range(int(label.max()) + 1)
            if bounds[i + 1] > bounds[i]}


def _lscm(v, f, chart):
    """Corner coordinates [F,3,2] of every chart by LSCM, one sparse solve for all charts, each chart
    scaled to its 3-D area. Also returns the chart-local vertex index of each corner."""
    nf = len(f)
    key = chart.astype(np.int64)[:, None] * len(v) + f                  # one unknown per (chart, vertex)
    uniq, corner = np.unique(key.reshape(-1), return_inverse=True)
    corner = corner.reshape(nf, 3)
    nv = len(uniq)
    vert = uniq % len(v)
    vchart = uniq // len(v)
    # each triangle in its own isometric frame
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    e0 = b - a
    n = np.cross(e0, c - a)
    area2 = np.linalg.norm(n, axis=1)
    e0 = e0 / np.maximum(np.linalg.norm(e0, axis=1, keepdims=True), 1e-30)
    e1 = np.cross(n / np.maximum(area2[:, None], 1e-30), e0)
    w = np.zeros((nf, 3), dtype=np.complex128)
    w[:, 1] = ((b - a) * e0).sum(1) + 1j * ((b - a) * e1).sum(1)
    w[:, 2] = ((c - a) * e0).sum(1) + 1j * ((c - a) * e1).sum(1)
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
    span = np.linalg.norm(p[pin1] - p[pin0], axis=1)
    target[pin1, 0] = np.maximum(span, 1e-9)
    # complex least squares, one unknown U = u + i v per (chart, vertex): |sum_j W_tj U_j|^2 is the real
    # system's Re^2 + Im^2 (rows Re, Im per triangle over u and v), solved in half the unknowns
    # (0.05 vs 0.11 s on the 27 k-face nut, the same map to ~1e-11)
    rows = np.repeat(np.arange(nf), 3)
    A = sp.csr_matrix((W.reshape(-1), (rows, corner.reshape(-1))), shape=(nf, nv))
    free = ~pinned
    x_p = (target[:, 0] + 1j * target[:, 1])[pinned]
    A_f, A_p = A[:, free], A[:, pinned]
    rhs = -(A_p @ x_p)
    from scipy.sparse.linalg import spsolve
    A_h = A_f.conj().T.tocsr()
    N = (A_h @ A_f).tocsr()
    # a vertex that only zero-area faces touch has no equation: a whisker of regularisation keeps
    # the system non-singular (such a vertex lands near its chart's first pin)
    N = (N + sp.identity(N.shape[0], format="csr") * (1e-10 * float(N.diagonal().real.mean() or 1.0))).tocsc()
    x = np.zeros(nv, np.complex128)
    x[pinned] = x_p
    # (minimum degree on N + N^H's pattern: N is Hermitian)
    x[free] = spsolve(N, A_h @ rhs, permc_spec="MMD_AT_PLUS_A")
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


def _signed_area(tri):
    return 0.5 * ((tri[:, 1, 0] - tri[:, 0, 0]) * (tri[:, 2, 1] - tri[:, 0, 1])
                  - (tri[:, 1, 1] - tri[:, 0, 1]) * (tri[:, 2, 0] - tri[:, 0, 0]))


def _detach(m: _Mesh, v, f, chart, tri, signed, faces_out, single: bool = False):
    """Cut ``faces_out`` (bool per face) out of their charts (edge-connected groups of them become
    charts of their own; ``single``: each face alone) and re-solve the charts they left."""
    redo = np.isin(chart, np.unique(chart[faces_out])) | faces_out
    chart = chart.copy()
    chart[faces_out] = int(chart.max()) + 1 + (np.arange(int(np.sum(faces_out))) if single else 0)
    chart = _label_components(m, chart)
    tri, signed = tri.copy(), signed.copy()
    sub = np.unique(chart[redo], return_inverse=True)[1]
    tri[redo], signed[redo] = _lscm(v, f[redo], sub)
    return chart, tri, signed


def flatten_charts(vertices, faces, chart: np.ndarray = None, mesh: _Mesh = None, tri: np.ndarray = None,
                   detach: np.ndarray = None):
    """(chart id per face, corner coordinates [F,3,2] in world units, one flat chart each).

    A face that LSCM maps folded (3-D fold-overs left by decimation: a face turned against its
    neighbours) is cut out of its chart and the rest of that chart re-solved (``MAX_ROUNDS`` times
    at most); the faces cut out are then put back into a neighbouring chart where they fit
    (``attach_single_faces``). ``tri`` and ``detach`` (bool per face): an earlier result and faces
    to cut out of it first (faces found overlapping in the atlas); only their charts are re-solved."""
    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces, np.int64)
    m = mesh if mesh is not None else _Mesh(v, f)
    if chart is None:
        chart = geometric_charts(v, f, mesh=m)
    chart = np.asarray(chart, np.int64).copy()
    real = m.area > 1e-12 * max(float(m.area.max(initial=0)), 1e-30)
    if tri is None:
        tri, signed = _lscm(v, f, chart)
    else:
        tri = np.asarray(tri, np.float64)
        signed = _signed_area(tri)
    if detach is not None and np.any(detach):
        chart, tri, signed = _detach(m, v, f, chart, tri, signed, np.asarray(detach, bool))
    for _ in range(MAX_ROUNDS):
        folded = real & (signed <= 0)
        if not folded.any():
            break
        chart, tri, signed = _detach(m, v, f, chart, tri, signed, folded)
    for r in range(OVERLAP_ROUNDS + 1):
        over = chart_self_overlaps(f, chart, tri)
        if not over.any():
            break
        # after OVERLAP_ROUNDS the faces still over their own chart (a group cut out that, re-solved, lies
        # over itself again) are cut out one by one (a face alone cannot) and put back below where they fit:
        # on the quick cleaned bunny (1 120 faces, charts of 10 faces at least) the same 19 faces stayed
        # over themselves through every packing, and became charts of one face each (40 % of the charts)
        chart, tri, signed = _detach(m, v, f, chart, tri, signed, over, single=r == OVERLAP_ROUNDS)
    folded = real & (signed <= 0)
    if folded.any():    # still folded after the rounds: those charts are flattened face by face
        bad = np.isin(chart, np.unique(chart[folded]))
        chart[bad] = int(chart.max()) + 1 + np.arange(int(bad.sum()))
        tri[bad] = _lscm(v, f[bad], np.arange(int(bad.sum())))[0]
    chart = _dense(chart)
    chart, tri = attach_single_faces(m, chart, tri)
    return chart, tri


def _box_pairs(lo, hi, group):
    """(i, j), i < j: items of the same ``group`` whose boxes ``lo`` / ``hi`` [N,2] overlap. Candidates from
    a grid per group of about the median box size (each item entered in every cell its box covers), never
    finer than 1/64 of the largest box (so no box covers more than 65 x 65 cells)."""
    n = len(lo)
    none = (np.zeros(0, np.int64),) * 2
    if n < 2:
        return none
    size = np.maximum(hi - lo, 0.0).max(1)
    cell = max(float(np.median(size)), float(size.max()) / 64) or 1.0
    base = np.floor(lo / cell).astype(np.int64).min(0)
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
    meet = ((lo[pa] <= hi[pb]) & (lo[pb] <= hi[pa])).all(1)
    if not meet.any():
        return none
    pair = np.unique(np.minimum(pa[meet], pb[meet]) * n + np.maximum(pa[meet], pb[meet]))
    return pair // n, pair % n


def overlapping_faces_exact(chart: np.ndarray, tri: np.ndarray, faces: np.ndarray = None) -> np.ndarray:
    """Bool per face: its flat triangle (``tri`` [F,3,2], each chart in its own plane) overlaps another
    triangle of its own chart, i.e. their interiors meet (triangles that only share an edge or a corner do
    not; allowance 1e-9 of their size). Exact, unlike a test at texel centres (``atlas_stats.overlapping_faces``).
    ``faces``: only these (indices) are tested, against each other. Separating-axis test on the six edge
    normals of each pair of triangles whose boxes overlap (``_box_pairs``)."""
    tri = np.asarray(tri, np.float64)
    out = np.zeros(len(tri), bool)
    idx = np.arange(len(tri)) if faces is None else np.asarray(faces, np.int64)
    lo, hi = tri[idx].min(1), tri[idx].max(1)
    size = np.maximum(hi - lo, 0.0).max(1)
    real = np.abs(_signed_area(tri[idx])) > 1e-12 * max(float((size * size).max(initial=0.0)), 1e-300)
    idx, lo, hi, size = idx[real], lo[real], hi[real], size[real]
    pa, pb = _box_pairs(lo, hi, np.asarray(chart, np.int64)[idx])
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
            apart |= np.maximum(kb.min(1) - ka.max(1), ka.min(1) - kb.max(1)) >= -slack
    out[idx[pa[~apart]]] = True
    out[idx[pb[~apart]]] = True
    return out


def charts_that_may_overlap(faces, chart: np.ndarray, tri: np.ndarray, tol: float = 1e-6) -> np.ndarray:
    """Bool per chart: its flattening may run over itself. A chart is cleared when every triangle of it keeps
    its orientation, the angles around each of its inner vertices add up to one turn, those at its border
    vertices to less than one, and its border (edges of one of its faces only) neither crosses nor touches
    itself (border segments without a common vertex): a disc so flattened is one sheet. A chart with a
    half-edge in two of its faces (faces wound against each other, or three on one edge) is never cleared.
    (``tol``: radians, and of the segments' size squared for the crossings.)"""
    f = np.asarray(faces, np.int64).reshape(-1, 3)
    chart = np.asarray(chart, np.int64)
    tri = np.asarray(tri, np.float64)
    k = int(chart.max()) + 1 if len(chart) else 0
    out = np.zeros(k, bool)
    if k == 0:
        return out
    out[chart[_signed_area(tri) <= 0]] = True
    nv = int(f.max()) + 1
    corner = chart[:, None] * nv + f                                                    # (chart, vertex)
    to = f[:, [1, 2, 0]]
    # a half-edge twice in one chart: two of its faces wound against each other across that edge (or more
    # than two faces on it), which the tests below, made for a consistently wound disc, do not see
    _, uses = np.unique((corner * nv + to).reshape(-1), return_inverse=True)
    twice = np.bincount(uses) > 1
    out[chart[twice[uses].reshape(-1, 3).any(1)]] = True
    nxt, prv = tri[:, [1, 2, 0]] - tri, tri[:, [2, 0, 1]] - tri
    angle = np.arctan2(nxt[..., 0] * prv[..., 1] - nxt[..., 1] * prv[..., 0],
                       nxt[..., 0] * prv[..., 0] + nxt[..., 1] * prv[..., 1])           # [F,3], at each corner
    corner_to = chart[:, None] * nv + to                                                # (chart, next vertex)
    border = ~np.isin(corner * nv + to, corner_to * nv + f)    # half-edge i -> i + 1 without its twin in the chart
    keys, inv = np.unique(corner.reshape(-1), return_inverse=True)
    turn = np.bincount(inv, weights=angle.reshape(-1), minlength=len(keys))
    on_border = np.isin(keys, np.r_[corner[border], corner_to[border]])
    wrong = np.where(on_border, turn > 2 * np.pi - tol, np.abs(turn - 2 * np.pi) > tol)
    out[keys[wrong] // nv] = True
    # border crossings: segments of one chart that share no vertex and cross properly
    fi, ci = np.nonzero(border)
    p0, p1 = tri[fi, ci], tri[fi, (ci + 1) % 3]
    va, vb = f[fi, ci], to[fi, ci]
    sa, sb = _box_pairs(np.minimum(p0, p1), np.maximum(p0, p1), chart[fi])
    keep = (va[sa] != va[sb]) & (va[sa] != vb[sb]) & (vb[sa] != va[sb]) & (vb[sa] != vb[sb])
    sa, sb = sa[keep], sb[keep]
    if len(sa):
        scale = np.maximum(np.abs(p1[sa] - p0[sa]).max(1), np.abs(p1[sb] - p0[sb]).max(1)) ** 2 * tol
        d1, d2 = _orient(p0[sb], p1[sb], p0[sa]), _orient(p0[sb], p1[sb], p1[sa])
        d3, d4 = _orient(p0[sa], p1[sa], p0[sb]), _orient(p0[sa], p1[sa], p1[sb])
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


def single_face_charts(vertices, faces, chart, tri, which):
    """Faces ``which`` (bool) made charts of their own, each flattened as it is in 3-D."""
    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces, np.int64)
    chart, tri = chart.copy(), tri.copy()
    n = int(np.sum(which))
    chart[which] = int(chart.max()) + 1 + np.arange(n)
    tri[which] = _lscm(v, f[which], np.arange(n))[0]
    return _dense(chart), tri


def _orient(a, b, c):
    """Twice the signed area of triangle a, b, c (arrays [...,2]): > 0 when c lies left of a -> b."""
    return (b[..., 0] - a[..., 0]) * (c[..., 1] - a[..., 1]) - (b[..., 1] - a[..., 1]) * (c[..., 0] - a[..., 0])


def _seg_cross(p1, p2, q1, q2):
    """Proper crossing of segments p1p2 and q1q2 (arrays [...,2]), touching excluded."""
    d1, d2 = _orient(q1, q2, p1), _orient(q1, q2, p2)
    d3, d4 = _orient(p1, p2, q1), _orient(p1, p2, q2)
    return (d1 * d2 < 0) & (d3 * d4 < 0)


def _inside(p, t, eps):
    """Point(s) p [...,2] strictly inside triangles t [N,3,2] (counter-clockwise or not)."""
    out = []
    for k in range(3):
        a, b = t[:, k], t[:, (k + 1) % 3]
        out.append((b[:, 0] - a[:, 0]) * (p[..., 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (p[..., 0] - a[:, 0]))
    s = np.stack(out, -1)
    return (s > eps).all(-1) | (s < -eps).all(-1)


def _overlaps(new, others, scale):
    """Does triangle ``new`` [3,2] overlap any of ``others`` [N,3,2] (sharing edges / corners is fine)?"""
    if len(others) == 0:
        return False
    lo, hi = new.min(0), new.max(0)
    near = (others.max(1) >= lo).all(1) & (others.min(1) <= hi).all(1)
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


def attach_single_faces(m: _Mesh, chart: np.ndarray, tri: np.ndarray):
    """Put each one-face chart back into a neighbouring chart: unfolded across a shared edge (its
    shape as in 3-D, at that chart's scale, on the far side of the edge), where it overlaps none of
    that chart's triangles. A single face that fits nowhere stays a chart of its own."""
    sizes = np.bincount(chart)
    single = np.nonzero(sizes[chart] == 1)[0]
    if len(single) == 0:
        return chart, tri
    f, v = m.f, m.v
    chart, tri = chart.copy(), tri.copy()
    members = _members(chart)
    p = m.pairs
    nb = {}
    both = np.r_[p, p[:, ::-1]]
    for a, b in both[sizes[chart[both[:, 0]]] == 1].tolist():
        nb.setdefault(a, []).append(b)
    for s in single:
        s = int(s)
        for n in nb.get(s, []):
            c = int(chart[n])
            if c == chart[s] or len(members.get(c, ())) == 0:
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
            idx = members[c]
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
            if _overlaps(new, tri[idx], scale):
                continue
            tri[s] = new
            members[c] = np.r_[idx, s]
            members.pop(int(chart[s]), None)
            chart[s] = c
            break
    return _dense(chart), tri
