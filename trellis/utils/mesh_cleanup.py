"""Mesh clean-up before GLB export: the names of ``trellis.utils.export.cleanup`` and its stages
(``simplify``, ``visibility``, ``hidden_faces``, ``holes``) under their former module, kept so that
existing imports work. New code imports the stage modules."""
from .export.cleanup import clean_mesh_for_export
from .export.graph import _components, _dual_arcs, _edges  # noqa: F401
from .export.hidden_faces import invisible_face_mask, remove_invisible_faces
from .export.holes import boundary_edges, fill_holes
from .export.simplify import (MAX_PIECES, PIECE_MIN_FACES, PIECE_SLACK, PIECES_FROM_FACES,  # noqa: F401
                              BackgroundSimplify, _cancel_coincident_faces, _workers, decimation_pieces,
                              merge_duplicate_vertices, simplify_mesh, simplify_time_estimate)
from .export.visibility import (CPU_PIXELS_PER_SMALL_FACE, CPU_VISIBILITY_MIN_VIEWS, CPU_VISIBILITY_PIXELS,
                                DEFAULT_VISIBILITY_RESOLUTION, DEFAULT_VISIBILITY_VIEWS, FAST_VISIBILITY_RESOLUTION,
                                FAST_VISIBILITY_VIEWS, REFERENCE_VISIBILITY_RESOLUTION, REFERENCE_VISIBILITY_VIEWS,
                                face_visibility, visibility_settings)

__all__ = [
    "simplify_mesh", "face_visibility", "remove_invisible_faces", "fill_holes", "BackgroundSimplify",
    "clean_mesh_for_export", "merge_duplicate_vertices", "simplify_time_estimate", "decimation_pieces",
    "boundary_edges", "invisible_face_mask",
    "DEFAULT_VISIBILITY_VIEWS", "DEFAULT_VISIBILITY_RESOLUTION",
    "REFERENCE_VISIBILITY_VIEWS", "REFERENCE_VISIBILITY_RESOLUTION",
    "FAST_VISIBILITY_VIEWS", "FAST_VISIBILITY_RESOLUTION",
    "visibility_settings", "CPU_VISIBILITY_PIXELS", "CPU_VISIBILITY_MIN_VIEWS", "CPU_PIXELS_PER_SMALL_FACE",
]
