"""Quad-dominant remeshing for the export (Instant Meshes through ``pyinstantmeshes``), its measurements, and the
quad mesh as triangles for formats that have no quads."""
from .measure import QuadReport, edge_counts, hausdorff_share, measure_quads
from .remesh import QuadMesh, QuadRemesh, QuadTargetError, read_polygon_obj, remesh_quads
from .triangulate import (
           GLTF_EXTRAS_KEY,
           merge_pairs,
           quads_from_pairs,
           triangulate_quads,
)

__all__ = [
           "GLTF_EXTRAS_KEY",
           "QuadMesh",
           "QuadRemesh",
           "QuadReport",
           "QuadTargetError",
           "edge_counts",
           "hausdorff_share",
           "measure_quads",
           "merge_pairs",
           "quads_from_pairs",
           "read_polygon_obj",
           "remesh_quads",
           "triangulate_quads",
]
