"""The lit turntable of a PBR textured mesh (``trellis.export.pbr.PbrTexturedMesh``, what TRELLIS.2's bake makes):
the orbit and frame count of ``render_utils.render_video`` (``renderers.cameras.video_cameras``), the frames drawn
by ``renderers.pbr_view.render_pbr_views`` several at a time. The app's TRELLIS.2 preview video.

The mesh is shaded with the normals its files carry (split at the crease angle its normal map was baked for) and,
with a normal map, the glTF tangents of those normals (``export.tangents``), so the video shows the material as a
glTF viewer would.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from ...core.callbacks import CancelCheck, StepProgress, check
from ...renderers.cameras import image_size, video_cameras
from ...renderers.pbr_view import PbrSurface, pbr_surface, render_pbr_views, views_at_once
from ..assemble import with_normals
from ..normals import DEFAULT_CREASE_ANGLE
from ..tangents import vertex_tangents

__all__ = ["surface_of", "iter_pbr_frames", "render_pbr_frames", "iter_pbr_video", "render_pbr_video"]


def surface_of(textured, device="cpu", render_size: Optional[int] = None) -> PbrSurface:
    """The ``PbrSurface`` of a baked mesh (a ``PbrTexturedMesh``; a plain ``TexturedMesh`` renders as a rough
    dielectric) on `device`; `render_size` as ``pbr_surface`` takes it."""
    if textured.texture is None:
        raise ValueError("the mesh has no base colour texture to render (a geometry-only bake)")
    crease = (textured.info or {}).get("normal_map", {}).get("crease_angle", DEFAULT_CREASE_ANGLE)
    split = textured.split.for_faces(textured.faces, crease) if textured.split is not None else None
    v, f, uv, normals = with_normals(textured.vertices, textured.faces, textured.uvs, crease, split)
    normal_map = textured.normal_texture
    tangents = vertex_tangents(v, f, uv, normals) if normal_map is not None else None
    pbr = getattr(textured, "pbr", None)
    size = np.asarray(textured.texture).shape[0]
    if pbr is None:        # no material maps: not metal, fully rough (glTF B = metallic, G = roughness)
        metal_rough = np.zeros((size, size, 3), np.uint8)
        metal_rough[..., 1] = 255
        alpha, mode, cutoff = None, "OPAQUE", None
    else:
        metal_rough, alpha, mode, cutoff = pbr.metallic_roughness, pbr.alpha, pbr.alpha_mode, pbr.alpha_cutoff
    return pbr_surface(v, f, uv, normals, textured.texture, metal_rough, alpha=alpha, normal_map=normal_map,
                       tangents=tangents, alpha_mode=mode, alpha_cutoff=cutoff, device=device,
                       render_size=render_size)


def iter_pbr_frames(surface: PbrSurface, extrinsics: torch.Tensor, intrinsics: torch.Tensor, resolution,
                    ssaa: int = 1, bg_color=(0.0, 0.0, 0.0), progress: StepProgress = None,
                    cancel: CancelCheck = None):
    """uint8 HxWx3 frames of `surface` from each camera (extrinsics [n,4,4], intrinsics [n,3,3]), yielded one by one
    as each pass of ``views_at_once`` frames is drawn; ``progress(done, n)`` after each frame, ``cancel`` checked
    before each pass (and inside the rasteriser)."""
    n = extrinsics.shape[0]
    step = views_at_once(resolution, ssaa, surface.vertices.device)
    for a in range(0, n, step):
        check(cancel)
        b = min(a + step, n)
        images = render_pbr_views(surface, extrinsics[a:b], intrinsics[a:b], resolution, ssaa=ssaa,
                                  bg_color=bg_color, cancel=cancel)["color"]
        # uint8 on the device (exact: clamp, x255, truncate, as render_utils' colour frames), then one small copy
        frames = images.clamp(0, 1).mul(255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().cpu().numpy()
        del images
        for i, frame in enumerate(frames, start=a):
            yield frame
            if progress is not None:
                progress(i + 1, n)


def render_pbr_frames(surface: PbrSurface, extrinsics: torch.Tensor, intrinsics: torch.Tensor, resolution,
                      ssaa: int = 1, bg_color=(0.0, 0.0, 0.0), progress: StepProgress = None,
                      cancel: CancelCheck = None) -> list:
    """``iter_pbr_frames``' frames, as a list."""
    return list(iter_pbr_frames(surface, extrinsics, intrinsics, resolution, ssaa, bg_color, progress, cancel))


def iter_pbr_video(textured, resolution: int = 512, num_frames: int = 300, r: float = 2.0, fov: float = 40.0,
                   bg_color=(0.0, 0.0, 0.0), ssaa: Optional[int] = None, device=None,
                   progress: StepProgress = None, cancel: CancelCheck = None):
    """Turntable frames (uint8 HxWx3) of a baked PBR mesh on ``render_video``'s orbit, yielded as each is drawn (an
    encoder takes each while the next renders). `device`: where it renders (default: CUDA when there is one);
    `ssaa`: supersampling per side (default 2 on a GPU, 1 on a CPU, where each frame's pixels are the cost)."""
    if num_frames < 1:
        raise ValueError("num_frames must be >= 1")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    ssaa = ssaa or (1 if device.type == "cpu" else 2)
    surface = surface_of(textured, device, render_size=max(image_size(resolution)) * ssaa)
    extrinsics, intrinsics = video_cameras(num_frames, r, fov)
    return iter_pbr_frames(surface, extrinsics.to(device), intrinsics.to(device), resolution, ssaa=ssaa,
                           bg_color=bg_color, progress=progress, cancel=cancel)


def render_pbr_video(textured, resolution: int = 512, num_frames: int = 300, r: float = 2.0, fov: float = 40.0,
                     bg_color=(0.0, 0.0, 0.0), ssaa: Optional[int] = None, device=None,
                     progress: StepProgress = None, cancel: CancelCheck = None) -> list:
    """``iter_pbr_video``'s frames, as a list."""
    return list(iter_pbr_video(textured, resolution, num_frames, r, fov, bg_color, ssaa, device, progress, cancel))
