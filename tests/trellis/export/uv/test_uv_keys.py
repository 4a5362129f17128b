"""The UV layout's key tables and graphs: ``chart_mesh.unique_keys`` gives numpy's ``np.unique`` arrays, and
``overlap.charts_that_may_overlap``'s half-edges sorted once clear the same charts as the sets of keys it replaced
(on meshes with charts wound against themselves, edges of three faces and repeated vertices)."""
from __future__ import annotations

import numpy as np
import pytest

from trellis.export.uv import chart_mesh, overlap
from trellis.export.uv.chart_mesh import unique_keys


@pytest.mark.parametrize("size", [1, 7, 1000, 5000, 1 << 20])
@pytest.mark.parametrize("n", [0, 1, 50, 4000])
def test_unique_keys_equals_numpy(size, n):
    rng = np.random.default_rng(size + n)
    keys = rng.integers(0, size, (n, 3)) if n else np.zeros((0, 3), np.int64)
    want = np.unique(keys.reshape(-1), return_index=True, return_inverse=True)
    got = unique_keys(keys, size, return_index=True)
    for a, b in zip(got, want):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    got = unique_keys(keys, size)
    assert len(got) == 2 and np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[2])


def test_unique_keys_past_the_table_sorts(monkeypatch):
    # the table's bound is a memory bound: beyond it numpy's own np.unique answers (the same arrays)
    keys = np.array([[5, 3, 5], [9, 3, 0]])
    want = np.unique(keys.reshape(-1), return_index=True, return_inverse=True)
    monkeypatch.setattr(chart_mesh, "KEY_TABLE_LIMIT", 4)
    for a, b in zip(unique_keys(keys, 10, return_index=True), want):
        assert np.array_equal(a, b)


def charts_that_may_overlap_by_sets(faces, chart, tri, tol=1e-6):
    """The filter as it was written with np.unique and np.isin over the half-edges' keys."""
    f = np.asarray(faces, np.int64).reshape(-1, 3)
    chart = np.asarray(chart, np.int64)
    k = int(chart.max()) + 1
    out = np.zeros(k, bool)
    out[chart[overlap.signed_area(tri) <= 0]] = True
    nv = int(f.max()) + 1
    corner = chart[:, None] * nv + f
    to = f[:, [1, 2, 0]]
    _, uses = np.unique((corner * nv + to).reshape(-1), return_inverse=True)
    twice = np.bincount(uses) > 1
    out[chart[twice[uses].reshape(-1, 3).any(1)]] = True
    nxt, prv = tri[:, [1, 2, 0]] - tri, tri[:, [2, 0, 1]] - tri
    angle = np.arctan2(nxt[..., 0] * prv[..., 1] - nxt[..., 1] * prv[..., 0],
                       nxt[..., 0] * prv[..., 0] + nxt[..., 1] * prv[..., 1])
    corner_to = chart[:, None] * nv + to
    border = ~np.isin(corner * nv + to, corner_to * nv + f)
    keys, inv = np.unique(corner.reshape(-1), return_inverse=True)
    turn = np.bincount(inv, weights=angle.reshape(-1), minlength=len(keys))
    on_border = np.isin(keys, np.r_[corner[border], corner_to[border]])
    wrong = np.where(on_border, turn > 2 * np.pi - tol, np.abs(turn - 2 * np.pi) > tol)
    out[keys[wrong] // nv] = True
    fi, ci = np.nonzero(border)
    p0, p1 = tri[fi, ci], tri[fi, (ci + 1) % 3]
    va, vb = f[fi, ci], to[fi, ci]
    sa, sb = overlap.box_pairs(np.minimum(p0, p1), np.maximum(p0, p1), chart[fi])
    keep = (va[sa] != va[sb]) & (va[sa] != vb[sb]) & (vb[sa] != va[sb]) & (vb[sa] != vb[sb])
    sa, sb = sa[keep], sb[keep]
    if len(sa):
        scale = np.maximum(np.abs(p1[sa] - p0[sa]).max(1), np.abs(p1[sb] - p0[sb]).max(1)) ** 2 * tol
        d1, d2 = overlap.orient(p0[sb], p1[sb], p0[sa]), overlap.orient(p0[sb], p1[sb], p1[sa])
        d3, d4 = overlap.orient(p0[sa], p1[sa], p0[sb]), overlap.orient(p0[sa], p1[sa], p1[sb])
        meet = (np.minimum(d1, d2) <= scale) & (np.maximum(d1, d2) >= -scale) & \
               (np.minimum(d3, d4) <= scale) & (np.maximum(d3, d4) >= -scale)
        out[chart[fi[sa[meet]]]] = True
    return out


def grid(n):
    """An n x n grid of squares cut into triangles, counter-clockwise: points [V,2], faces [F,3]."""
    y, x = np.mgrid[0:n + 1, 0:n + 1]
    pts = np.stack([x.ravel(), y.ravel()], 1).astype(np.float64)
    i = (np.arange(n)[:, None] * (n + 1) + np.arange(n)[None, :]).ravel()
    f = np.concatenate([np.stack([i, i + 1, i + n + 2], 1), np.stack([i, i + n + 2, i + n + 1], 1)])
    return pts, f


@pytest.mark.parametrize("seed", range(12))
def test_sorted_half_edges_clear_the_same_charts(seed):
    rng = np.random.default_rng(seed)
    pts, f = grid(16)
    step = rng.integers(2, 5)
    chart = (pts[f].mean(1) // step).astype(np.int64) @ np.array([1, 64])
    chart = np.unique(chart, return_inverse=True)[1]
    kind = (chart + seed) % 5                             # 0: faces flipped, 1: a face repeated, 2: jittered
    f = f.copy()
    flip = (kind == 0) & (rng.random(len(f)) < 0.3)       # faces wound against their neighbours
    f[flip] = f[flip][:, ::-1]
    repeat = rng.choice(np.flatnonzero(kind == 1), 2)     # edges of three faces
    f = np.concatenate([f, f[repeat], [[0, 0, 1]]])       # and a face on a repeated vertex
    chart = np.concatenate([chart, chart[repeat], [chart[0]]])
    kind = np.concatenate([kind, kind[repeat], [kind[0]]])
    tri = pts[f] + rng.normal(scale=0.3, size=(len(f), 3, 2)) * (kind == 2)[:, None, None]
    want = charts_that_may_overlap_by_sets(f, chart, tri)
    assert want.any() and not want.all()
    assert np.array_equal(overlap.charts_that_may_overlap(f, chart, tri), want)
    clean = grid(16)[1]                                   # one consistently wound sheet per chart: all clear
    assert not overlap.charts_that_may_overlap(clean, chart[:len(clean)], pts[clean]).any()


@pytest.mark.parametrize("seed", range(8))
def test_components_label_by_lowest_node(seed):
    # mesh_graph.components (scipy's weak components of the edges as given) against a union-find here: the same
    # parts, numbered in the order of their lowest node, for ascending and unordered edges, repeats and loops
    from trellis.export.mesh_graph import components
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 400))
    m = int(rng.integers(0, 2 * n))
    a, b = rng.integers(0, n, m), rng.integers(0, n, m)
    parent = list(range(n))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i
    for x, y in zip(a.tolist(), b.tolist()):
        parent[root(x)] = root(y)
    first = {}
    want = np.array([first.setdefault(root(i), len(first)) for i in range(n)])
    for order in (np.argsort(a, kind="stable"), rng.permutation(m)):
        k, got = components(n, a[order], b[order])
        assert k == len(first) and got.dtype == np.int64 and np.array_equal(got, want)
