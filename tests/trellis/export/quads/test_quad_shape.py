"""Quads for files that hold no texture (geometry-only OBJ, STL, 3MF): the export's clean-up alone, remeshed."""
import numpy as np

from tests.helpers.asset import make_mesh
from trellis.export import ExportOptions
from trellis.export.quads import read_polygon_obj
from trellis.export.shape_only import clean_shape


def test_a_shape_without_texture_is_remeshed_to_quads_when_asked(tmp_path):
    v, f = make_mesh(3)
    shape = clean_shape((v, f), ExportOptions(topology="quads", target_faces=300, fill_holes=False))
    report = shape.info["quads"]
    assert shape.info["topology"] == "quads" and shape.texture is None and not np.any(shape.uvs)
    assert report["quad_share"] >= 0.95 and abs(report["faces_made"] - 300) <= 30 and report["non_manifold_edges"] == 0
    assert shape.quad_pairs == report["quads"] and len(shape.faces) == 2 * report["quads"] + report["triangles"]
    _, polygons = read_polygon_obj(shape.save(str(tmp_path / "plain.obj"), geometry_only=True))
    assert sum(len(p) == 4 for p in polygons) == report["quads"]
    # triangles (the default) stay the clean-up's triangles
    plain = clean_shape((v, f), ExportOptions(target_faces=300, fill_holes=False))
    assert "quads" not in plain.info and getattr(plain, "quad_pairs", 0) == 0 and plain.faces.shape[1] == 3
