"""Renders of a textured mesh in the TRELLIS cameras (bilinear lookup, black background): how a baked GLB or OBJ
is compared with its Gaussians (tests, benchmarks)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..assemble import Z_UP_TO_Y_UP
from .views import MeshViews, sample_texture

__all__ = ["render_textured", "textured_mesh_tensors", "render_textured_mesh"]


def render_textured(vertices, faces, uvs, texture, extrinsics, intrinsics, resolution: int,
                    ssaa: int = 1, cancel=None):
    """Render a textured mesh (bilinear lookup, black background): (color [3,H,W], mask [1,H,W]).

    texture: uint8 or float [S,S,3] (row 0 = top). Supersampled ``ssaa``× and area-averaged.
    """
    tex = torch.as_tensor(np.asarray(texture) if not torch.is_tensor(texture) else texture)
    tex = tex.float() / 255 if tex.dtype == torch.uint8 else tex.float()
    dev = vertices.device if torch.is_tensor(vertices) else torch.device("cpu")
    tex = tex.to(dev)
    mesh = MeshViews(vertices, faces, uvs, tex.shape[0], dev)
    res = resolution * ssaa
    r = mesh.raster(extrinsics, intrinsics, res, res, cancel=cancel)
    img = torch.zeros(res * res, 3, device=dev)
    img[r["pix"]] = sample_texture(tex, r["uv"])
    cov = torch.zeros(res * res, device=dev)
    cov[r["pix"]] = 1
    img = img.T.reshape(3, res, res)
    cov = cov.reshape(1, res, res)
    if ssaa > 1:
        img = F.avg_pool2d(img[None], ssaa)[0]
        cov = F.avg_pool2d(cov[None], ssaa)[0]
    return img, cov


def textured_mesh_tensors(mesh, device):
    """(vertices [V,3] float32 z up, faces [F,3] int64, uvs [V,2] float32, texture uint8 [S,S,3]) on
    ``device`` of a textured ``trimesh.Trimesh`` as exported (y up, e.g. from ``to_glb`` or loaded back
    from a .glb/.obj), or of a Scene holding exactly one."""
    if hasattr(mesh, "geometry") and not hasattr(mesh, "faces"):  # a Scene: take its only mesh
        meshes = list(mesh.geometry.values())
        if len(meshes) != 1:
            raise ValueError(f"expected one mesh in the scene, found {len(meshes)}")
        mesh = meshes[0]
    material = mesh.visual.material
    image = getattr(material, "baseColorTexture", None) or getattr(material, "image", None)
    if image is None:
        raise ValueError("the mesh has no texture image")
    texture = torch.as_tensor(np.array(image.convert("RGB")), device=device)
    v = torch.as_tensor(np.asarray(mesh.vertices, dtype=np.float64) @ Z_UP_TO_Y_UP.T,
                        dtype=torch.float32, device=device)
    f = torch.as_tensor(np.asarray(mesh.faces, dtype=np.int64), device=device)
    uv = torch.as_tensor(np.asarray(mesh.visual.uv, dtype=np.float32), device=device)
    return v, f, uv, texture


def render_textured_mesh(mesh, extrinsics, intrinsics, resolution: int, ssaa: int = 2,
                         device=None) -> np.ndarray:
    """Render a textured ``trimesh.Trimesh`` as exported (y up, e.g. from ``to_glb`` or loaded back
    from a .glb/.obj) in the TRELLIS cameras: uint8 [H,W,3], black background."""
    dev = torch.device(device) if device is not None else torch.as_tensor(extrinsics).device
    v, f, uv, texture = textured_mesh_tensors(mesh, dev)
    img, _ = render_textured(v, f, uv, texture, extrinsics, intrinsics,
                             resolution, ssaa=ssaa)
    return (img.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
