"""``bake_texture``: observations baked into a UV texture in one call, by the "fast" least-squares bake
(``least_squares``) or the reference's "opt" optimisation (``optimise``), then inpainted (``inpaint``)."""
from __future__ import annotations


import numpy as np
import torch

from ...core.callbacks import StepProgress, check
from ..options import DEFAULT_TEXTURE_SIZE
from .coverage import atlas_texels, texels_under
from .inpaint import inpaint_texture
from .least_squares import TextureAccumulator
from .optimise import bake_opt
from .views import MeshViews

__all__ = ["bake_texture"]



def bake_texture(vertices, faces, uvs, observations, masks, extrinsics, intrinsics,
                 texture_size: int = DEFAULT_TEXTURE_SIZE, mode: str = "fast", lambda_tv: float = 0.01,
                 steps: int = 2500, progress: StepProgress = None, cancel=None, *, depths=None,
                 inpaint: bool = True, device=None, cg_iterations: int = 30, seed: int = 0, info=None):
    """Bake observations into a UV texture; returns uint8 [S,S,3] (row 0 = top); a dict ``info`` gets the
    observed texels ("observed_texels", bool [S,S]: some accepted pixel landed there; ``coverage``).

    vertices [V,3], faces [F,3], uvs [V,2] (from ``unwrap_uv``); observations: [N,H,W,3] float in
    [0,1] or uint8 (tensor, array or a sequence of per-view images), masks [N,H,W] bool, extrinsics
    [N,4,4] OpenCV world->camera, intrinsics [N,3,3] normalised; optional depths [N,H,W] (mean
    camera z of the observation) enable the depth-consistency test of "fast". ``progress(done,
    total)``; ``cancel()`` returning True raises ``Cancelled``. See the module docstring for modes.
    """
    if mode not in ("fast", "opt"):
        raise ValueError(f"unknown bake mode {mode!r} (use 'fast' or 'opt')")
    device = torch.device(device) if device is not None else (
        vertices.device if torch.is_tensor(vertices) else torch.device("cpu"))
    n = len(observations)
    if mode == "fast":
        acc = TextureAccumulator(vertices, faces, uvs, texture_size, device=device)
        total = n + 1
        for i in range(n):
            check(cancel)
            acc.add_view(observations[i], masks[i], extrinsics[i], intrinsics[i],
                         depth=None if depths is None else depths[i], cancel=cancel)
            if progress is not None:
                progress(i + 1, total)
        tex, filled = acc.solve(iterations=cg_iterations, cancel=cancel)
        if progress is not None:
            progress(total, total)
    else:
        mesh = MeshViews(vertices, faces, uvs, texture_size, device)
        views = []
        for i in range(n):
            check(cancel)
            obs = torch.as_tensor(observations[i], device=device)
            obs = obs.float() / 255 if obs.dtype == torch.uint8 else obs.float()
            m = torch.as_tensor(masks[i], device=device).bool()
            r = mesh.raster(extrinsics[i], intrinsics[i], m.shape[0], m.shape[1], cancel=cancel)
            ok = m.reshape(-1)[r["pix"]]
            views.append((r["uv"][ok], obs.reshape(-1, 3)[r["pix"][ok]]))
        tex = bake_opt(mesh, views, lambda_tv, steps, progress, cancel, seed=seed)
        filled = None
    if info is not None:
        info["observed_texels"] = filled if filled is not None else texels_under(
            [u for u, _ in views], texture_size, device)
    if not inpaint:
        return (tex.cpu().numpy() * 255).round().astype(np.uint8)
    # The opt bake's texture counts everywhere inside the charts.
    return inpaint_texture(tex, filled if filled is not None else atlas_texels(mesh.uv_faces, mesh.uv, texture_size))
