"""Chart borders cut straight at their teeth (``uv.borders.straighten_borders``) and the bitmap packer's chart
orientation, masks and scale search (``uv.pack_bitmap``, ``uv.orient``, ``uv.masks``): texel use."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from trellis.export.uv import borders, pack_bitmap, segment
from trellis.export.uv.chart_mesh import ChartMesh, label_components
from trellis.export.uv.masks import chart_masks
from trellis.export.uv.orient import orient_charts
from trellis.export.uv.pack_bitmap import pack_charts


def _border_length(mesh, label):
    cross = label[mesh.pairs[:, 0]] != label[mesh.pairs[:, 1]]
    return float(borders.shared_edge_lengths(mesh)[cross].sum())


def _delaunay_square(n, seed):
    """A flat mesh of ``n`` random points in the unit square (Delaunay, counter-clockwise faces)."""
    from scipy.spatial import Delaunay
    rng = np.random.default_rng(seed)
    p = rng.random((n, 2))
    f = Delaunay(p).simplices.astype(np.int64)
    e1, e2 = p[f[:, 1]] - p[f[:, 0]], p[f[:, 2]] - p[f[:, 0]]
    cw = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0] < 0
    f[cw] = f[cw][:, [0, 2, 1]]
    return np.c_[p, np.zeros(n)], f, rng


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_straightening_cuts_the_teeth_the_shortening_leaves(seed):
    # Voronoi cells of 8 seeds on an irregular triangulation: borders along the triangles' edges, jagged.
    # The face-by-face shortening stops with teeth of several faces around one vertex (a face of such a
    # tooth shares more edge length with its own chart); cutting them at their vertices shortens the
    # borders by 3-5 % more (measured 0.954, 0.967, 0.955, 0.953), each chart still one disc.
    v, f, rng = _delaunay_square(3000, seed)
    mesh = ChartMesh(v, f)
    cells = rng.random((8, 2))
    label = np.argmin(((mesh.centroid[:, None, :2] - cells[None]) ** 2).sum(2), 1)
    short = label_components(mesh, borders.shorten_borders(mesh, label, 20))
    again = borders.shorten_borders(mesh, short, 20)
    assert _border_length(mesh, again) >= _border_length(mesh, short) - 1e-12      # shortening is done
    straight = borders.straighten_borders(mesh, short, 3)
    ratio = _border_length(mesh, straight) / _border_length(mesh, short)
    print(seed, ratio)
    assert ratio < 0.975
    k = int(short.max()) + 1
    assert np.array_equal(np.unique(straight), np.arange(k))                        # no chart lost
    assert label_components(mesh, straight).max() + 1 == k                  # none fell apart
    assert not segment.bad_charts(mesh, straight).any()                              # discs


def test_straightening_keeps_every_chart_whole_and_a_disc():
    # many small charts with jagged borders on a closed surface: the moves only where the rim of the faces
    # moved lies inside the chart giving them up, and per sweep three edges apart at least. Without the
    # first rule 4 charts over these 20 labellings fell apart; without the second (moves that only shared
    # no face) one
    trimesh = pytest.importorskip("trimesh")
    s = trimesh.creation.icosphere(subdivisions=4)
    mesh = ChartMesh(np.asarray(s.vertices, np.float64), np.asarray(s.faces, np.int64))
    moved = 0
    for seed in range(20):
        rng = np.random.default_rng(seed)
        cells = rng.normal(size=(60, 3))
        cells /= np.linalg.norm(cells, axis=1, keepdims=True)
        label = np.argmin(((mesh.centroid[:, None, :] - cells[None]) ** 2).sum(2), 1)
        label = label_components(mesh, label)
        bad = segment.bad_charts(mesh, label)
        straight = borders.straighten_borders(mesh, label, 3)
        moved += int((straight != label).sum())
        kept = np.unique(straight)                  # (a chart of a face or two may go whole to a neighbour)
        gone = np.setdiff1d(np.unique(label), kept)
        assert (np.bincount(label)[gone] <= 3).all(), seed
        assert label_components(mesh, straight).max() + 1 == len(kept), seed
        assert not (segment.bad_charts(mesh, straight)[kept] & ~bad[kept]).any(), seed
        assert _border_length(mesh, straight) < _border_length(mesh, label)
    assert moved > 1000


def test_geometric_charts_end_with_straightened_borders(monkeypatch):
    trimesh = pytest.importorskip("trimesh")
    s = trimesh.creation.icosphere(subdivisions=4)
    v, f = np.asarray(s.vertices, np.float64), np.asarray(s.faces, np.int64)
    v = v * (1 + 0.15 * np.sin(5 * v[:, :1]) * np.cos(4 * v[:, 1:2]))
    mesh = ChartMesh(v, f)
    monkeypatch.setattr(segment, "STRAIGHTEN_SWEEPS", 0)
    plain = segment.geometric_charts(v, f, mesh=mesh)
    monkeypatch.setattr(segment, "STRAIGHTEN_SWEEPS", 3)
    straight = segment.geometric_charts(v, f, mesh=mesh)
    assert straight.max() == plain.max() and (straight != plain).any()
    assert _border_length(mesh, straight) < _border_length(mesh, plain)
    assert not segment.bad_charts(mesh, straight).any()


def _l_shape(angle, offset):
    """An L of three unit squares (two triangles each) in a 2 x 2 box, turned by ``angle``: [6,3,2]."""
    sq = []
    for x, y in ((0, 0), (1, 0), (0, 1)):
        a, b, c, d = (x, y), (x + 1, y), (x + 1, y + 1), (x, y + 1)
        sq += [(a, b, c), (a, c, d)]
    t = np.asarray(sq, np.float64)
    r = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return t @ r.T + offset


def _box_area(tri, chart, k):
    p = tri[chart == k].reshape(-1, 2)
    return float(np.prod(p.max(0) - p.min(0)))


def test_box_orientation_puts_the_smallest_box_upright():
    # an L of three squares (its principal axis along its diagonal: a box of area 6 turned that way; the
    # smallest box is its own 2 x 2 one), a thin rectangle turned by 0.4 rad, and a chart of one flat
    # sliver (no hull: kept as it is)
    rect = np.array([[[0, 0], [5, 0], [5, 1]], [[0, 0], [5, 1], [0, 1]]], np.float64)
    r = np.array([[np.cos(0.4), -np.sin(0.4)], [np.sin(0.4), np.cos(0.4)]])
    sliver = np.array([[[0, 0], [1, 0], [2, 0]]], np.float64)
    tri = np.concatenate([_l_shape(0.3, (3.0, -1.0)), rect @ r.T + 7.0, sliver])
    chart = np.r_[np.zeros(6, np.int64), np.ones(2, np.int64), 2]
    box = orient_charts(tri, chart, 3, "box")
    axis = orient_charts(tri, chart, 3, "axis")
    assert _box_area(box, chart, 0) == pytest.approx(4.0, rel=1e-9)
    assert _box_area(axis, chart, 0) > 5.9
    assert _box_area(box, chart, 1) == pytest.approx(5.0, rel=1e-9)
    assert np.isfinite(box).all()
    # turned, not deformed: every triangle keeps its edge lengths and orientation
    for t in (box, axis):
        assert np.allclose(np.linalg.norm(t - t[:, [1, 2, 0]], axis=2),
                           np.linalg.norm(tri - tri[:, [1, 2, 0]], axis=2))
        e1, e2 = t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]
        g1, g2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
        assert np.allclose(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0], g1[:, 0] * g2[:, 1] - g1[:, 1] * g2[:, 0])


def _clip_band(tri, lo, hi):
    """The triangle ``tri`` (3 Fraction points) cut to lo <= y <= hi: its polygon's corners (exact)."""
    pts = list(tri)
    for keep in (lambda p: p[1] >= lo, lambda p: p[1] <= hi):
        line = lo if keep((0, lo + 1)) and not keep((0, lo - 1)) else hi
        out = []
        for i, p in enumerate(pts):
            q = pts[(i + 1) % len(pts)]
            if keep(p):
                out.append(p)
            if keep(p) != keep(q):
                t = (line - p[1]) / (q[1] - p[1])
                out.append((p[0] + t * (q[0] - p[0]), line))
        pts = out
        if not pts:
            break
    return pts


def test_chart_masks_hold_the_texels_a_triangle_overlaps_and_no_more():
    # exact reference (fractions): a texel is set where a triangle's inside overlaps the texel's inside and
    # may be set where they only touch (closed sets meet); never elsewhere. Corners on quarter texels: level
    # edges, corners on texel lines, slivers; plus random ones
    rng = np.random.default_rng(1)
    q = np.concatenate([rng.integers(0, 33, (150, 3, 2)) / 4.0, rng.random((50, 3, 2)) * 8])
    q[:10, 1, 1] = q[:10, 0, 1]                                           # level edges
    q[10:20, 2] = q[10:20, 0] + 0.25 * (q[10:20, 1] - q[10:20, 0])        # flat (on a line)
    chart = np.repeat(np.arange(20), 10)
    h, w, off, flat = chart_masks(q, chart, 20)
    for k in range(20):
        mask = flat[off[k]:off[k + 1]].reshape(h[k], w[k])
        must = np.zeros_like(mask)
        may = np.zeros_like(mask)
        for t in q[chart == k]:
            tf = [(Fraction(float(x)), Fraction(float(y))) for x, y in t]
            for j in range(int(np.floor(t[:, 1].min())), int(np.floor(t[:, 1].max())) + 1):
                poly = _clip_band(tf, Fraction(j), Fraction(j + 1))
                if not poly:
                    continue
                xs = [p[0] for p in poly]
                lo, hi = min(xs), max(xs)
                area = sum(poly[i][0] * poly[(i + 1) % len(poly)][1] - poly[(i + 1) % len(poly)][0] * poly[i][1]
                           for i in range(len(poly)))
                for i in range(w[k]):
                    if lo <= i + 1 and hi >= i:
                        may[j, i] = True
                        if area != 0 and max(lo, i) < min(hi, i + 1):
                            must[j, i] = True
        assert not (must & ~mask).any(), k
        assert not (mask & ~may).any(), k


def test_bitmap_packer_goes_on_by_small_steps_when_no_layout_fits(monkeypatch):
    # three layouts of the scale search run past the top (by a row, as greedy layouts do by chance): the
    # next tries 3 % smaller, not 20 % (the quick cleaned nut fell to texel use 0.45 so)
    rng = np.random.default_rng(0)
    tri, chart = [], []
    for k in range(30):
        a, b = rng.uniform(0.3, 1.0, 2)
        tri += [[[0, 0], [a, 0], [a, b]], [[0, 0], [a, b], [0, b]]]
        chart += [k, k]
    tri, chart = np.asarray(tri, np.float64), np.asarray(chart, np.int64)
    real = pack_bitmap.bitmap_layout
    calls = []

    def overflow(q0, chart, nchart, scale, size, padding, *args):
        calls.append(scale)
        got = real(q0, chart, nchart, scale, size, padding, *args)
        return (got[0], size + 1) if len(calls) <= pack_bitmap.BITMAP_ATTEMPTS else got

    monkeypatch.setattr(pack_bitmap, "bitmap_layout", overflow)
    info = {}
    uv = pack_charts(tri, chart, 256, 2, info=info)
    assert len(calls) > pack_bitmap.BITMAP_ATTEMPTS
    assert calls[pack_bitmap.BITMAP_ATTEMPTS] >= 0.9 * calls[pack_bitmap.BITMAP_ATTEMPTS - 1]
    assert info["fill"] > 0.75
    assert np.isfinite(uv).all() and uv.min() >= 0 and uv.max() <= 1


def testedge_texels_are_the_set_texels_beside_an_unset_one():
    """The packer's quick test of an offset reads the grown mask's edge only: the set texels with an unset or outside
    4-neighbour (a hole's rim included), so an overlap it finds is an overlap of the whole mask."""
    from trellis.export.uv.pack_bitmap import edge_texels

    g = np.zeros((7, 9), bool)
    g[1:6, 1:8] = True
    g[3, 4] = False                                        # a one-texel hole
    g[0, 0] = True                                         # a set texel on the array's border
    edge = np.zeros_like(g)
    edge[edge_texels(g)] = True
    padded = np.pad(g, 1)
    beside_unset = ~(padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:])
    assert np.array_equal(edge, g & beside_unset)
    assert edge[2, 4] and edge[3, 3] and edge[0, 0] and not edge[2, 2]
    rng = np.random.default_rng(0)
    for _ in range(50):                                    # an overlap on the edge is an overlap
        occ = rng.random((7, 9)) < 0.05
        if (occ[edge_texels(g)]).any():
            assert (occ & g).any()
