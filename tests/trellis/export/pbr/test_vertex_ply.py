"""A PBR bake as a PLY mesh with vertex colours (trellis/export/pbr/vertex_ply.py), read back by trimesh: the base
colour under each vertex's UV, the alpha where the material writes one, the UV seam's copies welded, the placement of
the other mesh files."""
import numpy as np
import pytest
import trimesh

from trellis.export.pbr.material import pbr_maps
from trellis.export.pbr.textured import pbr_textured_mesh
from trellis.export.pbr.vertex_ply import save_vertex_color_ply, vertex_colors


def two_charts(alpha_mode="OPAQUE"):
    """Two triangles sharing an edge whose vertices are duplicated (a UV seam): the left chart red, the right blue."""
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 0, 1], [1, 0, 0], [1, 0, 1], [0, 0, 1]], np.float32)
    faces = np.array([[0, 1, 2], [3, 4, 5]], np.int64)
    uvs = np.array([[0.1, 0.5], [0.2, 0.5], [0.1, 0.6], [0.8, 0.5], [0.9, 0.5], [0.8, 0.6]], np.float32)
    texture = np.zeros((16, 16, 3), np.uint8)
    texture[:, :8] = (255, 0, 0)
    texture[:, 8:] = (0, 0, 255)
    alpha = np.full((16, 16), 128, np.uint8)
    pbr = pbr_maps(np.zeros((16, 16, 3), np.uint8), alpha, alpha_mode)
    return pbr_textured_mesh(vertices, faces, uvs, texture, {}, None, pbr)


def test_the_ply_loads_with_the_base_colour_per_vertex_and_the_seam_welded(tmp_path):
    path = save_vertex_color_ply(two_charts(), tmp_path / "model.ply", height=2.0, pivot="bottom", units="mm")
    mesh = trimesh.load(path, process=False)
    assert len(mesh.vertices) == 4 and len(mesh.faces) == 2        # the seam's two copies are one vertex each
    colors = mesh.visual.vertex_colors
    assert colors.shape == (4, 4) and set(map(tuple, colors[:, :3])) <= {(255, 0, 0), (0, 0, 255)}
    assert (colors[:, 3] == 255).all()                              # OPAQUE: no alpha
    assert np.isclose(mesh.vertices[:, 2].min(), 0) and np.isclose(np.ptp(mesh.vertices[:, 2]), 2000)


def test_alpha_comes_from_the_material_only_where_it_writes_one_and_a_mesh_without_texture_is_refused(tmp_path):
    assert (vertex_colors(two_charts("BLEND"))[:, 3] == 128).all()
    assert (vertex_colors(two_charts("OPAQUE"))[:, 3] == 255).all()
    with pytest.raises(ValueError, match="no base colour"):
        save_vertex_color_ply(two_charts()._replace(texture=None), tmp_path / "x.ply")
    assert not (tmp_path / "x.ply").exists()
