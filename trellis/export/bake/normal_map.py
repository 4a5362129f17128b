"""The tangent-space normal map: the dense decoder mesh's shading detail, baked onto the exported low-poly mesh.

What a texel holds: the dense mesh's smooth normal where the low-poly surface at that texel maps onto it, written in
the low-poly mesh's tangent frame (``tangents``: glTF's convention), encoded as (n + 1) / 2 per channel, so that a
viewer that interpolates the written normals and tangents and applies the map shades the low-poly mesh as the dense
one. The correspondence is made through the bake's own observation views: each view renders the dense mesh's
normals, and the colour bake's least-squares accumulator (``least_squares.TextureAccumulator``: depth test, cos²
weights, texel footprint, smoothness) folds them into the low-poly atlas, exactly as it folds the Gaussians' colours
(a texel's surface point is matched to the dense surface seen through it, mostly head-on). The result, in world
space, is turned into each texel's tangent frame; texels no view saw and the gutter are inpainted from their
neighbours. ``shading_normals`` renders what a viewer then shows, for the benchmark and the tests.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ...core.callbacks import StageProgress, check
from ...core.segment_sum import index_add_in_order_
from ...renderers.mesh_render import interpolate, rasterize
from ..normals import DEFAULT_CREASE_ANGLE, split_vertex_normals
from ..tangents import vertex_tangents
from ..uv.stats import uv_raster
from .inpaint import inpaint_texture
from .least_squares import TextureAccumulator
from .views import sample_texture, view_clip

__all__ = ["smooth_normals", "corner_frames", "bake_normal_map", "shading_normals", "dense_normals_view",
           "angular_error"]



def smooth_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted unit vertex normals [V,3]: the dense mesh's shading normals (a decoder mesh has no creases
    finer than its cells)."""
    a, b, c = (vertices[faces[:, k]] for k in range(3))
    n = torch.cross(b - a, c - a, dim=-1)
    out = torch.zeros_like(vertices)
    for k in range(3):
        index_add_in_order_(out, faces[:, k], n)
    return F.normalize(out, dim=-1)


def corner_frames(vertices, faces, uvs, crease_angle: float | None = DEFAULT_CREASE_ANGLE, split=None) -> dict:
    """The frames the written file carries, per face corner: ``normal`` [F,3,3] (split at ``crease_angle`` as the
    GLB writes them; ``split``: that split made already, ``normals.SharedSplit.value()``) and ``tangent`` [F,3,4]
    (``vertex_tangents`` of that split mesh), float64 numpy."""
    v = np.asarray(vertices, np.float64).reshape(-1, 3)
    f = np.asarray(faces, np.int64).reshape(-1, 3)
    uv = np.asarray(uvs, np.float64).reshape(-1, 2)
    if crease_angle is None:
        source, f2 = np.arange(len(v)), f
        normals = smooth_normals(torch.from_numpy(v), torch.from_numpy(f)).numpy()
    else:
        source, f2, normals = split if split is not None else split_vertex_normals(v, f, crease_angle)
    tangents = vertex_tangents(v[source], f2, uv[source], normals).astype(np.float64)
    return {"normal": normals[f2], "tangent": tangents[f2]}


def _clip(vertices: torch.Tensor, extrinsics, intrinsics) -> torch.Tensor:
    dev = vertices.device
    extr = torch.as_tensor(extrinsics, dtype=torch.float32, device=dev).reshape(4, 4)
    intr = torch.as_tensor(intrinsics, dtype=torch.float32, device=dev).reshape(3, 3)
    return view_clip(torch.cat([vertices, torch.ones_like(vertices[:, :1])], -1), extr, intr)


def dense_normals_view(vertices, faces, normals, extrinsics, intrinsics, resolution: int, cancel=None):
    """One view of the dense mesh: (unit normals [H,W,3], mask [H,W] bool, depth [H,W]); the bake's cameras."""
    face_id, bary, depth = rasterize(_clip(vertices, extrinsics, intrinsics), faces, resolution, resolution,
                                     cancel=cancel)
    n = F.normalize(interpolate(normals, face_id, bary, faces), dim=-1)
    return n, face_id > 0, depth


def _tangent_space(world: torch.Tensor, frames: dict, uv_faces, uvs, size: int, cancel=None):
    """World normals [S,S,3] per texel -> (tangent-space unit normals [S,S,3], texels inside a chart [S,S])."""
    dev = world.device
    face_id, bary = uv_raster(uv_faces, uvs, size, device=dev, with_bary=True, cancel=cancel)
    corner_n = torch.as_tensor(frames["normal"], dtype=torch.float32, device=dev)
    corner_t = torch.as_tensor(frames["tangent"], dtype=torch.float32, device=dev)
    n, t, b = _frame(corner_n, corner_t, face_id, bary)
    out = torch.stack([(t * world).sum(-1), (b * world).sum(-1), (n * world).sum(-1)], -1)
    inside = face_id > 0
    flat = torch.zeros_like(out)
    flat[..., 2] = 1
    return torch.where(inside[..., None], F.normalize(out, dim=-1), flat), inside


def _frame(corner_n, corner_t, face_id, bary):
    """Per pixel: the unit normal, tangent and bitangent a viewer builds from the interpolated attributes."""
    n = F.normalize(interpolate(corner_n, face_id, bary), dim=-1)
    tw = interpolate(corner_t, face_id, bary)
    t = tw[..., :3]
    t = F.normalize(t - n * (n * t).sum(-1, keepdim=True), dim=-1)
    w = torch.where(tw[..., 3:] < 0, -1.0, 1.0)
    return n, t, torch.cross(n, t, dim=-1) * w


def bake_normal_map(dense_vertices, dense_faces, vertices, faces, uvs, texture_size: int, extrinsics, intrinsics,
                    resolution: int, crease_angle: float | None = DEFAULT_CREASE_ANGLE, device=None, cancel=None,
                    progress: StageProgress = None, cg_iterations: int = 30, info: Optional[dict] = None,
                    split=None) -> np.ndarray:
    """uint8 [S,S,3]: the tangent-space normal map of the low-poly (``vertices``, ``faces``, ``uvs``: z up, v up)
    from the dense mesh, through the views (``extrinsics`` [N,4,4], ``intrinsics`` [N,3,3]) at ``resolution``².
    ``info`` (a dict) receives the share of the atlas observed; ``split``: as ``corner_frames``."""
    device = torch.device(device) if device is not None else torch.as_tensor(dense_vertices).device
    dv = torch.as_tensor(np.asarray(dense_vertices) if not torch.is_tensor(dense_vertices) else dense_vertices)
    df = torch.as_tensor(np.asarray(dense_faces) if not torch.is_tensor(dense_faces) else dense_faces)
    dv, df = dv.to(device, torch.float32).reshape(-1, 3), df.to(device, torch.int64).reshape(-1, 3)
    dn = smooth_normals(dv, df)
    acc = TextureAccumulator(vertices, faces, uvs, texture_size, device=device)
    n_views = len(extrinsics)
    # one counter over the whole bake: the views, the solve's iterations, then the frames, the tangent space and the
    # inpainting (on a CPU the part after the views takes as long as the views: it must not sit at its last view)
    total = n_views + cg_iterations + 3

    def report(done: int) -> None:
        if progress is not None:
            progress("normal_map", min(done, total), total)
    for i in range(n_views):
        check(cancel)
        normals, mask, depth = dense_normals_view(dv, df, dn, extrinsics[i], intrinsics[i], resolution, cancel)
        acc.add_view((normals + 1) / 2, mask, extrinsics[i], intrinsics[i], depth=depth, cancel=cancel)
        report(i + 1)
    encoded, observed = acc.solve(iterations=cg_iterations, cancel=cancel,
                                  progress=lambda d, t: report(n_views + round(d * cg_iterations / max(t, 1))))
    world = F.normalize(encoded * 2 - 1, dim=-1)
    check(cancel)
    frames = corner_frames(vertices, faces, uvs, crease_angle, split)
    report(n_views + cg_iterations + 1)
    check(cancel)
    local, inside = _tangent_space(world, frames, faces, uvs, int(texture_size), cancel)
    report(n_views + cg_iterations + 2)
    known = observed & inside
    if info is not None:
        info["normal_map_observed_share"] = float(known.sum()) / max(int(inside.sum()), 1)
    out = inpaint_texture((local + 1) / 2, known)
    report(total)
    return out


def shading_normals(vertices, faces, uvs, normal_map, extrinsics, intrinsics, resolution: int,
                    crease_angle: float | None = DEFAULT_CREASE_ANGLE, device="cpu"):
    """What a viewer shades the low-poly mesh with in one view: (unit world normals [H,W,3], mask [H,W]); the
    interpolated vertex normals alone when ``normal_map`` is None, else perturbed by the map in their tangent
    frames (bilinear lookup, as a viewer samples it)."""
    v = torch.as_tensor(np.asarray(vertices), dtype=torch.float32, device=device).reshape(-1, 3)
    f = torch.as_tensor(np.asarray(faces), dtype=torch.int64, device=device).reshape(-1, 3)
    face_id, bary, _ = rasterize(_clip(v, extrinsics, intrinsics), f, resolution, resolution)
    frames = corner_frames(vertices, faces, uvs, crease_angle)
    corner_n = torch.as_tensor(frames["normal"], dtype=torch.float32, device=device)
    corner_t = torch.as_tensor(frames["tangent"], dtype=torch.float32, device=device)
    n, t, b = _frame(corner_n, corner_t, face_id, bary)
    mask = face_id > 0
    if normal_map is None:
        return n, mask
    uv = interpolate(torch.as_tensor(np.asarray(uvs), dtype=torch.float32, device=device)[f], face_id, bary)
    tex = torch.as_tensor(np.asarray(normal_map), device=device).float() / 255
    m = sample_texture(tex, uv.reshape(-1, 2)).reshape(uv.shape[0], uv.shape[1], 3) * 2 - 1
    out = F.normalize(t * m[..., :1] + b * m[..., 1:2] + n * m[..., 2:], dim=-1)
    return torch.where(mask[..., None], out, n), mask


def angular_error(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean angle in degrees between unit normals ``a`` and ``b`` [H,W,3] over ``mask``."""
    cos = (a * b).sum(-1).clamp(-1, 1)[mask]
    return float(torch.rad2deg(torch.acos(cos)).mean()) if cos.numel() else math.nan
