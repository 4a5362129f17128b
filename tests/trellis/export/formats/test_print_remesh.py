"""The print solid rebuilt from cells (trellis/export/formats/print_remesh.py), and when the print-ready solid takes it
(print_solid.py), judged by trimesh: one body (``body_count``), watertight, a volume (``is_volume``: wound
consistently, outward), standing on a flat base. Shapes that the shape as it is cannot make one body of: two boxes
touching along an edge (a slicer's "2 bodies"), two overlapping spheres (the union is the print), the scanned bunny
cut in two overlapping open halves; and the marching tetrahedra alone on a ball."""

import numpy as np
import pytest
import trimesh

from trellis.export.formats.print_remesh import is_one_body, marching_tetrahedra, remesh_solid
from trellis.export.formats.print_solid import has_flat_base, print_solid


def assert_one_body(v, f):
    """The checks every print solid passes, as trimesh and we see them; returns the trimesh mesh."""
    mesh = trimesh.Trimesh(v, f, process=False)
    assert mesh.is_watertight and mesh.is_winding_consistent and mesh.is_volume and mesh.volume > 0
    assert mesh.body_count == 1 and len(mesh.split(only_watertight=False)) == 1
    assert is_one_body(v, f) and has_flat_base(v, f)
    return mesh


def test_marching_tetrahedra_of_a_ball_is_a_closed_sphere_wound_outward():
    n, h = 28, 1.0 / 12
    grid = (np.indices((n, n, n)).transpose(1, 2, 3, 0) - (n - 1) / 2) * h
    field = 1.0 - np.linalg.norm(grid, axis=-1) + 1e-7           # positive inside the unit ball
    v, f = marching_tetrahedra(field, np.full(3, -(n - 1) / 2 * h), h)
    mesh = trimesh.Trimesh(v, f, process=False)
    assert mesh.is_watertight and mesh.is_volume and mesh.euler_number == 2 and mesh.body_count == 1
    assert mesh.volume == pytest.approx(4 / 3 * np.pi, rel=0.02)
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=0.01)


def test_two_boxes_touching_along_an_edge_are_rebuilt_as_one_body():
    a = trimesh.creation.box(bounds=[[0, 0, 0], [1, 1, 1]])
    b = trimesh.creation.box(bounds=[[1, 1, 0], [2, 2, 1]])
    both = trimesh.util.concatenate([a, b])
    info = {}
    v, f = print_solid(both.vertices, both.faces, cells=32, info=info)
    mesh = assert_one_body(v, f)
    assert info["method"] == "rebuilt" and info["area_dropped_share"] == 0.0 and info["bodies"] == 1
    # the boxes' volume less the base cut, the new surface at most half a cell outside the old one
    assert 2 * (1 - info["cut_height"]) <= mesh.volume <= 2 * (1 + 2.5 * info["cell_size"]) ** 3


def test_overlapping_spheres_are_printed_as_their_union():
    one = trimesh.creation.icosphere(subdivisions=3)
    two = one.copy().apply_translation((1.2, 0, 0))
    both = trimesh.util.concatenate([one, two])
    info = {}
    v, f = print_solid(both.vertices, both.faces, cells=32, info=info)
    mesh = assert_one_body(v, f)
    # the shape as it is keeps one sphere and leaves most of the other out of the print: rebuilt instead
    assert info["method"] == "rebuilt" and info["area_dropped_share"] < 0.01
    union = 2 * one.volume - np.pi / 12 * (4 + 1.2) * (2 - 1.2) ** 2        # less the lens they share
    # the new surface lies up to half a cell outside the old one (radius 1, a cell of 0.1)
    assert union * 0.97 < mesh.volume < union * (1 + 0.6 * info["cell_size"]) ** 3


@pytest.fixture(scope="module")
def bunny():
    """The scanned bunny (benchmarks/realistic_objects.py), decimated to 12 k faces."""
    from benchmarks.realistic_objects import prepare_source

    from trellis.export.cleanup.decimate import simplify_mesh

    v, f = prepare_source("bunny")
    v, f = simplify_mesh(v, f, 1.0 - 12000 / len(f), pieces=1)
    return np.asarray(v, dtype=np.float64), np.asarray(f, dtype=np.int64)


def test_the_bunny_as_it_is_keeps_its_vertices(bunny):
    v, f = bunny
    info = {}
    out_v, out_f = print_solid(v, f, info=info)
    assert_one_body(out_v, out_f)
    assert info["method"] == "as is" and info["parts_dropped"] == 0 and info["area_dropped_share"] == 0.0
    above = out_v[:, 2] > info["base_z"] + 1e-6
    assert len(np.setdiff1d(out_v[above].view("f8,f8,f8"), v.view("f8,f8,f8"))) == 0


def test_the_bunny_in_two_overlapping_open_halves_is_rebuilt_whole(bunny):
    v, f = bunny
    centre = v[f].mean(1)[:, 0]
    left, right = f[centre < 0.02], f[centre > -0.02]             # open halves, overlapping by a band of faces
    halves = np.concatenate([left, right + len(v)])
    info = {}
    out_v, out_f = print_solid(np.concatenate([v, v]), halves, cells=40, info=info)
    mesh = assert_one_body(out_v, out_f)
    assert info["method"] == "rebuilt" and info["area_dropped_share"] < 0.01
    whole = trimesh.Trimesh(v, f, process=False)
    assert whole.volume * 0.9 < mesh.volume < whole.volume * 1.15


def test_a_cloud_of_separate_pieces_keeps_the_largest_part_and_says_what_it_left_out():
    rng = np.random.default_rng(0)
    parts = [trimesh.creation.icosphere(subdivisions=1, radius=0.05).apply_translation(rng.uniform(-1, 1, 3))
             for _ in range(12)]
    cloud = trimesh.util.concatenate(parts)
    info = {}
    v, f = remesh_solid(cloud.vertices, cloud.faces, cells=40, info=info)
    mesh = trimesh.Trimesh(v, f, process=False)
    assert mesh.is_watertight and mesh.is_volume and mesh.body_count == 1
    assert info["parts_dropped"] == 11 and info["area_dropped_share"] == pytest.approx(11 / 12, abs=0.02)
