"""One lit view of a mesh with a metallic-roughness material (glTF's ``pbrMetallicRoughness`` maps), drawn by the
exact rasteriser of mesh_render.py (its conventions: OpenCV camera, row 0 = top) and shaded per pixel by
pbr_shading.py. Pure PyTorch, on the surface's device.

``pbr_surface`` takes the arrays a baked mesh holds (numpy or torch: vertices z up, UVs with v up, the textures
uint8 with their top row first, as glTF images) and makes a ``PbrSurface`` of tensors once; ``render_pbr`` then
draws it from any number of cameras (``render_pbr_views``: several in one pass). Textures larger than the render needs are first reduced by area averaging to
the smallest power-of-two step that keeps about a texel per pixel: one fixed mip level, so the turntable's fine
texture does not shimmer from frame to frame.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F

from ..core.callbacks import check as check_cancel
from .cameras import image_size, projection_opencv
from .mesh_render import interpolate, rasterize
from .pbr_shading import apply_normal_map, linear_to_srgb, shade, srgb_to_linear

__all__ = ["PbrSurface", "pbr_surface", "render_pbr", "render_pbr_views", "views_at_once", "VIEW_PIXELS",
           "ALPHA_MODES"]

ALPHA_MODES = ("OPAQUE", "MASK", "BLEND")


class PbrSurface(NamedTuple):
    """A mesh and its material as tensors on one device (``pbr_surface`` makes it)."""
    vertices: torch.Tensor          # [V,3] float32, world frame
    faces: torch.Tensor             # [F,3] int64
    uvs: torch.Tensor               # [V,2] float32, v up
    normals: torch.Tensor           # [V,3] float32 unit vertex normals
    face_normals: torch.Tensor      # [F,3] float32 unit geometric normals (which side a pixel sees)
    tangents: Optional[torch.Tensor]    # [V,4] float32 (unit tangent, handedness), with a normal map
    base_color: torch.Tensor        # [1,3,T,T] float32 linear
    alpha: Optional[torch.Tensor]   # [1,1,T,T] float32, None for an opaque material
    metal_rough: torch.Tensor       # [1,2,T,T] float32 (metallic, roughness)
    normal_map: Optional[torch.Tensor]  # [1,3,T,T] float32 in [-1, 1], tangent space
    alpha_mode: str = "OPAQUE"
    alpha_cutoff: float = 0.5


def _tensor(x, dtype, device) -> torch.Tensor:
    return torch.as_tensor(x).to(device=device, dtype=dtype)


def _image(x, device, max_side: Optional[int]) -> torch.Tensor:
    """uint8 [H,W(,C)] -> float [1,C,H',W'] in [0, 1], reduced by powers of two while still larger than
    twice `max_side` (area averaging: the mean of the texels a pixel covers)."""
    t = _tensor(x, torch.float32, device) / 255.0
    t = (t[..., None] if t.dim() == 2 else t).permute(2, 0, 1)[None]
    while max_side and min(t.shape[-2:]) >= 2 * max_side and min(t.shape[-2:]) % 2 == 0:
        t = F.avg_pool2d(t, 2)
    return t


def _face_normals(v: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return F.normalize(torch.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]], dim=-1), dim=-1)


def pbr_surface(vertices, faces, uvs, normals, base_color, metallic_roughness, alpha=None, normal_map=None,
                tangents=None, alpha_mode: str = "OPAQUE", alpha_cutoff: Optional[float] = None,
                device="cpu", render_size: Optional[int] = None) -> PbrSurface:
    """A ``PbrSurface`` from a baked mesh's arrays: base_color uint8 [T,T,3] sRGB, metallic_roughness uint8
    [T,T,3] (glTF: G roughness, B metallic), alpha uint8 [T,T] or None, normal_map uint8 [T,T,3] tangent space
    (``(n + 1) / 2``) with ``tangents`` [V,4] or None; `render_size` (the rendered side, supersampling included):
    larger textures are reduced towards it (module docstring)."""
    if alpha_mode not in ALPHA_MODES:
        raise ValueError(f"alpha_mode must be one of {ALPHA_MODES}, got {alpha_mode!r}")
    if normal_map is not None and tangents is None:
        raise ValueError("a normal map needs the tangents it was baked in")
    if alpha_mode != "OPAQUE" and alpha is None:
        raise ValueError(f"alpha_mode {alpha_mode} needs the alpha image")
    v = _tensor(vertices, torch.float32, device).reshape(-1, 3)
    uv = _tensor(uvs, torch.float32, device).reshape(-1, 2)
    n = _tensor(normals, torch.float32, device).reshape(-1, 3)
    if uv.shape[0] != v.shape[0] or n.shape[0] != v.shape[0]:
        raise ValueError(f"{v.shape[0]} vertices with {uv.shape[0]} UVs and {n.shape[0]} normals")
    mr = _image(metallic_roughness, device, render_size)
    f = _tensor(faces, torch.int64, device).reshape(-1, 3)
    return PbrSurface(
        vertices=v, faces=f, uvs=uv, normals=F.normalize(n, dim=-1), face_normals=_face_normals(v, f),
        tangents=None if tangents is None else _tensor(tangents, torch.float32, device).reshape(-1, 4),
        base_color=srgb_to_linear(_image(base_color, device, render_size)[:, :3]),
        alpha=None if alpha_mode == "OPAQUE" else _image(alpha, device, render_size)[:, :1],
        metal_rough=torch.cat([mr[:, 2:3], mr[:, 1:2]], 1),
        normal_map=None if normal_map is None else _image(normal_map, device, render_size)[:, :3] * 2 - 1,
        alpha_mode=alpha_mode, alpha_cutoff=0.5 if alpha_cutoff is None else float(alpha_cutoff))


def _sample(texture: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear lookups [P,C] of `texture` [1,C,T,T] at `uv` [P,2] (v up, so v = 1 is the image's top row)."""
    grid = torch.stack([uv[:, 0] * 2 - 1, 1 - uv[:, 1] * 2], -1).reshape(1, 1, -1, 2)
    out = F.grid_sample(texture, grid.to(texture.dtype), mode="bilinear", padding_mode="border",
                        align_corners=False)
    return out[0, :, 0].T


# Pixels (at the supersampled size) shaded in one pass of ``render_pbr_views``: a frame's hundreds of small kernels
# cost more than its arithmetic on a GPU (8 views of 1024^2 a pass); a CPU's passes stay small in memory.
VIEW_PIXELS = {"cuda": 1 << 23, "cpu": 1 << 20}


def views_at_once(resolution, ssaa: int, device) -> int:
    """How many views ``render_pbr_views`` shades in one pass on `device` at `resolution` x `ssaa`."""
    height, width = image_size(resolution)
    budget = VIEW_PIXELS.get(torch.device(device).type, VIEW_PIXELS["cpu"])
    return max(1, budget // (height * width * ssaa * ssaa))


def render_pbr(surface: PbrSurface, extrinsics: torch.Tensor, intrinsics: torch.Tensor, resolution,
               ssaa: int = 1, bg_color=(0.0, 0.0, 0.0), near: float = 0.1, far: float = 100.0,
               cancel=None) -> dict:
    """One lit view: {"color": [3,H,W] float32 sRGB in [0, 1] over `bg_color` (sRGB), "mask": [1,H,W] coverage}.

    extrinsics [4,4] OpenCV world->camera, intrinsics [3,3] normalised; the image is rasterised and shaded at
    resolution * ssaa and reduced by area averaging in linear light. Both faces of a triangle are lit (the normal
    is turned towards the camera), as glTF's double-sided materials are; MASK drops texels below the cutoff, BLEND
    mixes the surface over the background with its alpha."""
    out = render_pbr_views(surface, extrinsics.reshape(1, 4, 4), intrinsics.reshape(1, 3, 3), resolution, ssaa,
                           bg_color, near, far, cancel)
    return {"color": out["color"][0], "mask": out["mask"][0]}


def render_pbr_views(surface: PbrSurface, extrinsics: torch.Tensor, intrinsics: torch.Tensor, resolution,
                     ssaa: int = 1, bg_color=(0.0, 0.0, 0.0), near: float = 0.1, far: float = 100.0,
                     cancel=None) -> dict:
    """``render_pbr`` of K cameras (extrinsics [K,4,4], intrinsics [K,3,3]) in one pass: {"color": [K,3,H,W],
    "mask": [K,1,H,W]}, each view the pixels ``render_pbr`` gives it (every step is per pixel or per view). Each view
    is rasterised on its own; the covered pixels of all K are shaded together (``views_at_once`` sizes K)."""
    height, width = image_size(resolution)
    hs, ws = height * ssaa, width * ssaa
    views = extrinsics.shape[0]
    device = surface.vertices.device
    ext = extrinsics.reshape(views, 4, 4).to(device=device, dtype=torch.float32)
    intr = intrinsics.reshape(views, 3, 3).to(device=device, dtype=torch.float32)
    v = surface.vertices
    homogeneous = torch.cat([v, torch.ones_like(v[:, :1])], -1)
    face_ids, barys = [], []
    for i in range(views):
        clip = homogeneous @ (projection_opencv(intr[i], near, far) @ ext[i]).T
        face_id, bary, _ = rasterize(clip, surface.faces, hs, ws, cancel=cancel)
        face_ids.append(face_id)
        barys.append(bary)
        check_cancel(cancel)
    face_id, bary = torch.cat(face_ids), torch.cat(barys)          # the views stacked: [K*hs, ws]
    del face_ids, barys
    flat = face_id.reshape(-1)
    pix = torch.nonzero(flat > 0)[:, 0]
    bg = srgb_to_linear(torch.tensor(bg_color, dtype=torch.float32, device=device).reshape(3))
    color = bg.expand(views * hs * ws, 3).clone()
    cover = torch.zeros(views * hs * ws, 1, device=device)
    if pix.numel():
        attrs = [surface.vertices, surface.uvs, surface.normals]
        if surface.normal_map is not None:
            attrs.append(surface.tangents)
        table = torch.cat(attrs, -1)
        values = interpolate(table, face_id, bary, faces=surface.faces).reshape(-1, table.shape[1])[pix]
        pos, uv, normal = values[:, :3], values[:, 3:5], values[:, 5:8]
        eyes = torch.stack([torch.linalg.inv(ext[i])[:3, 3] for i in range(views)])
        view = F.normalize(eyes[torch.div(pix, hs * ws, rounding_mode="floor")] - pos, dim=-1)
        # Double-sided: a face seen from behind is lit as its front (the normal map's frame turns with it).
        facing = torch.where((surface.face_normals[flat[pix] - 1] * view).sum(-1, keepdim=True) < 0, -1.0, 1.0)
        normal = F.normalize(normal, dim=-1) * facing
        if surface.normal_map is not None:
            tangent = values[:, 8:11]
            sign = torch.where(values[:, 11:12] < 0, -1.0, 1.0)
            normal = apply_normal_map(normal, tangent, sign, _sample(surface.normal_map, uv))
        # A mapped normal may tilt past the silhouette: keep it on the camera's side.
        normal = F.normalize(normal + view * (0.01 - (normal * view).sum(-1, keepdim=True)).clamp(min=0), dim=-1)
        mr = _sample(surface.metal_rough, uv)
        radiance = shade(_sample(surface.base_color, uv), mr[:, :1], mr[:, 1:2], normal, view)
        alpha = torch.ones_like(mr[:, :1])
        if surface.alpha is not None:
            alpha = _sample(surface.alpha, uv)
            if surface.alpha_mode == "MASK":
                alpha = (alpha >= surface.alpha_cutoff).to(alpha.dtype)
        color[pix] = torch.lerp(bg.expand_as(radiance), radiance, alpha)
        cover[pix] = alpha
    img = color.reshape(views, hs, ws, 3).permute(0, 3, 1, 2)
    mask = cover.reshape(views, hs, ws, 1).permute(0, 3, 1, 2)
    if ssaa > 1:
        img = F.avg_pool2d(img, ssaa)
        mask = F.avg_pool2d(mask, ssaa)
    return {"color": linear_to_srgb(img), "mask": mask}
