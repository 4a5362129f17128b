"""The quad remesher on small closed and open meshes: quads, target, manifold, closed stays closed, distance."""
import numpy as np
import pytest
import trimesh

from trellis.export.quads import (
    edge_counts,
    hausdorff_share,
    quads_from_pairs,
    read_polygon_obj,
    remesh_quads,
    triangulate_quads,
)
from trellis.export.quads.remesh import polygons_to_quads


@pytest.mark.parametrize("shape,target", [("sphere", 1000), ("torus", 800)])
def test_closed_shapes_become_clean_quads_near_the_target(shape, target):
    mesh = trimesh.creation.icosphere(4) if shape == "sphere" else trimesh.creation.torus(1.0, 0.3)
    assert edge_counts(mesh.faces)[1] == 0
    result = remesh_quads(mesh.vertices, mesh.faces, target)
    report = result.report
    assert report.quad_share >= 0.95
    assert abs(report.faces_made - target) <= 0.10 * target
    assert report.non_manifold_edges == 0
    assert report.boundary_edges == 0
    assert report.hausdorff < 0.01
    assert report.warnings == []
    assert len(result.mesh.faces) == report.faces_made
    # Every vertex used, positions in the source's frame.
    assert np.unique(result.mesh.faces[result.mesh.faces >= 0]).size == len(result.mesh.vertices)
    assert np.allclose(result.mesh.vertices.min(0), mesh.vertices.min(0), atol=0.05)


def test_a_target_it_cannot_meet_is_warned_about():
    mesh = trimesh.creation.icosphere(2)
    report = remesh_quads(mesh.vertices, mesh.faces, 3).report
    assert report.target_miss > 0.10
    assert any("target" in w for w in report.warnings)


def test_bad_target_is_refused():
    mesh = trimesh.creation.icosphere(1)
    with pytest.raises(ValueError):
        remesh_quads(mesh.vertices, mesh.faces, 0)


def test_edge_counts_find_holes_and_non_manifold_edges():
    quads = np.array([[0, 1, 2, 3]])
    assert edge_counts(quads) == (0, 4)
    fin = np.array([[0, 1, 2, -1], [0, 1, 3, -1], [0, 1, 4, -1]])
    non_manifold, boundary = edge_counts(fin)
    assert non_manifold == 1 and boundary == 6


def test_hausdorff_sees_a_moved_surface():
    mesh = trimesh.creation.icosphere(3)
    moved = mesh.vertices * 1.05
    share = hausdorff_share(moved, mesh.faces, mesh.vertices, mesh.faces, samples=2000)
    assert share == pytest.approx(0.05 / (2 * np.sqrt(3)), rel=0.1)  # radius 1 -> 1.05, box diagonal 2 sqrt 3
    assert hausdorff_share(mesh.vertices, mesh.faces, mesh.vertices, mesh.faces, samples=2000) < 1e-9


def test_triangulation_splits_along_the_shorter_diagonal_and_is_recoverable():
    vertices = np.array([[0, 0, 0], [2, 0, 0], [3, 1, 0], [0, 1, 0], [5, 5, 0]], float)
    faces = np.array([[0, 1, 2, 3], [1, 4, 2, -1]])
    tris, quad_count = triangulate_quads(vertices, faces)
    assert quad_count == 1 and len(tris) == 3
    # 1-3 (length sqrt 5) is shorter than 0-2 (sqrt 10): both triangles hold the 1-3 diagonal.
    assert {1, 3} <= set(tris[0]) and {1, 3} <= set(tris[1])
    back = quads_from_pairs(tris, quad_count)
    assert back[1].tolist() == [1, 4, 2, -1]
    ring = back[0].tolist()
    k = ring.index(0)
    assert ring[k:] + ring[:k] == [0, 1, 2, 3]


def test_polygon_obj_reading_and_ngon_split(tmp_path):
    path = tmp_path / "p.obj"
    path.write_text("v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nv -1 .5 0\nf 1//1 2//1 3//1 4//1 5//1\nf 1 2 3\n")
    vertices, polygons = read_polygon_obj(str(path))
    assert vertices.shape == (5, 3) and polygons == [[0, 1, 2, 3, 4], [0, 1, 2]]
    faces = polygons_to_quads(polygons)
    assert faces.tolist() == [[0, 1, 2, 3], [0, 3, 4, -1], [0, 1, 2, -1]]


def test_a_quad_cut_by_a_seam_is_joined_where_its_triangle_fits():
    from trellis.export.quads import merge_pairs
    from trellis.export.quads.rejoin import rejoin_cut_quads
    # a unit quad 0-1-2-3 whose second triangle (0, 2, 3) sits in its own chart (copies 4, 5, 6) far away in UV
    v = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0], [1, 1, 0], [0, 1, 0]], np.float32)
    uv = np.array([[.1, .1], [.3, .1], [.3, .3], [.1, .3], [.6, .6], [.8, .8], [.6, .8]], np.float32)
    f = np.array([[0, 1, 2], [4, 5, 6]])
    nv, nf, nuv, joined = rejoin_cut_quads(v, f, uv, 1, 64)
    assert joined == 1
    sizes, flat = merge_pairs(nf, 1)
    assert sizes.tolist() == [4]
    # the moved corner lands where the quad's own map puts it: (0, 1) -> (.1, .3)
    assert np.allclose(nuv[nf[1]], [[.1, .1], [.3, .3], [.1, .3]], atol=1e-6)
    # another chart just where the triangle would go: it stays where it was
    v2 = np.concatenate([v, [[5, 5, 5], [6, 5, 5], [5, 6, 5]]]).astype(np.float32)
    uv2 = np.concatenate([uv, [[.05, .32], [.2, .32], [.05, .45]]]).astype(np.float32)
    f2 = np.array([[0, 1, 2], [4, 5, 6], [7, 8, 9]])
    _, nf2, _, joined2 = rejoin_cut_quads(v2, f2, uv2, 1, 64)
    assert joined2 == 0 and (nf2 == f2).all()


def test_holes_are_the_open_boundary_loops_and_the_report_says_them():
    from trellis.export.quads import measure_quads
    from trellis.export.quads.measure import hole_count

    grid = np.array([[4 * r + c, 4 * r + c + 1, 4 * r + c + 5, 4 * r + c + 4] for r in range(3) for c in range(3)])
    assert hole_count(grid) == 1                                       # a sheet: its rim
    assert hole_count(np.delete(grid, 4, axis=0)) == 2                 # the rim and the middle quad's hole
    box = trimesh.creation.box()
    assert hole_count(box.faces) == 0
    open_box = box.faces[2:]                                           # one side's two triangles gone
    report = measure_quads(box.vertices, np.pad(open_box, ((0, 0), (0, 1)), constant_values=-1), box.vertices,
                           box.faces, len(open_box), samples=200)
    assert report.as_dict()["holes"] == 1 and report.boundary_edges == 4


def test_a_target_too_small_for_the_shape_is_asked_again_larger_and_then_refused_clearly():
    from desktop.jobs.failures import classify_failure
    from trellis.export import QuadTargetError

    mesh = trimesh.creation.icosphere(3)        # one quad asked: the remesher makes none at the first ask
    report = remesh_quads(mesh.vertices, mesh.faces, 1).report
    assert report.faces_made > 0 and any("target" in w for w in report.warnings)
    kind, words = classify_failure(QuadTargetError("the quad remesh made no faces for 1 quads on this shape"), ".",
                                   "cpu")
    assert kind == "input" and words.startswith("bad input: the quad remesh made no faces")
