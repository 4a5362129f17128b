"""The PBR bake of an O-Voxel export (TRELLIS2_FACTS.md §12.5, with our rasteriser): no rendering, the voxels'
attributes sampled where each texel lies on the surface.

1. The UV layout rasterised at ``texture_size``² (``uv.stats.uv_raster``: our exact rasteriser, on the O-Voxel's
   device): per covered texel its face and barycentrics, hence its 3-D point on the decimated mesh.
2. With ``project`` (the default, as the reference) that point moved to the closest point of the dense, undecimated
   mesh (``surface_grid``), where the attributes were decoded.
3. The attributes there by trilinear ``grid_sample_3d`` of the voxel attribute volume (``MeshWithVoxel.query_attrs``).
4. Base colour (RGB) and alpha, metallic and roughness (glTF's metallic-roughness layout: R unused 0, G roughness,
   B metallic), each x255 clipped to uint8 (rounded), the gutter and uncovered texels filled from the charts
   (``bake.inpaint.inpaint_texture``, channel by channel, which is what the push-pull does). With ``fit_texels``
   (the default) base colour and roughness are then fitted to the attributes at four sub-texel points as a
   bilinear lookup reads them (``texel_fit``: edges finer than a texel stay where they are), and the texels the
   fit did not reach filled again. Metallic stays point-sampled: its 0 / 1 borders, read against 0.5, sit where
   the point samples put them, and the fit's overshoot moves them.
5. With ``normal_map``, the dense mesh's normals in the low-poly tangent frames (``dense_normals``).
"""
from __future__ import annotations

import time
from typing import NamedTuple

import numpy as np
import torch

from ...core.callbacks import StageProgress, check
from ..arrays import report
from ..bake.inpaint import inpaint_texture
from ..normals import DEFAULT_CREASE_ANGLE
from ..uv.stats import uv_raster
from .dense_normals import VertexFaces, dense_normals_at, split_tangents, tangent_space_normals, texel_frames
from .surface_grid import SurfaceGrid
from .texel_fit import fit_bilinear, subsample_points

__all__ = ["PROJECT_CHUNK", "PbrTextures", "texel_points", "bake_pbr_textures"]

# Texels projected per call (bounds the candidate lists; progress is reported per chunk).
PROJECT_CHUNK = 1 << 18


class PbrTextures(NamedTuple):
    """uint8 images, row 0 = top (texel of (u, v) at column u S, row (1 - v) S): ``base_color`` [S,S,3],
    ``alpha`` [S,S], ``metallic_roughness`` [S,S,3] (0, roughness, metallic), ``normal`` [S,S,3] tangent-space
    or None; ``covered`` [S,S] bool: the texels inside a chart; ``tangents``: with ``normal``, the float32
    [V',4] TANGENT (z up) of the normals' split that the normal map was baked in (``split_tangents``)."""
    base_color: np.ndarray
    alpha: np.ndarray
    metallic_roughness: np.ndarray
    normal: np.ndarray | None
    covered: np.ndarray
    tangents: np.ndarray | None = None


def texel_points(vertices: torch.Tensor, faces: torch.Tensor, uvs: torch.Tensor, size: int, cancel=None):
    """(flat texel index [P], face [P], barycentrics [P,3], 3-D point [P,3]) of the texels covered by the UV
    layout of ``faces`` over ``vertices`` / ``uvs`` (tensors on one device)."""
    face_id, bary = uv_raster(faces, uvs, size, device=vertices.device, with_bary=True, cancel=cancel)
    flat = face_id.reshape(-1)
    pix = torch.nonzero(flat > 0)[:, 0]
    face = flat[pix] - 1
    b = bary.reshape(-1, 3)[pix]
    points = (vertices[faces[face]] * b[:, :, None]).sum(1)
    return pix, face, b, points


def _project(dense_v, dense_f, points, progress, cancel, info):
    """The closest dense point of each of ``points`` (``SurfaceHit``), chunk by chunk."""
    grid = SurfaceGrid(dense_v, dense_f)
    hits = []
    n = points.shape[0]
    for a in range(0, n, PROJECT_CHUNK):
        check(cancel)
        hits.append(grid.closest(points[a:a + PROJECT_CHUNK], cancel=cancel))
        report(progress, "project", min(n, a + PROJECT_CHUNK), n)
    if not hits:                               # no texel covered (a tiny mesh at a small size): empty answers
        hits.append(grid.closest(points[:0], cancel=cancel))
    point, face, bary, exact = (torch.cat(parts) for parts in zip(*hits))
    found = face >= 0
    moved = (point - points).norm(dim=-1)[found]
    info["projection"] = {"cell": grid.cell, "found_share": float(found.float().mean()) if n else 1.0,
                          "exact_share": float(exact.float().mean()) if n else 1.0,
                          "mean_distance": float(moved.mean()) if moved.numel() else 0.0,
                          "max_distance": float(moved.max()) if moved.numel() else 0.0}
    return point, face, bary


def _channel(mesh, attrs: torch.Tensor, name: str, default: float) -> torch.Tensor:
    """[P, k] channels ``name`` of the sampled attributes, or ``default`` where the layout has none."""
    if name in mesh.layout:
        return attrs[:, mesh.layout[name]]
    if name == "base_color":
        raise ValueError("the O-Voxel attributes have no base_color channels")
    return attrs.new_full((attrs.shape[0], 1), default)


def _fitted(mesh, v, f, uv, face, points, pix, base, amr_u8, s: int, info: dict):
    """(base colour, alpha-roughness-metallic) uint8 images with base colour and roughness fitted to the attributes
    at the sub-texel points (``texel_fit``), alpha and metallic as they were."""
    t0 = time.perf_counter()
    sub = subsample_points(v, f, uv, face, points, s).reshape(-1, 3)
    attrs = mesh.query_attrs(sub)
    wanted = torch.cat([_channel(mesh, attrs, "base_color", 0.0), _channel(mesh, attrs, "roughness", 1.0)],
                       1).clamp(0, 1)
    dev = pix.device
    start = torch.cat([torch.as_tensor(base, device=dev).reshape(-1, 3),
                       torch.as_tensor(amr_u8, device=dev).reshape(-1, 3)[:, 1:2]], 1).float() / 255
    texels, solved = fit_bilinear(start, pix, wanted, s)
    texels = texels.clamp(0, 1).reshape(s, s, 4)
    known = solved.reshape(s, s)
    rgb = inpaint_texture(texels[..., :3], known)
    rough = inpaint_texture(texels[..., 3:].expand(s, s, 3), known)
    amr = amr_u8.copy()
    amr[..., 1] = rough[..., 0]
    info["texel_fit"] = {"samples": int(sub.shape[0]), "solved_share": round(float(solved.float().mean()), 4),
                         "seconds": round(time.perf_counter() - t0, 3)}
    return rgb, amr


def bake_pbr_textures(mesh, dense_vertices: torch.Tensor, dense_faces: torch.Tensor, vertices, faces, uvs,
                      texture_size: int = 2048, project: bool = True, normal_map: bool = True,
                      crease_angle: float | None = DEFAULT_CREASE_ANGLE, split=None, progress: StageProgress = None,
                      cancel=None, info: dict | None = None, fit_texels: bool = True) -> PbrTextures:
    """The textures of ``mesh`` (a ``MeshWithVoxel`` with attributes) on the unwrapped mesh ``vertices`` [V,3],
    ``faces`` [F,3], ``uvs`` [V,2] (numpy, z up, v up), projected onto the dense mesh (``dense_vertices``,
    ``dense_faces``: the decoder's mesh); see the module docstring. ``split``: the ``normals.SharedSplit``
    of these faces that the files' normals come from (made in its thread while the attributes are baked), or None.
    ``info`` gets "covered_share", "projection" and, with ``fit_texels``, "texel_fit"."""
    if mesh.attrs is None:
        raise ValueError("this O-Voxel mesh has no attributes (the texture decoder has not run)")
    if normal_map and crease_angle is None:
        raise ValueError("normal_map=True needs vertex normals (crease_angle=None writes none)")
    info = {} if info is None else info
    dev, s = mesh.device, int(texture_size)
    v = torch.as_tensor(np.asarray(vertices), dtype=torch.float32, device=dev)
    f = torch.as_tensor(np.asarray(faces), dtype=torch.int64, device=dev)
    uv = torch.as_tensor(np.asarray(uvs), dtype=torch.float32, device=dev)
    report(progress, "bake", 0, 3)
    pix, face, bary, points = texel_points(v, f, uv, s, cancel)
    info["covered_share"] = pix.numel() / (s * s)
    report(progress, "bake", 1, 3)
    dense_face = dense_bary = None
    if project:
        hit, dense_face, dense_bary = _project(dense_vertices.float(), dense_faces.long(), points, progress,
                                               cancel, info)
        points = torch.where((dense_face >= 0)[:, None], hit, points)
    check(cancel)
    report(progress, "attributes", 0, 1)
    attrs = mesh.query_attrs(points)
    rgb = _channel(mesh, attrs, "base_color", 0.0)
    amr = torch.cat([_channel(mesh, attrs, "alpha", 1.0), _channel(mesh, attrs, "roughness", 1.0),
                     _channel(mesh, attrs, "metallic", 0.0)], 1)
    covered = torch.zeros(s * s, dtype=torch.bool, device=dev)
    covered[pix] = True
    covered = covered.reshape(s, s)
    report(progress, "bake", 2, 3)
    check(cancel)
    report(progress, "inpaint", 0, 1)
    images = []
    for values in (rgb, amr):
        img = torch.zeros(s * s, 3, device=dev)
        img[pix] = values.float().clamp(0, 1)
        images.append(inpaint_texture(img.reshape(s, s, 3), covered))
    base, amr_u8 = images
    if fit_texels and pix.numel():
        check(cancel)
        base, amr_u8 = _fitted(mesh, v, f, uv, face, points, pix, base, amr_u8, s, info)
    report(progress, "inpaint", 1, 1)
    mr = np.stack([np.zeros_like(amr_u8[..., 0]), amr_u8[..., 1], amr_u8[..., 2]], -1)
    normal = tangents = None
    if normal_map:
        check(cancel)
        report(progress, "normal_map", 0, 1)
        world = None
        if dense_face is not None:             # before the frames: made while the split's thread may still run
            around = VertexFaces(dense_faces.long(), dense_vertices.shape[0])
            world = dense_normals_at(dense_vertices, dense_faces.long(), around, dense_face, dense_bary)
        shared = None if split is None else split.for_faces(faces, crease_angle)
        shared, tangents = split_tangents(vertices, faces, uvs, crease_angle, shared)
        frame = texel_frames(vertices, faces, uvs, face, bary, crease_angle, shared, tangents)
        if world is None:
            world = frame[0]
        local = tangent_space_normals(world, frame)
        img = torch.zeros(s * s, 3, device=dev)
        img[:, 2] = 1
        img[pix] = local
        normal = inpaint_texture(((img + 1) / 2).reshape(s, s, 3), covered)
        report(progress, "normal_map", 1, 1)
    report(progress, "bake", 3, 3)
    return PbrTextures(base, amr_u8[..., 0].copy(), mr, normal, covered.cpu().numpy(), tangents)
