"""The O-Voxel's mesh made ready for baking (TRELLIS2_FACTS.md §7.3, §11, §12.2-§12.4, with our own tools): the
dual-grid mesh without its unused vertices (one vertex per fine voxel, most of them in no face), reduced to the
export's face target with its small holes closed (``reduce``: grid clustering, hole filling, quadric decimation),
wound consistently facing out (``orientation``), and UV-unwrapped (``uv.unwrap.unwrap_uv``). The dense mesh is kept:
the bake projects onto it."""
from __future__ import annotations

import time
from typing import NamedTuple

import numpy as np
import torch

from ...core.callbacks import StageProgress, check
from ..arrays import report
from ..options import DEFAULT_TARGET_FACES, MAX_HOLE_PERIMETER, PbrOptions
from ..uv.unwrap import LOW_TEXEL_USE, unwrap_uv
from .orientation import unify_orientation
from .reduce import Clustered, cluster_stage, finish_reduction
from .sorting import unique_inverse

__all__ = ["DEFAULT_TARGET_FACES", "PreparedMesh", "dense_mesh", "prepare_ovoxel_mesh"]


class PreparedMesh(NamedTuple):
    """``dense_vertices`` / ``dense_faces``: the decoder's mesh (torch, on the O-Voxel's device);
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
    used, inverse = unique_inverse(f.reshape(-1))
    return v[used], inverse.reshape(-1, 3)


def prepare_ovoxel_mesh(mesh, target_faces: int = DEFAULT_TARGET_FACES, texture_size: int = PbrOptions.texture_size,
                        max_hole_perimeter: float = MAX_HOLE_PERIMETER, uv_method: str = "auto",
                        uv_time_budget_s: float = 10.0, progress: StageProgress = None, cancel=None,
                        info: dict | None = None, dense: tuple | None = None,
                        clustered: Clustered | None = None) -> PreparedMesh:
    """A ``MeshWithVoxel`` -> ``PreparedMesh`` (see the module docstring). ``target_faces``: faces of the exported
    mesh (the decimation's target; a mesh with fewer keeps its own). ``info`` gets "input_faces", "reduce"
    (``reduce_to_target``'s record), "decimated_faces", "faces", "orientation_flipped", "uv_method", "vertices",
    "prepare_seconds" (the seconds of reduce's steps, "orient" and "uv_unwrap"), "texel_use" (the share of the
    texture the UV charts cover), "warnings" (a list of sentences for the user: a texel use under
    ``uv.unwrap.LOW_TEXEL_USE``) and, where xatlas ran in groups, "uv_groups" (``uv.xatlas_groups.group_layout``'s
    record). ``dense``: ``dense_mesh(mesh)`` when the caller has it already; ``clustered``: ``reduce.cluster_stage``
    of it at this target, likewise (``early.EarlyPrepare`` makes it before the texture flow)."""
    info = {} if info is None else info
    if int(target_faces) < 1:
        raise ValueError(f"target_faces must be at least 1 (got {target_faces})")
    check(cancel)
    v, f = dense_mesh(mesh) if dense is None else dense
    info["input_faces"] = int(f.shape[0])
    record = info.setdefault("reduce", {})
    if clustered is None:
        clustered = cluster_stage(v, f, int(target_faces), mesh.voxel_size, progress, cancel, record)
    v_np, f_np = finish_reduction(clustered, int(target_faces), max_hole_perimeter, progress, cancel, record)
    seconds = info["prepare_seconds"] = dict(record["seconds"])
    if len(f_np) == 0:
        raise ValueError("the O-Voxel mesh has no faces left after decimation")
    info["decimated_faces"] = int(len(f_np))
    check(cancel)
    t0 = time.perf_counter()
    report(progress, "orient", 0, 1)
    oriented = unify_orientation(v_np, f_np)
    info["orientation_flipped"] = int((oriented != f_np).any(1).sum())
    report(progress, "orient", 1, 1)
    seconds["orient"] = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()
    uv_info: dict = {}
    uv_v, uv_f, uvs, _ = unwrap_uv(v_np, oriented, time_budget_s=uv_time_budget_s,
                                   progress=lambda d, t: report(progress, "uv_unwrap", d, t), cancel=cancel,
                                   texture_size=texture_size, method=uv_method, info=uv_info)
    seconds["uv_unwrap"] = round(time.perf_counter() - t0, 3)
    info.update(faces=int(len(uv_f)), uv_method=uv_info.get("method"), vertices=int(len(uv_v)))
    use = info["texel_use"] = uv_info["texel_use"]
    if use < LOW_TEXEL_USE:
        info.setdefault("warnings", []).append(
            f"The UV layout covers only {100 * use:.0f} % of the {texture_size} x {texture_size} texture (method "
            f"{uv_info.get('method')}): the textures hold less detail than they could.")
    if "xatlas_groups" in uv_info:
        info["uv_groups"] = uv_info["xatlas_groups"]
    return PreparedMesh(v, f, uv_v, uv_f, uvs)
