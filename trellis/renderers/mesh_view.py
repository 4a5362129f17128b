"""One view of a mesh as images (spec §14.2 mesh renderer, without nvdiffrast): the normal-map video's
frames, masks, depth and interpolated attributes, drawn by the exact rasteriser of mesh_render.py (whose
conventions apply: OpenCV camera, row 0 = top). ``trellis.renderers.mesh_render.render_mesh`` names
this function too.
"""
from __future__ import annotations

from typing import Iterable, Optional

import torch
import torch.nn.functional as F

from .cameras import projection_opencv
from .mesh_render import interpolate, rasterize


def _mesh_parts(mesh):
    """(vertices, faces, face_normal or None) from a MeshExtractResult-like object or a tuple."""
    if isinstance(mesh, (tuple, list)):
        return mesh[0], mesh[1], None
    if isinstance(mesh, dict):
        return mesh["vertices"], mesh["faces"], mesh.get("face_normal")
    return mesh.vertices, mesh.faces, getattr(mesh, "face_normal", None)


def _face_normals(vertices, faces):
    v0, v1, v2 = (vertices[faces[:, k]] for k in range(3))
    return F.normalize(torch.cross(v1 - v0, v2 - v0, dim=-1), dim=-1)


def render_mesh(mesh, extrinsics: torch.Tensor, intrinsics: torch.Tensor, resolution: int,
                near: float = 1.0, far: float = 100.0, ssaa: int = 1,
                return_types: Iterable[str] = ("mask", "depth", "normal", "face_id"),
                attrs: Optional[torch.Tensor] = None, cancel=None,
                chunk_budget: Optional[int] = None) -> dict:
    """Render one view of a mesh (spec §14.2 mesh renderer, without nvdiffrast).

    mesh: MeshExtractResult (or anything with .vertices/.faces[/.face_normal]), a dict with those
    keys, or a (vertices [V,3], faces [F,3]) tuple. extrinsics [4,4] OpenCV world->camera,
    intrinsics [3,3] normalised (``cameras.orbit_cameras``); a leading batch dim of 1 is accepted.
    The image is rasterised at resolution*ssaa with ``projection_opencv(intrinsics, near, far)``
    (row 0 = top) and reduced by area averaging (``F.avg_pool2d`` with kernel = stride = ssaa).

    return_types (any of):
      "mask"    [1,H,W] coverage: fraction of covered subsamples (multiples of 1/ssaa^2);
      "depth"   [1,H,W] view depth, averaged over the covered subsamples only, 0 where none;
      "normal"  [3,H,W] (flat face normal + 1) / 2 on covered subsamples, black (0) elsewhere,
                then area-averaged, so edges blend with the black background;
      "face_id" [H,W] int64 (0 = empty, f + 1 for face f); only with ssaa == 1;
      "attr"    [C,H,W] ``attrs`` ([V,C] per vertex or [F,3,C] per corner) interpolated, black
                background, area-averaged.
    An empty mesh gives zero images (and an all-zero face_id).
    """
    return_types = tuple(return_types)
    if "face_id" in return_types and ssaa != 1:
        raise ValueError("face_id is only available without supersampling (ssaa=1)")
    extrinsics = extrinsics.reshape(4, 4)
    intrinsics = intrinsics.reshape(3, 3)
    vertices, faces, face_normal = _mesh_parts(mesh)
    device = vertices.device
    faces = faces.to(device=device, dtype=torch.int64).reshape(-1, 3)
    vertices = vertices.to(torch.float32)
    res = resolution * ssaa

    proj = projection_opencv(intrinsics.to(device=device, dtype=torch.float32), near, far)
    full = proj @ extrinsics.to(device=device, dtype=torch.float32)
    vh = torch.cat([vertices, torch.ones_like(vertices[:, :1])], -1)
    clip = vh @ full.T
    face_id, bary, depth = rasterize(clip, faces, res, res, cancel=cancel,
                                     chunk_budget=chunk_budget,
                                     with_bary=("depth" in return_types or "attr" in return_types))
    cov = (face_id > 0).to(torch.float32)

    def down(img):  # [C,res,res] -> [C,resolution,resolution]
        if ssaa == 1:
            return img
        return F.avg_pool2d(img[None], kernel_size=ssaa, stride=ssaa)[0]

    out = {}
    mask = down(cov[None])
    if "mask" in return_types:
        out["mask"] = mask
    if "depth" in return_types:
        dsum = down(depth[None])
        out["depth"] = torch.where(mask > 0, dsum / mask.clamp(min=1e-12), torch.zeros_like(dsum))
    if "normal" in return_types:
        if faces.shape[0] == 0:
            out["normal"] = torch.zeros(3, resolution, resolution, device=device)
        else:
            if face_normal is not None:
                # [F,3,3] (an expanded view: no copy) or [F,3]; flat: the same for all corners
                fn = face_normal.reshape(faces.shape[0], -1, 3)[:, 0].to(device=device, dtype=torch.float32)
            else:
                fn = _face_normals(vertices, faces)
            # Row f + 1 = (normal of face f + 1) / 2, row 0 = black background.
            table = torch.zeros(faces.shape[0] + 1, 3, device=device)
            table[1:, :3] = (fn + 1) / 2
            nrm = table[face_id.reshape(-1)][:, :3]
            out["normal"] = down(nrm.reshape(res, res, 3).permute(2, 0, 1))
    if "attr" in return_types:
        if attrs is None:
            raise ValueError("return type 'attr' needs `attrs`")
        a = interpolate(attrs.to(device=device, dtype=torch.float32), face_id, bary, faces=faces)
        out["attr"] = down(a.permute(2, 0, 1))
    if "face_id" in return_types:
        out["face_id"] = face_id
    return out
