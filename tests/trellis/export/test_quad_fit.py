"""The quad mesh's corners fitted to the source: the largest gap between the surfaces shrinks, nothing turns over."""
import numpy as np
import trimesh

from trellis.export.quads import hausdorff_share, remesh_quads
from trellis.export.quads.fit import fit_corners
from trellis.export.quads.measure import closest_on_triangles, fan_triangles


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
    plain = remesh_quads(v, sphere.faces, 200, fit=False, hausdorff_samples=5000)
    fitted = fit_corners(plain.mesh.vertices, plain.mesh.faces, v, sphere.faces, samples=5000)
    before = hausdorff_share(plain.mesh.vertices, plain.mesh.faces, v, sphere.faces, samples=5000)
    after = hausdorff_share(fitted, plain.mesh.faces, v, sphere.faces, samples=5000)
    assert after < 0.85 * before, (before, after)
    tris = fan_triangles(plain.mesh.faces)
    v0 = plain.mesh.vertices.astype(np.float64)
    n0 = np.cross(v0[tris[:, 1]] - v0[tris[:, 0]], v0[tris[:, 2]] - v0[tris[:, 0]])
    n1 = np.cross(fitted[tris[:, 1]] - fitted[tris[:, 0]], fitted[tris[:, 2]] - fitted[tris[:, 0]])
    assert np.all(np.einsum("ij,ij->i", n0, n1) >= 0)
