"""Flexible dual grid -> triangle mesh (TRELLIS2_FACTS.md §7.3, inference branch).

One vertex per voxel (vertex index = voxel row). A voxel whose a-edge is flagged emits the quad of the 4 voxels
around that edge (``QUAD_OFFSETS[a]``, in quad order q0..q3), kept only if all 4 exist; quads come in
(voxel row, axis x -> y -> z) order, each as its two triangles, consecutively.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .lookup import VoxelLookup

__all__ = ["QUAD_OFFSETS", "dual_vertices_world", "dual_grid_quads", "split_quads", "flexible_dual_grid_to_mesh"]

# [axis, q, xyz]: the voxels around the flagged edge of voxel c are c + QUAD_OFFSETS[axis, q].
QUAD_OFFSETS = torch.tensor([
    [[0, 0, 0], [0, 0, 1], [0, 1, 1], [0, 1, 0]],     # x
    [[0, 0, 0], [1, 0, 0], [1, 0, 1], [0, 0, 1]],     # y
    [[0, 0, 0], [0, 1, 0], [1, 1, 0], [1, 0, 0]],     # z
], dtype=torch.long)

# Flagged (voxel, axis) pairs looked up per chunk (4 queries each: bounds the temporaries, ~100 B per pair).
QUAD_CHUNK = 1 << 22


def dual_vertices_world(coords: torch.Tensor, dual_vertices: torch.Tensor, voxel_size: float,
                        origin: float | torch.Tensor = -0.5) -> torch.Tensor:
    """P_v = (c_v + d_v) * voxel_size + origin, fp32 [M, 3]."""
    return (coords.float() + dual_vertices.float()) * voxel_size + torch.as_tensor(
        origin, dtype=torch.float32, device=coords.device)


def dual_grid_quads(coords: torch.Tensor, intersected: torch.Tensor, lookup: VoxelLookup | None = None) -> torch.Tensor:
    """int64 [Q, 4]: rows of the 4 voxels of each kept quad, in emission order."""
    if intersected.shape != coords.shape or intersected.dtype != torch.bool:
        raise ValueError("intersected must be a bool [M, 3] beside coords [M, 3]")
    lookup = lookup or VoxelLookup(coords)
    row, axis = intersected.nonzero(as_tuple=True)             # row-major: voxel row, then axis x, y, z
    offsets = QUAD_OFFSETS.to(coords.device)
    parts = []
    for a in range(0, row.shape[0], QUAD_CHUNK):
        r, ax = row[a:a + QUAD_CHUNK], axis[a:a + QUAD_CHUNK]
        idx = lookup.find(coords[r].long()[:, None, :] + offsets[ax])
        parts.append(idx[(idx >= 0).all(dim=1)])
    return torch.cat(parts) if parts else torch.zeros(0, 4, dtype=torch.long, device=coords.device)


def split_quads(quads: torch.Tensor, split_weight: torch.Tensor | None = None,
                vertices: torch.Tensor | None = None) -> torch.Tensor:
    """int64 [2Q, 3]: each quad's two triangles, consecutively.

    With weights w_i of q_i: w0 w2 > w1 w3 -> (q0,q1,q2), (q0,q2,q3); else (q0,q1,q3), (q3,q1,q2). Without
    weights the split whose two triangle normals are more aligned (cosine; a tie takes the first split)."""
    q0, q1, q2, q3 = quads.unbind(dim=1)
    if split_weight is not None:
        w = split_weight[quads]
        first = w[:, 0] * w[:, 2] > w[:, 1] * w[:, 3]
    elif vertices is not None:
        def cos(a, b, c, d, e, f):
            n1 = torch.cross(vertices[b] - vertices[a], vertices[c] - vertices[a], dim=-1)
            n2 = torch.cross(vertices[e] - vertices[d], vertices[f] - vertices[d], dim=-1)
            return (F.normalize(n1, dim=-1) * F.normalize(n2, dim=-1)).sum(-1)
        first = cos(q0, q1, q2, q0, q2, q3) >= cos(q0, q1, q3, q3, q1, q2)
    else:
        raise ValueError("split_quads needs the split weights or the vertices")
    f = first[:, None]
    t1 = torch.where(f, torch.stack([q0, q1, q2], 1), torch.stack([q0, q1, q3], 1))
    t2 = torch.where(f, torch.stack([q0, q2, q3], 1), torch.stack([q3, q1, q2], 1))
    return torch.stack([t1, t2], dim=1).reshape(-1, 3)


def flexible_dual_grid_to_mesh(coords: torch.Tensor, dual_vertices: torch.Tensor, intersected: torch.Tensor,
                               split_weight: torch.Tensor | None, resolution: int,
                               origin: float | torch.Tensor = -0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """(vertices fp32 [M, 3] in world units, faces int64 [F, 3]) of one object; voxel size 1 / resolution.
    Unreferenced vertices are kept (vertex i is voxel i)."""
    if coords.ndim != 2 or coords.shape[1] != 3:
        raise ValueError(f"coords must be [M, 3] (x, y, z), got {tuple(coords.shape)}")
    if resolution <= 0:
        raise ValueError(f"resolution must be positive, got {resolution}")
    vertices = dual_vertices_world(coords, dual_vertices, 1.0 / resolution, origin)
    quads = dual_grid_quads(coords, intersected)
    faces = split_quads(quads, split_weight, None if split_weight is not None else vertices)
    return vertices, faces
