"""The "opt" bake, the reference's optimisation (spec §15.5): texture initialised to 0; per step one random
view; loss = L1 over the observed pixels covered by the mesh + ``lambda_tv`` · TV(texture); Adam(lr 1e-2,
betas (0.5, 0.9)), cosine schedule to 1e-5. The texture is sampled bilinearly without mip-mapping: at the
reference resolutions a pixel covers at most about one texel, so the base level is what a mip-mapped lookup
reads anyway."""
from __future__ import annotations

import math

import torch

from ...core.callbacks import check
from .views import MeshViews, sample_texture

__all__ = ["bake_opt"]


def bake_opt(mesh: MeshViews, views, lambda_tv, steps, progress, cancel, init=None, seed=0,
              lr=1e-2, lr_min=1e-5):
    """Adam on L1 + lambda_tv·TV (spec §15.5). views: list of (uv [P,2], color [P,3])."""
    s = mesh.size
    tex = torch.zeros(s, s, 3, device=mesh.device) if init is None else init.clone().float()
    tex.requires_grad_(True)
    opt = torch.optim.Adam([tex], lr=lr, betas=(0.5, 0.9))
    gen = torch.Generator().manual_seed(seed)
    for step in range(steps):
        check(cancel)
        uv, col = views[int(torch.randint(len(views), (1,), generator=gen))]
        with torch.enable_grad():
            loss = (sample_texture(tex, uv) - col).abs().mean() if len(uv) else tex.sum() * 0
            tv = (tex[1:] - tex[:-1]).abs().mean() + (tex[:, 1:] - tex[:, :-1]).abs().mean()
            (loss + lambda_tv * tv).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        for g in opt.param_groups:
            g["lr"] = lr_min + 0.5 * (lr - lr_min) * (1 + math.cos(math.pi * (step + 1) / steps))
        if progress is not None and (step % 25 == 24 or step == steps - 1):
            progress(step + 1, steps)
    return tex.detach().clamp(0, 1)
