"""The quad remesh's closest-point search equals a comparison with every triangle: near the surface and far from it,
on triangles of very different sizes, slivers and degenerate ones, fetched whole or in pieces."""
import numpy as np
import pytest
import trimesh

from trellis.export.quads import nearest, remesh_quads
from trellis.export.quads.fit import fit_corners
from trellis.export.quads.measure import edge_counts, edge_table, point_triangle_distance, polygon_edges
from trellis.export.quads.nearest import NearestTriangles


def _brute(points, vertices, tris):
    """Every point against every triangle (measure.point_triangle_distance), in rows of a few points."""
    a, b, c = (vertices[tris[:, k]] for k in range(3))
    out = np.empty(len(points))
    for s in range(0, len(points), 32):
        rows = points[s:s + 32, None, :]
        shape = (len(rows), len(tris), 3)
        out[s:s + 32] = point_triangle_distance(rows, *(np.broadcast_to(x, shape) for x in (a, b, c))).min(axis=1)
    return out


def _check(points, vertices, tris):
    vertices, tris = np.asarray(vertices, np.float64), np.asarray(tris, np.int64)
    closest, tri, bary = NearestTriangles(vertices, tris).closest(points)
    brute = _brute(points, vertices, tris)
    assert np.allclose(np.linalg.norm(points - closest, axis=1), brute, rtol=1e-12, atol=1e-12)
    # the closest point lies on the triangle named, where its weights put it
    on_tri = point_triangle_distance(closest, *(vertices[tris[tri, k]] for k in range(3)))
    assert np.all(on_tri < 1e-9)
    assert np.allclose((vertices[tris[tri]] * bary[..., None]).sum(axis=1), closest, atol=1e-9)
    assert np.all(bary >= 0) and np.allclose(bary.sum(axis=1), 1)


@pytest.mark.parametrize("reach", [0.0, 0.01, 0.2, 1.0, 10.0])
def test_points_near_and_far_from_a_sphere(reach):
    # far points (a fifth of the radius and more) are the ones a search by nearest centroids used to widen on
    sphere = trimesh.creation.icosphere(3)
    rng = np.random.default_rng(1)
    directions = rng.normal(size=(300, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    points = directions * (1.0 + reach * rng.uniform(-1, 1, (300, 1)))
    _check(points, sphere.vertices, sphere.faces)


def test_triangles_of_very_different_sizes_slivers_and_degenerate_ones():
    rng = np.random.default_rng(2)
    vertices = rng.normal(size=(120, 3))
    tris = rng.integers(0, 120, (200, 3))
    tris[:10, 2] = tris[:10, 1]                                       # two corners the same
    tris[10:12] = tris[10:12, :1]                                     # all three the same
    # a sliver (height 1e-9 on a unit base), its collinear twin, a tiny triangle and a huge one
    extra = np.array([[0, 0, 5], [1, 0, 5], [0.5, 1e-9, 5], [2, 0, 5], [1e-4, 0, 3], [0, 1e-4, 3], [0, 0, 3.0001],
                      [-50, -50, -4], [50, -50, -4], [0, 80, -4]])
    base = len(vertices)
    vertices = np.concatenate([vertices, extra])
    tris = np.concatenate([tris, base + np.array([[0, 1, 2], [0, 1, 3], [4, 5, 6], [7, 8, 9]])])
    points = np.concatenate([rng.normal(scale=2.0, size=(400, 3)), vertices[tris[-4:]].mean(axis=1),
                             [[0.5, 3e-10, 5], [0.5, -0.2, 5.1], [0.3, 0.3, -3.9], [60, 60, 0]]])
    _check(points, vertices, tris)


def test_a_far_crowd_fetched_in_pieces_gives_the_same_answer(monkeypatch):
    sphere = trimesh.creation.icosphere(4)
    rng = np.random.default_rng(3)
    directions = rng.normal(size=(500, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    points = directions * rng.uniform(0.5, 3.0, (500, 1))
    whole = NearestTriangles(sphere.vertices, sphere.faces).closest(points)
    monkeypatch.setattr(nearest, "PAIR_BUDGET", 500)
    monkeypatch.setattr(nearest, "PAIR_BLOCK", 1000)
    monkeypatch.setattr(nearest, "POINT_BLOCK", 97)
    pieces = NearestTriangles(sphere.vertices, sphere.faces).closest(points)
    assert np.array_equal(whole[0], pieces[0]) and np.array_equal(whole[1], pieces[1])
    assert np.allclose(np.linalg.norm(points - whole[0], axis=1), np.abs(np.linalg.norm(points, axis=1) - 1),
                       atol=0.02)                                     # the icosphere is within 1 % of the sphere


def test_the_source_search_built_once_gives_the_fit_the_same_corners():
    sphere = trimesh.creation.icosphere(4)
    v = sphere.vertices * (1 + 0.3 * np.exp(-np.linalg.norm(sphere.vertices - [0, 0, 1], axis=1) ** 2 / 0.05))[:, None]
    plain = remesh_quads(v, sphere.faces, 200, fit=False, hausdorff_samples=2000)
    own = fit_corners(plain.mesh.vertices, plain.mesh.faces, v, sphere.faces, samples=3000)
    shared = fit_corners(plain.mesh.vertices, plain.mesh.faces, v, sphere.faces, samples=3000,
                         source=NearestTriangles(v, sphere.faces))
    assert np.array_equal(own, shared)
    report = remesh_quads(v, sphere.faces, 200, hausdorff_samples=2000).report
    assert set(report.stage_seconds) == {"remesh", "snap", "fit", "measure"}


def test_edge_table_counts_each_edge_as_unique_rows_do():
    rng = np.random.default_rng(4)
    quads = rng.integers(0, 50, (300, 4))
    quads[::3, 3] = -1
    edges = polygon_edges(quads)
    rows, counts = np.unique(edges, axis=0, return_counts=True)
    table, table_counts = edge_table(quads)
    assert np.array_equal(table, rows) and np.array_equal(table_counts, counts)
    assert edge_counts(quads) == (int((counts > 2).sum()), int((counts == 1).sum()))
    assert edge_counts(np.zeros((0, 4), np.int64)) == (0, 0)
