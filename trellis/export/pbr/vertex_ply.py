"""A PBR bake as a PLY mesh with per-vertex colours: what point-cloud and mesh tools (MeshLab, CloudCompare, Open3D,
slicers' colour import) read from a PLY, where no texture or material travels. Each vertex takes the base colour (and
alpha, where the material has it) under its UV; the copies the UV unwrap made along its seams are welded back into
one vertex (a PLY has no UVs to keep them apart), keeping the first copy's colour.
"""
from __future__ import annotations

import numpy as np
import torch

from ..bake.views import sample_texture
from ..placement import place

__all__ = ["vertex_colors", "save_vertex_color_ply"]


def _lookup(image, uvs: torch.Tensor) -> np.ndarray:
    """float64 [N,C] of uint8 ``image`` [T,T,C] at ``uvs`` [N,2]: the bake's own sampler (``sample_texture``: texel
    centres at half-integers, v up over a top-row-first image, clamp to edge), in float64 so the uint8 rounding
    after it does not move half-way values."""
    return sample_texture(torch.as_tensor(np.asarray(image), dtype=torch.float64), uvs).numpy()


def vertex_colors(textured) -> np.ndarray:
    """uint8 [V,4] RGBA per vertex of a baked mesh: its base colour texture at the vertex's UV; alpha from the PBR
    material's alpha where it writes one, else 255."""
    if textured.texture is None:
        raise ValueError("the mesh has no base colour texture (a geometry-only bake): no colours for a PLY")
    uvs = np.asarray(textured.uvs, np.float64).reshape(-1, 2)
    if not np.isfinite(uvs).all():
        raise ValueError("the mesh has non-finite UVs: no colours for a PLY")
    uv = torch.from_numpy(uvs)
    rgb = _lookup(np.asarray(textured.texture)[..., :3], uv)
    pbr = getattr(textured, "pbr", None)
    if pbr is not None and pbr.writes_alpha:
        alpha = _lookup(np.asarray(pbr.alpha)[..., None], uv)
    else:
        alpha = np.full((len(uvs), 1), 255.0)
    return np.clip(np.rint(np.concatenate([rgb, alpha], 1)), 0, 255).astype(np.uint8)


def save_vertex_color_ply(textured, path, height: float | None = None, pivot: str | None = None, units: str = "m",
                          up: str = "z") -> str:
    """Write `textured` (a ``TexturedMesh``) as a binary PLY of its welded vertices (with RGBA colours) and faces,
    placed as the other mesh files are (``placement.place``: height in metres, pivot, units, up axis); returns
    `path`."""
    import trimesh

    vertices = place(textured.vertices, height=height, pivot=pivot, units=units, up=up)
    mesh = trimesh.Trimesh(vertices=vertices, faces=np.asarray(textured.faces, np.int64).reshape(-1, 3),
                           vertex_colors=vertex_colors(textured), process=False)
    mesh.merge_vertices(merge_tex=True, merge_norm=True)
    data = mesh.export(file_type="ply", encoding="binary")
    with open(path, "wb") as f:
        f.write(data)
    return str(path)
