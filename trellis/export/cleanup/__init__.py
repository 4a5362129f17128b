"""The export's clean-up stage: decimation, hidden-face removal and hole filling, chained by
``clean_mesh_for_export`` (``chain``)."""
from .chain import BUDGET_HEADROOM, clean_mesh_for_export, face_budget, first_reduction
from .decimate import BackgroundSimplify, simplify_mesh, simplify_time_estimate
from .hidden_faces import invisible_face_mask, remove_invisible_faces
from .holes import boundary_edges, fill_holes
from .pieces import decimation_pieces, warm_pool
from .visibility import (CPU_PIXELS_PER_SMALL_FACE, CPU_VISIBILITY_MIN_VIEWS, CPU_VISIBILITY_PIXELS,
                         DEFAULT_VISIBILITY_RESOLUTION, DEFAULT_VISIBILITY_VIEWS, FAST_VISIBILITY_RESOLUTION,
                         FAST_VISIBILITY_VIEWS, REFERENCE_VISIBILITY_RESOLUTION, REFERENCE_VISIBILITY_VIEWS,
                         face_visibility, visibility_settings)
from .weld import merge_duplicate_vertices

__all__ = [
    "clean_mesh_for_export", "face_budget", "first_reduction", "BUDGET_HEADROOM",
    "simplify_mesh", "simplify_time_estimate", "BackgroundSimplify", "decimation_pieces", "warm_pool",
    "merge_duplicate_vertices", "face_visibility", "visibility_settings", "remove_invisible_faces",
    "invisible_face_mask", "fill_holes", "boundary_edges",
    "DEFAULT_VISIBILITY_VIEWS", "DEFAULT_VISIBILITY_RESOLUTION", "REFERENCE_VISIBILITY_VIEWS",
    "REFERENCE_VISIBILITY_RESOLUTION", "FAST_VISIBILITY_VIEWS", "FAST_VISIBILITY_RESOLUTION",
    "CPU_VISIBILITY_PIXELS", "CPU_VISIBILITY_MIN_VIEWS", "CPU_PIXELS_PER_SMALL_FACE",
]
