"""The print-ready solid (trellis/export/formats/print_solid.py), judged by trimesh as the validator: watertight
(every edge used twice, wound consistently), outward (positive volume), genus kept (Euler number) and standing on
a flat, downward-facing base whose area matches the cut section. Shapes: trimesh's sphere and torus, and voxel
solids (a table on two legs, a ring foot, a column with a vertex row on the cut height) whose sections are
squares with many collinear points, where the cap's area is known exactly."""
import time

import numpy as np
import pytest
import trimesh

from trellis.export.formats.print3d import write_stl
from trellis.export.formats.print_cap import triangulate_polygon
from trellis.export.formats.print_solid import has_flat_base, print_solid
from trellis.export.placement import place


def voxel_solid(occupied):
    """(vertices, faces) of the closed surface of the filled cells of a bool grid [X,Y,Z] (unit cells, corners
    shared), each open cell side as two triangles wound outward."""
    occ = np.pad(np.asarray(occupied, dtype=bool), 1)
    shape = np.array(occ.shape) + 1
    quads = []
    for d in range(3):
        u, w = (d + 1) % 3, (d + 2) % 3
        eu, ew, ed = np.eye(3, dtype=np.int64)[[u, w, d]]
        for side in (1, -1):
            nb = np.roll(occ, -side, axis=d)
            cells = np.argwhere(occ & ~nb)
            base = cells + (ed if side > 0 else 0)
            corners = [base, base + eu, base + eu + ew, base + ew]
            quads.append(np.stack(corners if side > 0 else corners[::-1], 1))
    q = np.concatenate(quads)
    ids = np.ravel_multi_index(q.reshape(-1, 3).T, shape).reshape(-1, 4)
    used, inv = np.unique(ids, return_inverse=True)
    inv = inv.reshape(-1, 4)
    v = np.stack(np.unravel_index(used, shape), 1).astype(np.float64) - 1.0
    f = np.concatenate([inv[:, [0, 1, 2]], inv[:, [0, 2, 3]]])
    mesh = trimesh.Trimesh(v, f, process=False)
    assert mesh.is_watertight and mesh.volume == pytest.approx(np.count_nonzero(occupied))
    return v, f


def check_solid(v, f, info):
    """The result as trimesh sees it, after the checks every print solid passes; returns the trimesh mesh."""
    assert v.dtype == np.float64 and f.dtype == np.int64
    mesh = trimesh.Trimesh(v, f, process=False)
    assert mesh.is_watertight and mesh.is_winding_consistent and info["watertight"] is True
    assert mesh.volume > 0
    z0 = info["base_z"]
    low = v[:, 2] < z0 + 1e-9
    assert (v[:, 2] >= z0).all() and (v[low, 2] == z0).all()      # nothing below; the lowest all on the plane
    base = (v[f][:, :, 2] == z0).all(1)
    normals = mesh.face_normals[base]
    assert np.allclose(normals, [0, 0, -1], atol=1e-9)
    assert mesh.area_faces[base].sum() == pytest.approx(info["base_area"], rel=1e-9)
    assert has_flat_base(v, f)
    return mesh


def test_a_sphere_stands_on_a_cut_disc():
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=1.0)
    info = {}
    v, f = print_solid(sphere.vertices, sphere.faces, info=info)
    mesh = check_solid(v, f, info)
    assert info["base_z"] == pytest.approx(-0.96, abs=1e-9) and info["cut_height"] == pytest.approx(0.04, abs=1e-9)
    assert info["parts_dropped"] == 0 and info["holes_filled"] == 0 and info["area_dropped_share"] == 0.0
    assert mesh.euler_number == 2
    rim = np.hypot(v[v[:, 2] == info["base_z"], 0], v[v[:, 2] == info["base_z"], 1])
    assert np.pi * rim.min() ** 2 <= info["base_area"] <= np.pi * rim.max() ** 2      # the disc the rim bounds
    assert info["base_area"] == pytest.approx(np.pi * (1 - 0.96 ** 2), rel=0.03)       # the true sphere's
    cap = np.pi * 0.04 ** 2 * (3 - 0.04) / 3                                            # spherical cap cut off
    assert sphere.volume - mesh.volume == pytest.approx(cap, rel=0.1)
    # Above the plane the shape is untouched: every vertex there is one of the sphere's.
    above = v[v[:, 2] > info["base_z"] + 1e-3]
    dist = np.linalg.norm(above[:, None] - sphere.vertices[None], axis=2).min(1)
    assert dist.max() == 0.0
    assert not has_flat_base(sphere.vertices, sphere.faces)


def test_a_flat_torus_gets_a_ring_base_and_keeps_its_hole():
    torus = trimesh.creation.torus(1.0, 0.3, major_sections=96, minor_sections=48)
    info = {}
    v, f = print_solid(torus.vertices, torus.faces, info=info)
    mesh = check_solid(v, f, info)
    assert mesh.euler_number == 0                            # still genus one: the ring was not filled across
    r = np.hypot(v[v[:, 2] == info["base_z"], 0], v[v[:, 2] == info["base_z"], 1])
    outer, inner = r[r > 1.0], r[r < 1.0]                  # the rim's two loops, around the tube's centre line
    assert np.pi * (outer.min() ** 2 - inner.max() ** 2) <= info["base_area"] <= np.pi * (outer.max() ** 2
                                                                                           - inner.min() ** 2)
    width = np.sqrt(0.3 ** 2 - info["base_z"] ** 2)
    assert info["base_area"] == pytest.approx(4 * np.pi * 1.0 * width, rel=0.04)


def test_a_table_stands_on_both_legs():
    occ = np.zeros((8, 3, 6), dtype=bool)
    occ[:, :, 4:] = True                     # the top
    occ[0:2, 0:2, :] = True                  # two legs, 2 x 2 each, apart
    occ[6:8, 1:3, :] = True
    v, f = voxel_solid(occ)
    info = {}
    out_v, out_f = print_solid(v, f, info=info)
    mesh = check_solid(out_v, out_f, info)
    assert info["base_area"] == pytest.approx(8.0, abs=1e-9)                 # two 2 x 2 squares exactly
    assert mesh.euler_number == 2
    assert mesh.volume == pytest.approx(occ.sum() - 8 * info["cut_height"], abs=1e-9)
    base = out_f[(out_v[out_f][:, :, 2] == info["base_z"]).all(1)]
    islands = trimesh.graph.connected_components(trimesh.Trimesh(out_v, base, process=False).face_adjacency,
                                                 min_len=1, nodes=np.arange(len(base)))
    assert len(islands) == 2


def test_a_ring_foot_with_collinear_rim_points_is_capped_without_t_junctions():
    occ = np.zeros((6, 6, 3), dtype=bool)
    occ[:, :, :] = True
    occ[2:4, 2:4, :] = False                 # a square hole through it: the section is a square ring
    v, f = voxel_solid(occ)
    info = {}
    out_v, out_f = print_solid(v, f, base_cut=0.1, info=info)
    mesh = check_solid(out_v, out_f, info)
    assert info["base_area"] == pytest.approx(32.0, abs=1e-9)
    assert mesh.euler_number == 0


def test_a_vertex_row_on_the_cut_height_moves_the_plane_off_it():
    occ = np.ones((2, 2, 50), dtype=bool)    # 50 tall: the plane's height 0.02 x 50 is the vertex row z = 1
    v, f = voxel_solid(occ)
    assert (v[:, 2] == 1.0).any()
    info = {}
    out_v, out_f = print_solid(v, f, info=info)
    check_solid(out_v, out_f, info)
    assert info["base_z"] != 1.0 and info["base_z"] == pytest.approx(1.0, abs=0.01)
    assert info["base_area"] == pytest.approx(4.0, abs=1e-9)


def test_a_small_hole_is_closed():
    sphere = trimesh.creation.icosphere(subdivisions=3)
    top = int(np.argmax(sphere.triangles_center[:, 2]))
    beside = next(int(b if a == top else a) for a, b in sphere.face_adjacency if top in (a, b))
    holed = np.delete(sphere.faces, [top, beside], axis=0)            # a hole of four edges at the top
    assert not trimesh.Trimesh(sphere.vertices, holed, process=False).is_watertight
    info = {}
    v, out_f = print_solid(sphere.vertices, holed, info=info)
    check_solid(v, out_f, info)
    assert info["holes_filled"] == 1


def test_a_floating_piece_is_dropped_and_reported():
    sphere = trimesh.creation.icosphere(subdivisions=3)
    crumb = trimesh.creation.box(extents=(0.1, 0.1, 0.1))
    crumb.apply_translation((3.0, 0.0, 2.0))
    both = trimesh.util.concatenate([sphere, crumb])
    info = {}
    v, f = print_solid(both.vertices, both.faces, info=info)
    check_solid(v, f, info)
    assert info["parts_dropped"] == 1
    assert info["area_dropped_share"] == pytest.approx(crumb.area / (crumb.area + sphere.area), rel=1e-9)
    sv, sf = print_solid(sphere.vertices, sphere.faces)
    assert np.array_equal(v, sv) and np.array_equal(f, sf)
    assert v[:, 0].max() < 1.5


def test_a_uv_seam_split_mesh_is_welded_shut():
    sphere = trimesh.creation.icosphere(subdivisions=3)
    f = sphere.faces.copy()
    east = sphere.triangles_center[:, 0] > 0
    v = np.concatenate([sphere.vertices, sphere.vertices])        # the east half uses its own copies
    f[east] += len(sphere.vertices)
    assert not trimesh.Trimesh(v, f, process=False).is_watertight
    info = {}
    out_v, out_f = print_solid(v, f, info=info)
    check_solid(out_v, out_f, info)
    assert info["parts_dropped"] == 0 and info["holes_filled"] == 0
    whole_v, whole_f = print_solid(sphere.vertices, sphere.faces)
    assert np.array_equal(out_v, whole_v) and np.array_equal(out_f, whole_f)


def test_an_inside_out_shape_is_turned_outward():
    sphere = trimesh.creation.icosphere(subdivisions=3)
    sphere.apply_translation((0.1, 0.2, 0.937))          # off-centre: the interpolated heights miss the plane
    info = {}
    v, f = print_solid(sphere.vertices, sphere.faces[:, ::-1], info=info)
    assert check_solid(v, f, info).volume == pytest.approx(sphere.volume, rel=0.01)


def test_the_stl_of_the_placed_solid_is_watertight_on_a_flat_base_at_zero(tmp_path):
    torus = trimesh.creation.torus(1.0, 0.3)
    v, f = print_solid(torus.vertices, torus.faces)
    placed = place(v, height=0.05, pivot="bottom", units="mm")
    path = write_stl(tmp_path / "solid.stl", placed, f)
    loaded = trimesh.load(path, file_type="stl")
    assert loaded.is_watertight and loaded.is_winding_consistent and loaded.volume > 0
    assert loaded.bounds[0, 2] == 0.0 and loaded.bounds[1, 2] == pytest.approx(50.0, rel=1e-6)
    assert has_flat_base(loaded.vertices, loaded.faces)
    assert len(loaded.faces) == len(f)


def test_has_flat_base_wants_downward_faces_at_the_bottom():
    box = trimesh.creation.box(extents=(1, 1, 1))
    assert has_flat_base(box.vertices, box.faces)
    assert not has_flat_base(box.vertices, box.faces[:, ::-1])          # inside out: the bottom faces up
    tilted = box.copy().apply_transform(trimesh.transformations.rotation_matrix(0.3, (1, 0, 0)))
    assert not has_flat_base(tilted.vertices, tilted.faces)


def test_a_ring_polygon_keeps_every_collinear_point():
    """A square with points along its sides and a square hole likewise (where mapbox earcut drops the collinear
    points): every ring edge used once, every diagonal twice, the area exact."""
    s = np.linspace(0, 1, 6, endpoint=False)
    square = np.concatenate([np.c_[s, 0 * s], np.c_[1 + 0 * s, s], np.c_[1 - s, 1 + 0 * s], np.c_[0 * s, 1 - s]])
    hole = 0.25 + 0.5 * square[::-1]                        # clockwise
    points = np.concatenate([square, hole])
    outer = list(range(len(square)))
    inner = list(range(len(square), len(points)))
    tris = triangulate_polygon(points, outer, [inner])
    a, b, c = points[tris[:, 0]], points[tris[:, 1]], points[tris[:, 2]]
    twice = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    assert (twice > 0).all() and 0.5 * twice.sum() == pytest.approx(1 - 0.25, abs=1e-12)
    assert len(tris) == len(points)                         # n + 2 x holes - 2 triangles
    directed = {tuple(e) for e in tris[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2).tolist()}
    rings = [(r[i], r[(i + 1) % len(r)]) for r in (outer, inner) for i in range(len(r))]
    assert all(e in directed for e in rings)
    undirected = np.sort(tris[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), 1)
    _, counts = np.unique(undirected, axis=0, return_counts=True)
    assert counts.max() == 2 and (counts == 1).sum() == len(rings)


def test_a_hole_is_bridged_to_a_vertex_it_sees():
    """The outline's vertex nearest the hole, the tip (6, 4) of a notch in the right side, is behind a thin wall
    rising from the bottom edge: a bridge to it would cross the wall and fold the cap over itself."""
    points = np.array([[0, 0], [4.9, 0], [4.9, 8], [5.1, 8], [5.1, 0], [10, 0], [10, 3.9], [6, 4], [10, 4.1],
                       [10, 10], [0, 10], [3.5, 3.5], [3.5, 4.5], [4.5, 4.5], [4.5, 3.5]], dtype=np.float64)
    tris = triangulate_polygon(points, list(range(11)), [[11, 12, 13, 14]])
    a, b, c = points[tris[:, 0]], points[tris[:, 1]], points[tris[:, 2]]
    twice = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    assert (twice > 0).all() and 0.5 * twice.sum() == pytest.approx(100 - 0.2 * 8 - 0.4 - 1, abs=1e-12)


def test_two_holes_bridged_to_one_vertex_each_enter_on_their_own_side():
    """Both holes see (10, 5) first; the upper one must join the ring at the copy of it that faces up."""
    points = np.array([[0, 0], [10, 0], [10, 5], [10, 10], [0, 10], [9, 3], [9, 4], [9.5, 4], [9.5, 3],
                       [8.9, 6], [8.9, 7], [9.4, 7], [9.4, 6]], dtype=np.float64)
    tris = triangulate_polygon(points, [0, 1, 2, 3, 4], [[5, 6, 7, 8], [9, 10, 11, 12]])
    a, b, c = points[tris[:, 0]], points[tris[:, 1]], points[tris[:, 2]]
    twice = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    assert (twice > 0).all() and 0.5 * twice.sum() == pytest.approx(99.0, abs=1e-12)
    assert {2, 7} <= set(tris.ravel().tolist()) and any({2, 11} <= set(t) for t in tris.tolist())


def test_a_hole_touching_the_outline_joins_it_at_the_shared_vertex():
    """A pinch (a non-manifold vertex on the cut) puts one point on both loops: no bridge, no zero-length edge."""
    points = np.array([[0, 0], [4, 0], [4, 2], [4, 4], [0, 4], [2, 1], [2, 3]], dtype=np.float64)
    tris = triangulate_polygon(points, [0, 1, 2, 3, 4], [[2, 5, 6]])
    a, b, c = points[tris[:, 0]], points[tris[:, 1]], points[tris[:, 2]]
    twice = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    assert (twice > 0).all() and 0.5 * twice.sum() == pytest.approx(14.0, abs=1e-12)
    assert len(tris) == 6 and (np.sort(tris, 1)[:, :2] != np.sort(tris, 1)[:, 1:]).all()       # ring of 8 corners


def test_no_diagonal_repeats_an_edge_that_exists():
    square = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=np.float64)
    for taken in ((0, 2), (1, 3)):
        tris = triangulate_polygon(square, [0, 1, 2, 3], used={taken})
        assert len(tris) == 2 and not any(set(taken) <= set(t) for t in tris.tolist())


def test_base_cut_bounds_and_no_cut():
    sphere = trimesh.creation.icosphere(subdivisions=2)
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError):
            print_solid(sphere.vertices, sphere.faces, base_cut=bad)
    info = {}
    v, f = print_solid(sphere.vertices, sphere.faces, base_cut=0.0, info=info)
    assert trimesh.Trimesh(v, f).volume == pytest.approx(sphere.volume, rel=1e-12)
    assert info["cut_height"] == 0.0 and info["watertight"]


def test_a_20k_face_shape_takes_well_under_a_second():
    sphere = trimesh.creation.icosphere(subdivisions=5)              # 20,480 faces
    assert len(sphere.faces) == 20480
    print_solid(sphere.vertices, sphere.faces)                        # imports and caches warmed
    start = time.perf_counter()
    v, f = print_solid(sphere.vertices, sphere.faces)
    elapsed = time.perf_counter() - start
    assert trimesh.Trimesh(v, f, process=False).is_watertight
    assert elapsed < 0.5, f"{elapsed:.3f} s"
