"""Textured quad meshes of both families on small synthetic assets: quads, a baked look, files that keep quads."""
import numpy as np
import pytest

from tests.helpers.asset import make_gaussians, make_mesh, pattern
from tests.helpers.ovoxels import voxel_sphere
from trellis.export import ExportOptions, PbrOptions, bake_ovoxel, bake_textured_mesh
from trellis.export.quads import read_polygon_obj


def test_v1_quads_carry_a_baked_colour_texture(tmp_path):
    import torch
    v, f = make_mesh(3)
    gaussians = make_gaussians(v, f, n=8000)
    textured = bake_textured_mesh(gaussians, (v, f), topology="quads", target_faces=400, texture_size=64, nviews=8,
                                  render_resolution=128, fill_holes=False)
    report = textured.info["quads"]
    assert report["quad_share"] >= 0.95 and abs(report["faces_made"] - 400) <= 40
    assert report["non_manifold_edges"] == 0 and report["boundary_edges"] == 0
    assert textured.quad_pairs == report["quads"] and len(textured.faces) == 2 * report["quads"]
    assert textured.texture.shape == (64, 64, 3) and textured.texture.std() > 5
    # the texture at the mesh's vertices follows the asset's pattern (colour baked, not noise)
    size = textured.texture.shape[0]
    px = np.clip((textured.uvs[:, 0] * size).astype(int), 0, size - 1)
    py = np.clip(((1 - textured.uvs[:, 1]) * size).astype(int), 0, size - 1)
    got = textured.texture[py, px].astype(float) / 255
    want = pattern(torch.as_tensor(textured.vertices, dtype=torch.float32)).numpy()
    assert np.abs(got - want).mean() < 0.15
    _, polygons = read_polygon_obj(textured.save(str(tmp_path / "v1.obj")))
    quads = sum(len(p) == 4 for p in polygons)
    # quads whose diagonal a UV seam crosses are written as their two triangles; the rest as quads
    assert quads == textured.info["textured_quads"] >= 0.8 * report["quads"]
    # geometry only welds the UV seams: every quad comes back
    _, polygons = read_polygon_obj(textured.save(str(tmp_path / "plain.obj"), geometry_only=True))
    assert sum(len(p) == 4 for p in polygons) == report["quads"]


def test_trellis2_quads_carry_pbr_maps(tmp_path):
    textured = bake_ovoxel(voxel_sphere(32, cap=None), topology="quads", target_faces=300, texture_size=64,
                           normal_map=False)
    report = textured.info["quads"]
    assert report["quad_share"] >= 0.95 and abs(report["faces_made"] - 300) <= 30
    assert report["non_manifold_edges"] == 0 and report["boundary_edges"] == 0
    assert textured.pbr is not None and textured.texture.shape[:2] == (64, 64)
    _, polygons = read_polygon_obj(textured.save(str(tmp_path / "t2.obj")))
    quads = sum(len(p) == 4 for p in polygons)
    assert quads == textured.info["textured_quads"] >= 0.8 * report["quads"]


def test_topology_is_checked():
    for record in (ExportOptions, PbrOptions):
        assert record().topology == "triangles"
        with pytest.raises(ValueError, match="topology"):
            record(topology="hexes")
