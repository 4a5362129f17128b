"""The O-Voxel's mesh made ready for baking (TRELLIS2_FACTS.md §7.3, §11, §12.2-§12.4, with our own tools): the
dual-grid mesh without its unused vertices (one vertex per fine voxel, most of them in no face), small holes
closed (``small_holes``), decimated to the export's face target (``cleanup.chain.clean_mesh_for_export`` without
its hidden-face removal: the dual grid has no inner sheet), wound consistently facing out (``orientation``), and
UV-unwrapped (``uv.unwrap.unwrap_uv``). The dense mesh after hole filling is kept: the bake projects onto it."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from ...core.callbacks import check
from ..arrays import Progress, report
from ..cleanup.chain import clean_mesh_for_export
from ..uv.unwrap import unwrap_uv
from .orientation import unify_orientation
from .small_holes import MAX_HOLE_PERIMETER, fill_small_holes

__all__ = ["DEFAULT_TARGET_FACES", "PreparedMesh", "dense_mesh", "prepare_ovoxel_mesh"]

DEFAULT_TARGET_FACES = 500_000      # the reference app's default decimation target (a face count)


class PreparedMesh(NamedTuple):
    """``dense_vertices`` / ``dense_faces``: the hole-filled decoder mesh (torch, on the O-Voxel's device);
    ``vertices`` [V,3] float32, ``faces`` [F,3] int64, ``uvs`` [V,2] float32 (v up): the decimated, unwrapped mesh
    (numpy, z up, split along UV seams)."""
    dense_vertices: torch.Tensor
    dense_faces: torch.Tensor
    vertices: np.ndarray
    faces: np.ndarray
    uvs: np.ndarray


def dense_mesh(mesh) -> tuple[torch.Tensor, torch.Tensor]:
    """(vertices fp32, faces int64) of a ``MeshWithVoxel``'s dual-grid mesh without the vertices no face uses."""
    if not mesh.success:
        raise ValueError("the O-Voxel mesh is empty (no faces): nothing to export")
    v, f = mesh.vertices.float(), mesh.faces.long()
    if f.min() < 0 or f.max() >= v.shape[0]:
        raise ValueError(f"the O-Voxel mesh's faces index vertices outside 0..{v.shape[0] - 1}")
    used, inverse = torch.unique(f.reshape(-1), return_inverse=True)
    return v[used], inverse.reshape(-1, 3)


def prepare_ovoxel_mesh(mesh, target_faces: int = DEFAULT_TARGET_FACES, texture_size: int = 2048,
                        max_hole_perimeter: float = MAX_HOLE_PERIMETER, uv_method: str = "auto",
                        uv_time_budget_s: float = 10.0, progress: Progress = None, cancel=None,
                        info: dict | None = None) -> PreparedMesh:
    """A ``MeshWithVoxel`` -> ``PreparedMesh`` (see the module docstring). ``target_faces``: faces of the exported
    mesh (the decimation's target; a mesh with fewer keeps its own). ``info`` gets "input_faces", "holes",
    "cleanup" (the decimation's record), "faces", "orientation_flipped", "uv_method", "vertices"."""
    info = {} if info is None else info
    if int(target_faces) < 1:
        raise ValueError(f"target_faces must be at least 1 (got {target_faces})")
    check(cancel)
    v, f = dense_mesh(mesh)
    info["input_faces"] = int(f.shape[0])
    v, f = fill_small_holes(v, f, max_hole_perimeter, progress, cancel, info.setdefault("holes", {}))
    check(cancel)
    v_np, f_np = clean_mesh_for_export(v, f, fill_holes=False, target_faces=int(target_faces), progress=progress,
                                       cancel=cancel, info=info.setdefault("cleanup", {}))
    if len(f_np) == 0:
        raise ValueError("the O-Voxel mesh has no faces left after decimation")
    check(cancel)
    report(progress, "orient", 0, 1)
    oriented = unify_orientation(v_np, f_np)
    info["orientation_flipped"] = int((oriented != f_np).any(1).sum())
    report(progress, "orient", 1, 1)
    uv_info: dict = {}
    uv_v, uv_f, uvs, _ = unwrap_uv(v_np, oriented, time_budget_s=uv_time_budget_s,
                                   progress=lambda d, t: report(progress, "uv_unwrap", d, t), cancel=cancel,
                                   texture_size=texture_size, method=uv_method, info=uv_info)
    info.update(faces=int(len(uv_f)), uv_method=uv_info.get("method"), vertices=int(len(uv_v)))
    return PreparedMesh(v, f, uv_v, uv_f, uvs)
