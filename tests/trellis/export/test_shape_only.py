"""The export's clean-up alone (trellis.export.shape_only.clean_shape), for files without a texture: the very mesh
the clean-up gives the textured export, no texture, one UV for all; its files and levels of detail are written from it
as from a baked mesh."""
import numpy as np
import pytest
import trimesh

from trellis.export import clean_shape, lod_meshes
from trellis.export.cleanup.chain import clean_mesh_for_export


@pytest.fixture(scope="module")
def sphere():
    mesh = trimesh.creation.icosphere(subdivisions=4, radius=0.4)          # 5 120 faces
    return np.asarray(mesh.vertices, np.float32), np.asarray(mesh.faces, np.int64)


def test_the_clean_up_alone_gives_the_textured_exports_mesh_without_a_texture(sphere, tmp_path):
    v, f = sphere
    stages = []
    shape = clean_shape((v, f), simplify=0.95, fill_holes=False, target_faces=1000,
                        progress=lambda stage, done, total: stages.append(stage))
    same = clean_mesh_for_export(v, f, simplify=0.95, fill_holes=False, target_faces=1000)
    np.testing.assert_array_equal(shape.vertices, same[0])
    np.testing.assert_array_equal(shape.faces, same[1])
    assert shape.texture is None and shape.uvs.shape == (len(shape.vertices), 2) and not shape.uvs.any()
    assert shape.info["input_faces"] == len(f) and shape.info["faces"] == len(shape.faces) and "simplify" in stages
    assert "observations" not in shape.info and "uv_method" not in shape.info

    # Written as every geometry-only file, and made lighter, as a baked mesh is.
    stl = shape.save(tmp_path / "part.stl")
    glb = shape.save(tmp_path / "part.glb", geometry_only=True)
    assert len(trimesh.load(stl).faces) == len(shape.faces)
    loaded = trimesh.load(glb, force="mesh")
    assert len(loaded.faces) == len(shape.faces) and getattr(loaded.visual.material, "baseColorTexture", None) is None
    (half,) = lod_meshes(shape, [0.5])
    assert half.texture is None and len(half.faces) < len(shape.faces)
    written = half.save(tmp_path / "half.glb", geometry_only=True)
    assert len(trimesh.load(written, force="mesh").faces) == len(half.faces)

    with pytest.raises(ValueError, match="empty"):
        clean_shape((v, f[:0]))
