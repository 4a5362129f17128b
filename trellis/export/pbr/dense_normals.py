"""The tangent-space normal map of an O-Voxel export, read straight off the dense mesh: each texel's world normal
is the dense mesh's smooth normal at the texel's closest dense point (``surface_grid``), written in the low-poly
mesh's tangent frame as the GLB carries it (``bake.normal_map.corner_frames``: the written normals and ``TANGENT``),
encoded (n + 1) / 2. No views are rendered: the correspondence is the projection the attribute bake made anyway.

The dense dual-grid mesh is not consistently wound (its quads face one way per axis), so its normals are made
sign-blind: at a corner of dense face g the smooth normal sums the (area-weighted) normals of the faces around the
corner's vertex, each turned to agree with g's own; the result is then turned to agree with the low-poly normal
at the texel (which is wound facing out). Only the faces the texels land on are evaluated.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ...core.segment_sum import index_add_in_order_
from ..bake.normal_map import corner_frames
from ..normals import DEFAULT_CREASE_ANGLE, split_vertex_normals
from ..tangents import vertex_tangents

__all__ = ["VertexFaces", "dense_corner_normals", "dense_normals_at", "split_tangents", "texel_frames",
           "tangent_space_normals"]


class VertexFaces:
    """The faces around each vertex of ``faces`` [F,3] (CSR: ``start`` [V+1], ``face`` [3F]) on its device."""

    def __init__(self, faces: torch.Tensor, n_vertices: int):
        flat = faces.reshape(-1)
        order = torch.argsort(flat, stable=True)
        self.face = order // 3
        count = torch.bincount(flat, minlength=n_vertices)
        self.start = torch.zeros(n_vertices + 1, dtype=torch.long, device=faces.device)
        self.start[1:] = torch.cumsum(count, 0)


def dense_corner_normals(vertices: torch.Tensor, faces: torch.Tensor, around: VertexFaces,
                         which: torch.Tensor) -> torch.Tensor:
    """[len(which),3,3] unit smooth normals at the corners of dense faces ``which``, each face's own side up (see
    the module docstring)."""
    v = vertices.float()
    tri = v[faces[which]]
    own = torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)          # [G,3]
    corner_v = faces[which].reshape(-1)                                               # [3G]
    lo, hi = around.start[corner_v], around.start[corner_v + 1]
    n = hi - lo
    slot = torch.repeat_interleave(torch.arange(corner_v.numel(), device=v.device), n)
    first = torch.cumsum(n, 0) - n
    idx = lo[slot] + torch.arange(slot.numel(), device=v.device) - first[slot]
    g = faces[around.face[idx]]
    ng = torch.cross(v[g[:, 1]] - v[g[:, 0]], v[g[:, 2]] - v[g[:, 0]], dim=-1)
    ref = own.repeat_interleave(3, dim=0)[slot]
    ng = torch.where(((ng * ref).sum(-1) < 0)[:, None], -ng, ng)
    out = index_add_in_order_(torch.zeros(corner_v.numel(), 3, device=v.device), slot, ng)
    return F.normalize(out, dim=-1).reshape(-1, 3, 3)


def split_tangents(vertices, faces, uvs, crease_angle: float = DEFAULT_CREASE_ANGLE, split=None):
    """(split, tangents): the vertex normals split at ``crease_angle`` as the GLB writes them (``split``: that
    split made already, ``normals.SharedSplit.value()``; else made here) and the float32 [V',4] TANGENT of that
    split mesh (``vertex_tangents``, z up), the frames a normal map is baked in and the GLB then carries."""
    v = np.asarray(vertices, np.float64).reshape(-1, 3)
    uv = np.asarray(uvs, np.float64).reshape(-1, 2)
    if split is None:
        split = split_vertex_normals(v, np.asarray(faces, np.int64).reshape(-1, 3), crease_angle)
    source, f2, normals = split
    return split, vertex_tangents(v[source], f2, uv[source], normals)


def texel_frames(vertices, faces, uvs, face: torch.Tensor, bary: torch.Tensor,
                 crease_angle: float | None = DEFAULT_CREASE_ANGLE, split=None, tangents=None):
    """(normal, tangent, bitangent) [P,3] each, unit, of the low-poly mesh at texels on ``face`` [P] with
    barycentrics ``bary`` [P,3]: the frame a viewer builds from the GLB's interpolated NORMAL and TANGENT.
    ``tangents``: ``split_tangents``' of ``split`` (the same frames as ``corner_frames``', not made again)."""
    if tangents is not None and split is not None:
        _, f2, normals = split
        frames = {"normal": normals[f2], "tangent": np.asarray(tangents, np.float64)[f2]}
    else:
        frames = corner_frames(vertices, faces, uvs, crease_angle, split)
    dev = face.device
    cn = torch.as_tensor(frames["normal"], dtype=torch.float32, device=dev)[face]       # [P,3,3]
    ct = torch.as_tensor(frames["tangent"], dtype=torch.float32, device=dev)[face]      # [P,3,4]
    b = bary.float()[:, :, None]
    n = F.normalize((cn * b).sum(1), dim=-1)
    tw = (ct * b).sum(1)
    t = tw[:, :3]
    t = F.normalize(t - n * (n * t).sum(-1, keepdim=True), dim=-1)
    w = torch.where(tw[:, 3:] < 0, -1.0, 1.0)
    return n, t, torch.cross(n, t, dim=-1) * w


def tangent_space_normals(world: torch.Tensor, frame) -> torch.Tensor:
    """[P,3] unit tangent-space normals of world normals ``world`` [P,3] (turned to the low-poly side first; a
    zero normal reads as the low-poly's own, (0, 0, 1))."""
    n, t, b = frame
    world = torch.where(((world * n).sum(-1) < 0)[:, None], -world, world)
    local = torch.stack([(t * world).sum(-1), (b * world).sum(-1), (n * world).sum(-1)], -1)
    flat = torch.zeros_like(local)
    flat[:, 2] = 1
    return torch.where((world.abs().sum(-1) > 0)[:, None], F.normalize(local, dim=-1), flat)


def dense_normals_at(vertices: torch.Tensor, faces: torch.Tensor, around: VertexFaces, face: torch.Tensor,
                     bary: torch.Tensor) -> torch.Tensor:
    """[P,3] unit smooth dense normals at points on dense faces ``face`` [P] (-1: none, a zero normal) with
    barycentrics ``bary`` [P,3], each on its own face's side."""
    out = torch.zeros(face.shape[0], 3, device=face.device)
    hit = face >= 0
    if not bool(hit.any()):
        return out
    which, inverse = torch.unique(face[hit], return_inverse=True)
    corner = dense_corner_normals(vertices, faces, around, which)[inverse]               # [H,3,3]
    out[hit] = F.normalize((corner * bary[hit].float()[:, :, None]).sum(1), dim=-1)
    return out

