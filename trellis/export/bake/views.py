"""The mesh, its UVs and per-face data rasterised per observation view on one device (``MeshViews``), and the
bilinear texture lookup both bakes share (``sample_texture``, ``bilinear_taps``). Image row 0 = top; textures
are [S,S,C] in the UV convention of ``uv.unwrap`` (texel of (u, v) at column u·S, row (1 − v)·S)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ...renderers.cameras import projection_opencv
from ...renderers.mesh_render import rasterize

__all__ = ["NEAR", "FAR", "view_clip", "MeshViews", "bilinear_taps", "sample_texture"]

NEAR, FAR = 0.1, 10.0


def view_clip(vertices_h: torch.Tensor, extrinsics: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """Homogeneous vertices [V,4] in the clip coordinates of one bake view (extrinsics [4,4], intrinsics [3,3],
    the bake's NEAR / FAR)."""
    return vertices_h @ (projection_opencv(intrinsics, NEAR, FAR) @ extrinsics).T


def _tensor(x, dtype, device) -> torch.Tensor:
    """A tensor or array-like as a tensor of ``dtype`` on ``device``."""
    return torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x, dtype=dtype).to(device)


class MeshViews:
    """The mesh, its UVs and per-face data, rasterised per view on one device.

    ``uvs`` may be None: the geometry alone is rasterised (``raster_geometry``), and ``set_uvs`` attaches the UVs
    later (``to_glb`` rasterises its observation views while the UV unwrap runs)."""

    def __init__(self, vertices, faces, uvs, texture_size, device):
        self.v = _tensor(vertices, torch.float32, device)
        self.f = _tensor(faces, torch.int64, device)
        self.size = int(texture_size)
        self.device = device
        self.v_h = torch.cat([self.v, torch.ones_like(self.v[:, :1])], -1)  # homogeneous, for raster
        a, b, c = (self.v[self.f[:, k]] for k in range(3))
        n = torch.cross(b - a, c - a, dim=-1)
        self.world_area = n.norm(dim=-1) * 0.5
        self.normal = F.normalize(n, dim=-1)
        self.uv = self.uv_faces = self.corner_uv = self.texel_density = None
        if uvs is not None:
            self.set_uvs(uvs)

    def set_uvs(self, uvs, vertices=None, faces=None):
        """Attach UVs: ``uvs`` [V',2] per vertex of ``faces`` [F,3] (default: this mesh's vertices and faces). A
        mesh given with them (``vertices`` [V',3]) must have this mesh's faces in the same order with every corner
        at the same position, as ``unwrap_uv`` returns them (it splits vertices along seams and keeps the faces
        and their corners); a ValueError says otherwise."""
        uv = _tensor(uvs, torch.float32, self.device)
        f = self.f
        if faces is not None:
            f = _tensor(faces, torch.int64, self.device).reshape(-1, 3)
            v = None if vertices is None else _tensor(vertices, torch.float32, self.device).reshape(-1, 3)
            if f.shape != self.f.shape or (v is not None and not torch.equal(v[f], self.v[self.f])):
                raise ValueError("set_uvs: the UV mesh's faces are not this mesh's faces in the same order with "
                                 "their corners in place")
        self.uv, self.uv_faces = uv, f
        self.corner_uv = uv[f]                                            # [F,3,2]
        t = self.corner_uv * self.size
        uv_area = 0.5 * ((t[:, 1, 0] - t[:, 0, 0]) * (t[:, 2, 1] - t[:, 0, 1])
                         - (t[:, 1, 1] - t[:, 0, 1]) * (t[:, 2, 0] - t[:, 0, 0])).abs()
        self.texel_density = uv_area / self.world_area.clamp(min=1e-20)  # texels per unit area

    def raster_geometry(self, extrinsics, intrinsics, height, width, cancel=None):
        """Covered pixels of one view, without the UVs: dict of pix [P] (flat index), face [P], bary [P,3],
        point [P,3], depth [P], cos [P] (|cos| of the view angle), f_px (the focal length in pixels, a 0-d tensor)."""
        extr = torch.as_tensor(extrinsics, dtype=torch.float32, device=self.device).reshape(4, 4)
        intr = torch.as_tensor(intrinsics, dtype=torch.float32, device=self.device).reshape(3, 3)
        face_id, bary, depth = rasterize(view_clip(self.v_h, extr, intr), self.f, height, width, cancel=cancel)
        flat = face_id.reshape(-1)
        pix = torch.nonzero(flat > 0)[:, 0]
        face = flat[pix] - 1
        b = bary.reshape(-1, 3)[pix]
        corners = self.f[face]
        point = (self.v[corners] * b[:, :, None]).sum(1)
        eye = -extr[:3, :3].T @ extr[:3, 3]
        to_eye = F.normalize(eye[None] - point, dim=-1)
        cos = (self.normal[face] * to_eye).sum(-1).abs()
        d = depth.reshape(-1)[pix]
        return dict(pix=pix, face=face, bary=b, point=point, depth=d, cos=cos, f_px=intr[0, 0] * width)

    def with_uvs(self, r):
        """``r`` of ``raster_geometry`` (any subset of its pixels) with uv [P,2] and texels_per_pixel [P] added."""
        uv = (self.corner_uv[r["face"]] * r["bary"][:, :, None]).sum(1)
        # Texels under one pixel: pixel footprint on the surface (d / f_px)² / cos, times density.
        tpp = self.texel_density[r["face"]] * (r["depth"] / r["f_px"]) ** 2 / r["cos"].clamp(min=1e-3)
        return dict(r, uv=uv, texels_per_pixel=tpp)

    def raster(self, extrinsics, intrinsics, height, width, cancel=None):
        """Covered pixels of one view: dict of pix [P] (flat index), uv [P,2], face [P], point [P,3],
        depth [P], cos [P] (|cos| of the view angle), texels_per_pixel [P] (and bary, f_px)."""
        return self.with_uvs(self.raster_geometry(extrinsics, intrinsics, height, width, cancel=cancel))


def _texel_coords(uv, size):
    """Continuous texel coordinates (x right, y down; texel centres at integers)."""
    return uv[:, 0] * size - 0.5, (1 - uv[:, 1]) * size - 0.5


def bilinear_taps(uv, size):
    """4 taps per sample, border-clamped like grid_sample(padding_mode="border"): rows [P,4],
    cols [P,4], weights [P,4]."""
    x, y = _texel_coords(uv, size)
    x = x.clamp(0, size - 1)
    y = y.clamp(0, size - 1)
    x0, y0 = x.floor(), y.floor()
    fx, fy = x - x0, y - y0
    x0, y0 = x0.long(), y0.long()
    x1, y1 = (x0 + 1).clamp(max=size - 1), (y0 + 1).clamp(max=size - 1)
    rows = torch.stack([y0, y0, y1, y1], 1)
    cols = torch.stack([x0, x1, x0, x1], 1)
    w = torch.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy], 1)
    return rows, cols, w


def sample_texture(texture, uv):
    """Bilinear lookup of a [S,S,C] texture at uv [P,2] (border clamp) -> [P,C] (differentiable)."""
    grid = torch.stack([uv[:, 0] * 2 - 1, 1 - uv[:, 1] * 2], -1).to(texture.dtype)
    out = F.grid_sample(texture.permute(2, 0, 1)[None], grid[None, None], mode="bilinear",
                        padding_mode="border", align_corners=False)
    return out[0, :, 0].T
