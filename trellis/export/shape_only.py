"""The export's clean-up alone, for files that hold no texture (geometry-only GLB / OBJ / USDZ, STL, 3MF): the same
mesh ``bake_textured_mesh`` would unwrap and texture (``cleanup.chain.clean_mesh_for_export`` with the same
arguments), without its UV unwrap, observation renders or bake, which such files would throw away.

    shape = clean_shape(mesh, simplify=0.95, target_faces=5000, device="cuda")   # a TexturedMesh, texture None
    shape.save("part.stl")
"""
from __future__ import annotations

import time

import numpy as np

from ..core.callbacks import check
from .cleanup.chain import clean_mesh_for_export
from .empty_mesh import EmptyMeshError
from .options import ExportOptions, mesh_arrays
from .textured import TexturedMesh

__all__ = ["clean_shape"]


def clean_shape(mesh, options: ExportOptions | None = None, *, progress=None, cancel=None, **kwargs) -> TexturedMesh:
    """A ``TexturedMesh`` of ``mesh`` (as ``bake_textured_mesh`` takes it) after the export's clean-up with the
    options that concern it (simplify, fill_holes, fill_holes_max_size, target_faces, destination; ``device``: where
    it runs, default the mesh's; ``kwargs``: changes to them), with no texture (None) and every vertex at UV (0, 0),
    so that its levels of detail see no seams; its ``info`` holds the clean-up's record ("cleanup"), "input_faces",
    "faces" and "seconds". ``progress(stage, done, total)`` gets the clean-up's stages; ``cancel`` as ever. With
    ``topology="quads"``: that surface remeshed to quads (``quads.bake.shape_quads``)."""
    o = ExportOptions.given(options, **kwargs)
    if o.topology == "quads":
        from .quads.bake import shape_quads
        return shape_quads(mesh, o, progress=progress, cancel=cancel)
    started = time.perf_counter()
    info = {"seconds": {}, "texture": None}
    check(cancel)
    vertices, faces = mesh_arrays(mesh, o.device)
    if faces.shape[0] == 0:
        raise EmptyMeshError("clean_shape: the mesh is empty (no faces)")
    info["input_faces"] = int(faces.shape[0])
    target_faces = o.face_target(int(faces.shape[0]))
    if o.simplify > 0 or o.fill_holes or target_faces is not None:
        v, f = clean_mesh_for_export(vertices, faces, simplify=o.simplify, fill_holes=o.fill_holes,
                                     fill_holes_max_size=o.fill_holes_max_size, device=vertices.device,
                                     progress=progress, cancel=cancel, info=info.setdefault("cleanup", {}),
                                     target_faces=target_faces)
    else:
        v, f = vertices.cpu().numpy(), faces.cpu().numpy()
    if len(f) == 0:
        raise ValueError("clean_shape: no faces left after clean-up")
    v = np.ascontiguousarray(v, dtype=np.float32)
    info["faces"], info["seconds"]["cleanup"] = int(len(f)), round(time.perf_counter() - started, 3)
    return TexturedMesh(v, np.ascontiguousarray(f, dtype=np.int64), np.zeros((len(v), 2), np.float32), None, info)
