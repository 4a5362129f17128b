"""A remeshed quad mesh's files: OBJ keeps quads, GLB holds them as named triangle pairs (valid glTF), USDZ has
faceVertexCounts of 4, STL stays triangles."""
import numpy as np
import pytest
import trimesh

from tests.helpers.gltf import glb_json, validate_gltf
from tests.helpers.usd import usd_problems
from tests.helpers.blender import inspected
from trellis.export.formats.quad_files import obj_with_quads
from trellis.export.quads import (
    GLTF_EXTRAS_KEY,
    quads_from_pairs,
    read_polygon_obj,
    remesh_quads,
    triangulate_quads,
)
from trellis.export.textured import TexturedMesh


@pytest.fixture(scope="module")
def quad_textured():
    """A remeshed sphere as a TexturedMesh: its triangulation, one UV per vertex (a spherical projection has no
    seam copies here: the pairs keep their diagonals), a small texture."""
    sphere = trimesh.creation.icosphere(3)
    result = remesh_quads(sphere.vertices, sphere.faces, 300, hausdorff_samples=2000)
    tris, quad_count = triangulate_quads(result.mesh.vertices, result.mesh.faces)
    v = result.mesh.vertices.astype(np.float32)
    uv = np.stack([np.arctan2(v[:, 1], v[:, 0]) / (2 * np.pi) + 0.5, v[:, 2] * 0.5 + 0.5], 1).astype(np.float32)
    texture = np.full((16, 16, 3), 180, np.uint8)
    textured = TexturedMesh(v, tris, uv, texture, {})
    textured.quad_pairs = quad_count
    return textured, result


def test_obj_writes_quads_as_quads(quad_textured, tmp_path):
    textured, result = quad_textured
    path = textured.save(str(tmp_path / "q.obj"))
    vertices, polygons = read_polygon_obj(path)
    quads = sum(len(p) == 4 for p in polygons)
    assert quads / len(polygons) >= 0.95
    assert quads <= result.report.quads
    # trimesh reads it back (as triangles) with the same surface
    back = trimesh.load(path, force="mesh", process=False)
    assert len(back.faces) == len(textured.faces)
    text = open(path).read()
    assert "usemtl baked" in text and text.index("usemtl baked") < text.index("\nf ")


def test_geometry_only_obj_keeps_quads_too(quad_textured, tmp_path):
    textured, _ = quad_textured
    path = textured.save(str(tmp_path / "g.obj"), geometry_only=True)
    _, polygons = read_polygon_obj(path)
    assert sum(len(p) == 4 for p in polygons) / len(polygons) >= 0.95


def test_glb_is_valid_triangles_with_its_quads_named(quad_textured, tmp_path):
    textured, result = quad_textured
    path = textured.save(str(tmp_path / "q.glb"))
    doc = glb_json(path)
    assert doc["meshes"][0]["extras"][GLTF_EXTRAS_KEY] == textured.quad_pairs
    issues = validate_gltf(path)["issues"]
    assert issues["numErrors"] == 0, issues["messages"]
    loaded = trimesh.load(path, force="mesh", process=False)
    assert len(loaded.faces) == len(textured.faces)
    # the pairs give the quads back: every pair shares its diagonal in the file
    quads = quads_from_pairs(np.asarray(loaded.faces), doc["meshes"][0]["extras"][GLTF_EXTRAS_KEY])
    assert (quads[:, 3] >= 0).sum() == result.report.quads


def test_draco_glb_names_no_pairs(quad_textured, tmp_path):
    textured, _ = quad_textured
    path = textured.save(str(tmp_path / "d.glb"), draco=True)
    assert GLTF_EXTRAS_KEY not in glb_json(path)["meshes"][0].get("extras", {})


def test_usdz_has_face_vertex_counts_of_four(quad_textured, tmp_path):
    from pxr import Usd, UsdGeom
    textured, _ = quad_textured
    path = textured.save(str(tmp_path / "q.usdz"))
    stage = Usd.Stage.Open(str(path))
    mesh = UsdGeom.Mesh(stage.GetPrimAtPath("/Model/Mesh"))
    counts = np.asarray(mesh.GetFaceVertexCountsAttr().Get())
    assert set(counts.tolist()) <= {3, 4} and (counts == 4).mean() >= 0.95
    assert len(mesh.GetFaceVertexIndicesAttr().Get()) == counts.sum()
    assert [p for p in usd_problems(stage) if p[0] == "Error"] == []


def test_stl_stays_triangles(quad_textured, tmp_path):
    textured, _ = quad_textured
    path = textured.save(str(tmp_path / "q.stl"))
    assert len(trimesh.load(path, force="mesh", process=False).faces) == len(textured.faces)


def test_obj_pairs_cut_at_their_diagonal_stay_triangles(tmp_path):
    path = tmp_path / "cut.obj"
    # a quad 0-1-2-3 whose second triangle has its own copies of the diagonal with other UVs (a seam), then a
    # real pair, then a pair whose diagonal copies differ in their normals only (a crease): one quad
    positions = "v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nv 0 0 0\nv 1 1 0\nv 2 0 0\nv 2 1 0\nv 2 1 0\nv 1 0 0\n"
    uvs = "vt 0 0\nvt 1 0\nvt 1 1\nvt 0 1\nvt .5 .5\nvt .6 .6\nvt 2 0\nvt 2 1\nvt 2 1\nvt 1 0\n"
    faces = "f 1/1 2/2 3/3\nf 5/5 6/6 4/4\nf 2/2 7/7 8/8\nf 2/2 8/8 3/3\nf 2/2 7/7 8/8\nf 10/10 9/9 3/3\n"
    path.write_text(positions + uvs + faces)
    obj_with_quads(path, 3)
    _, polygons = read_polygon_obj(str(path))
    assert polygons == [[0, 1, 2], [4, 5, 3], [1, 6, 7, 2], [1, 6, 7, 2]]


def test_blender_imports_the_obj_as_quads(quad_textured, tmp_path):
    textured, _ = quad_textured
    mesh = inspected(textured.save(str(tmp_path / "q.obj"), crease_angle=None))["meshes"][0]
    assert mesh["quads"] / mesh["faces"] >= 0.95 and mesh["uv_maps"]
