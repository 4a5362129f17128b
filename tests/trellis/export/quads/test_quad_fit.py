"""The quad mesh's corners fitted to the source: the largest gap between the surfaces shrinks, nothing turns over."""
import numpy as np
import trimesh

from trellis.export.quads import hausdorff_share, remesh_quads
from trellis.export.quads.fit import fit_corners
from trellis.export.quads.measure import (
           closest_on_triangles,
           distance_to_mesh,
           fan_triangles,
           point_triangle_distance,
)


def test_closest_points_come_with_their_triangle_and_weights():
    box = trimesh.creation.box((1.0, 2.0, 3.0))
    rng = np.random.default_rng(0)
    points = rng.uniform(-2, 2, (500, 3))
    closest, tri, bary = closest_on_triangles(points, box.vertices, box.faces)
    assert np.allclose((box.vertices[box.faces[tri]] * bary[..., None]).sum(axis=1), closest, atol=1e-9)
    half = np.array([0.5, 1.0, 1.5])
    outside = np.linalg.norm(np.maximum(np.abs(points) - half, 0), axis=1)
    inside = np.all(np.abs(points) < half, axis=1)
    want = np.where(inside, np.min(half - np.abs(points), axis=1), outside)           # the box's exact distance
    assert np.allclose(np.linalg.norm(points - closest, axis=1), want, atol=1e-6)


def test_fitting_the_corners_lowers_the_largest_gap_and_turns_no_face_over():
    # a sphere with a bump: the flat quads cut across the spike's tip until the corners are fitted
    sphere = trimesh.creation.icosphere(4)
    v = sphere.vertices * (1 + 0.35 * np.exp(-np.linalg.norm(sphere.vertices - [0, 0, 1], axis=1) ** 2 / 0.05))[:, None]
    ratio, plain, fitted = _fit_ratio(v, sphere.faces, 200)
    assert ratio < 0.45, ratio
    tris = fan_triangles(plain.faces)
    v0 = plain.vertices.astype(np.float64)
    n0 = np.cross(v0[tris[:, 1]] - v0[tris[:, 0]], v0[tris[:, 2]] - v0[tris[:, 0]])
    n1 = np.cross(fitted[tris[:, 1]] - fitted[tris[:, 0]], fitted[tris[:, 2]] - fitted[tris[:, 0]])
    assert np.all(np.einsum("ij,ij->i", n0, n1) >= 0)


def _grid_and_long_triangle():
    # a fine grid with one long triangle above it, whose centroid lies far from the points it is nearest to
    n = 40
    xs = np.linspace(0.0, 1.0, n + 1)
    gx, gy = np.meshgrid(xs, xs, indexing="ij")
    vertices = np.stack([gx.ravel(), gy.ravel(), np.zeros(gx.size)], axis=1)
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    a = (i * (n + 1) + j).ravel()
    grid = np.concatenate([np.stack([a, a + n + 1, a + 1], 1), np.stack([a + 1, a + n + 1, a + n + 2], 1)])
    vertices = np.concatenate([vertices, [[-6.0, -6.0, 0.3], [6.0, -6.0, 0.3], [0.0, 6.0, 0.3]]])
    long_one = np.array([[len(vertices) - 3, len(vertices) - 2, len(vertices) - 1]])
    return vertices, np.concatenate([grid, long_one])


def test_distances_are_exact_next_to_a_long_triangle():
    vertices, tris = _grid_and_long_triangle()
    rng = np.random.default_rng(1)
    points = np.concatenate([rng.uniform([0, 0, 0.1], [1, 1, 0.5], (400, 3)), [[0.5, 0.5, 0.31]]])
    a, b, c = (np.broadcast_to(vertices[tris[:, k]], (len(points), len(tris), 3)) for k in range(3))
    brute = point_triangle_distance(points[:, None, :], a, b, c).min(axis=1)
    assert np.allclose(distance_to_mesh(points, vertices, tris), brute, atol=1e-12)
    assert abs(distance_to_mesh(points[-1:], vertices, tris)[0] - 0.01) < 1e-9      # the long triangle, not the grid
    closest, tri, bary = closest_on_triangles(points, vertices, tris)
    assert np.allclose(np.linalg.norm(points - closest, axis=1), brute, atol=1e-12)
    assert tri[-1] == len(tris) - 1
    assert np.allclose((vertices[tris[tri]] * bary[..., None]).sum(axis=1), closest, atol=1e-9)


def _fit_ratio(vertices, faces, target):
    plain = remesh_quads(vertices, faces, target, fit=False, hausdorff_samples=5000)
    fitted = fit_corners(plain.mesh.vertices, plain.mesh.faces, vertices, faces, samples=5000)
    before = hausdorff_share(plain.mesh.vertices, plain.mesh.faces, vertices, faces, samples=5000)
    after = hausdorff_share(fitted, plain.mesh.faces, vertices, faces, samples=5000)
    return after / before, plain.mesh, fitted


def test_fitting_closes_most_of_the_gap_over_a_steep_walled_pocket():
    # a dent with steep walls (as a scan's filled hole in a flat base): quads bridge it until the corners are fitted
    sphere = trimesh.creation.icosphere(4)
    depth = 0.15 / (1 + np.exp((np.linalg.norm(sphere.vertices - [0, 0, 1], axis=1) - 0.5) / 0.02))
    ratio, _, _ = _fit_ratio(sphere.vertices * (1 - depth)[:, None], sphere.faces, 200)
    assert ratio < 0.7, ratio
