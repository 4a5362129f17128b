"""PBR materials baked onto the user's own mesh (TRELLIS.2 texturing, TRELLIS2_TEXTURING_FACTS.md §8, with the
keep-my-mesh rules of ``export.keep_mesh``): the vertices, faces and, where they can carry a texture, the UVs of
the model stay as they are, at the user's position, scale and up axis; only the textures are new.

    textured = bake_onto_user_mesh(pipeline.run(mesh, image))   # a Trellis2TexturingPipeline's TexturedVoxels
    textured.save("chair.glb")         # one normal per vertex: the file keeps the vertices, faces and UVs

Each texel's point on the mesh (in the voxels' internal frame) samples the voxel attributes trilinearly
(``pbr.bake.bake_pbr_textures``, no projection: the voxels were made from this very surface; a point with no voxel
around it takes the nearest one's, ``NearestFilledVoxels``); base colour,
alpha, metallic and roughness become a base-colour texture and a glTF metallic-roughness texture; the alpha mode
is the honest one (``alpha_mode``). UVs that cannot carry one texture (``keep_mesh.uv_usable``), or ``new_uvs``,
get a new atlas (``uv.unwrap.unwrap_uv``), which splits vertices along its seams: only then do the vertices and
faces differ from the model's.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from ...core.callbacks import check
from ...representations.ovoxel import MeshWithVoxel, grid_sample_3d
from ..assemble import NO_SPLIT_ANGLE
from ..keep_mesh import uv_usable
from .alpha_mode import choose_alpha_mode
from .bake import bake_pbr_textures
from .material import pbr_maps
from .textured import PbrTexturedMesh

__all__ = ["FILL_RADIUS", "KeptPbrMesh", "NearestFilledVoxels", "bake_onto_user_mesh", "bake_pbr_onto_mesh"]

# How far (voxels) a surface point with no voxel among its 8 trilinear neighbours looks for the nearest one: parts
# thinner than a voxel that cross no grid edge make no voxel of their own (the reference bakes them black).
FILL_RADIUS = 3
_FILL_CHUNK = 1 << 12


class KeptPbrMesh(PbrTexturedMesh):
    """A ``PbrTexturedMesh`` of the user's own mesh: its files keep the vertices by default (one smooth normal per
    vertex, ``assemble.NO_SPLIT_ANGLE``; a lower ``crease_angle`` splits vertices at creases)."""

    def to_glb(self, crease_angle: float | None = NO_SPLIT_ANGLE):
        return super().to_glb(crease_angle)

    def save_glb(self, path, crease_angle: float | None = NO_SPLIT_ANGLE) -> str:
        return super().save_glb(path, crease_angle)

    def save(self, path, **options) -> str:
        options.setdefault("crease_angle", NO_SPLIT_ANGLE)
        return super().save(path, **options)


class NearestFilledVoxels(MeshWithVoxel):
    """A ``MeshWithVoxel`` whose trilinear ``query_attrs`` gives a point with no voxel among its 8 neighbours the
    attributes of the nearest voxel within ``FILL_RADIUS`` (by centre distance; the first in offset order on ties)."""

    @staticmethod
    def of(mesh: MeshWithVoxel) -> "NearestFilledVoxels":
        return NearestFilledVoxels(mesh.vertices, mesh.faces, mesh.coords, mesh.res, mesh.attrs, mesh.layout)

    def query_attrs(self, points: torch.Tensor, mode: str = "trilinear") -> torch.Tensor:
        q = (points.float() - self.origin) / self.voxel_size
        with_ones = torch.cat([self.attrs.float(), torch.ones_like(self.attrs[:, :1], dtype=torch.float32)], 1)
        out = grid_sample_3d(with_ones, self.coords, q, mode=mode, lookup=self.lookup())
        missing = (out[:, -1] == 0).nonzero(as_tuple=True)[0]
        if missing.numel():
            r = torch.arange(-FILL_RADIUS, FILL_RADIUS + 1, device=q.device)
            offsets = torch.stack(torch.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
            offsets = offsets[torch.argsort((offsets.float() ** 2).sum(1), stable=True)]
            for a in range(0, missing.numel(), _FILL_CHUNK):
                rows = missing[a:a + _FILL_CHUNK]
                idx = self.lookup().find(torch.floor(q[rows]).long()[:, None, :] + offsets)      # [m, K]
                found = idx >= 0
                first = found.float().argmax(dim=1)
                hit = found.any(dim=1)
                out[rows[hit], :-1] = self.attrs[idx[hit, first[hit]]].float()
        return out[:, :-1]


def bake_pbr_onto_mesh(voxels, vertices, faces, uvs, internal, texture_size: int = 2048, new_uvs: bool = False,
                       uv_time_budget_s: float = 10.0, uv_method: str = "auto", progress=None, cancel=None,
                       info: dict | None = None) -> KeptPbrMesh:
    """The PBR textures of ``voxels`` (a ``MeshWithVoxel`` with attributes, internal frame) on the user's mesh:
    ``vertices`` [V, 3] in the TRELLIS world frame (z up, as given: not normalised), ``faces`` [F, 3], ``uvs``
    [V, 2] (v up) or None, ``internal`` [V, 3] the same vertices in the voxels' frame.

    Returns a ``KeptPbrMesh`` whose vertices are ``vertices``, faces ``faces`` (int64) and uvs ``uvs`` when they
    are kept. ``info`` gets "uv" ("kept" or "new atlas: <reason>"), "uv_stats", "covered_share", "alpha" (the
    mode's facts) and "seconds" per stage. ``progress(stage, done, total)``: "uv_unwrap" (new atlas), "bake",
    "attributes", "inpaint"; ``cancel()`` returning True raises ``Cancelled``."""
    info = {} if info is None else info
    seconds = info.setdefault("seconds", {})
    t0 = time.perf_counter()
    v = np.asarray(vertices)
    f = np.asarray(faces, dtype=np.int64)
    inner = np.asarray(internal, dtype=np.float64)
    if new_uvs:
        ok, reason, info["uv_stats"] = False, "new UVs asked for", {}
    else:
        ok, reason, info["uv_stats"] = uv_usable(inner, f, uvs, cancel)
    check(cancel)
    if ok:
        uv = np.asarray(uvs)
        info["uv"] = "kept"
        out, bake_mesh = (v, f, uv), (inner, f, uv)
    else:
        from ..uv.unwrap import unwrap_uv

        uv_info: dict = {}
        _, f_new, uv_new, vmap = unwrap_uv(
            inner, f, time_budget_s=uv_time_budget_s, cancel=cancel, texture_size=texture_size, method=uv_method,
            info=uv_info, progress=None if progress is None else (lambda d, t: progress("uv_unwrap", d, t)))
        info["uv"] = f"new atlas: {reason}"
        info["uv_method"] = uv_info.get("method")
        out, bake_mesh = (v[vmap], f_new, uv_new), (inner[vmap], f_new, uv_new)
    seconds["uv"] = round(time.perf_counter() - t0, 3)
    check(cancel)
    t0 = time.perf_counter()
    tex = bake_pbr_textures(NearestFilledVoxels.of(voxels), None, None, *bake_mesh, texture_size=texture_size, project=False,
                            normal_map=False, progress=progress, cancel=cancel, info=info)
    mode, cutoff, info["alpha"] = choose_alpha_mode(tex.alpha, tex.covered)
    maps = pbr_maps(tex.metallic_roughness, tex.alpha, mode, cutoff)
    seconds["bake"] = round(time.perf_counter() - t0, 3)
    result = KeptPbrMesh(out[0], out[1], np.asarray(out[2]), tex.base_color, info, None)      # UVs as given: the
    # writer's v flip in float64 then gives back the very float32 values a GLB held
    result.pbr = maps
    return result


def bake_onto_user_mesh(result, texture_size: int | None = None, new_uvs: bool | None = None, **kwargs) -> KeptPbrMesh:
    """``bake_pbr_onto_mesh`` of a texturing run's ``representations.ovoxel.TexturedVoxels`` (its texture size and
    UV choice unless given here); the result's ``info`` starts from the run's. ``kwargs``: uv_time_budget_s,
    uv_method, progress, cancel."""
    mesh, frame = result.mesh, result.frame
    info = dict(result.info)
    return bake_pbr_onto_mesh(result.voxels, frame.world(mesh.vertices), mesh.faces, mesh.uvs,
                              frame.internal(mesh.vertices),
                              result.texture_size if texture_size is None else texture_size,
                              result.new_uvs if new_uvs is None else new_uvs, info=info, **kwargs)
