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


# A 4x4 texture, top row first: R grows with the column, G with the row (10 + 60 per texel), B an irregular table.
B = np.array([[0, 200, 30, 90], [250, 62, 170, 10], [120, 220, 40, 180], [70, 140, 240, 20]], np.uint8)
# (u, v) with v up -> texel coordinates x = 4u - 0.5 (column), y = 4(1 - v) - 0.5 (row), clamped to [0, 3].
UVS = [(0.125, 0.875),   # x 0, y 0: the top-left texel's centre
       (0.625, 0.125),   # x 2, y 3: row 3, column 2
       (0.25, 0.75),     # x 0.5, y 0.5: the mean of texels (0,0) (0,1) (1,0) (1,1)
       (0.5, 0.625),     # x 1.5, y 1: half-way between (1,1) and (1,2)
       (0.0, 1.0),       # x -0.5, y -0.5: clamped to texel (0,0) (a wrap would mix the four corners)
       (1.0, 0.5),       # x 3.5 -> 3, y 1.5: half-way between (1,3) and (2,3) (a wrap would mix in column 0)
       (0.3, 0.8)]       # x 0.7, y 0.3: weights 0.21 (0,0), 0.49 (0,1), 0.09 (1,0), 0.21 (1,1)
EXPECTED_RGB = [(10, 10, 0),
                (130, 190, 240),
                (40, 40, 128),                      # B (0 + 200 + 250 + 62) / 4
                (100, 70, 116),                     # B (62 + 170) / 2
                (10, 10, 0),
                (190, 100, 95),                     # B (10 + 180) / 2
                (52, 28, 134)]                      # B 0.49·200 + 0.09·250 + 0.21·62 = 133.52


def four_by_four():
    rows, cols = np.meshgrid(np.arange(4), np.arange(4), indexing="ij")
    texture = np.stack([10 + 60 * cols, 10 + 60 * rows, B], -1).astype(np.uint8)
    vertices = np.arange(len(UVS) * 3, dtype=np.float32).reshape(-1, 3)
    faces = np.array([[0, 1, 2], [3, 4, 5], [4, 5, 6]], np.int64)
    pbr = pbr_maps(np.zeros((4, 4, 3), np.uint8), (255 - B).astype(np.uint8), "BLEND")
    return pbr_textured_mesh(vertices, faces, np.array(UVS, np.float32), texture, {}, None, pbr)


def test_each_vertex_samples_the_texture_bilinearly_at_texel_centres_v_up_clamped_to_the_edge():
    colors = vertex_colors(four_by_four())
    assert colors[:, :3].tolist() == [list(c) for c in EXPECTED_RGB]
    assert colors[:, 3].tolist() == [255 - b for *_, b in EXPECTED_RGB]   # the alpha map 255 - B, sampled alike
    with pytest.raises(ValueError, match="non-finite UVs"):
        vertex_colors(four_by_four()._replace(uvs=np.full((len(UVS), 2), np.nan, np.float32)))
