"""How much of a baked texture its observations saw, and the bake again when they saw almost nothing.

A texel is observed when an accepted pixel of some view lands on it: rendered opacity above the
observations' ``alpha_threshold`` (0.5), off the silhouette, depth consistent with the mesh. Gaussians that
are mostly transparent (a random-weight model's have a mean opacity near 0.1) leave almost no pixel above
0.5, and the fast bake's sharpened renders (``observations.sharpening_scale``) even fewer: the texture then
has nothing to be inpainted from and comes out black, while the export looks successful.

``observed_share`` is the share of the UV atlas' texels (those inside some chart) that were observed.
Under ``MIN_OBSERVED_SHARE`` the texture is mostly invented by the inpainting; ``rebake_if_unobserved`` then
bakes again (fast bake) from renders of the Gaussians at full size whose pixels count from an opacity of
``FALLBACK_ALPHA``. The colour of a faint pixel is still the Gaussians' own: renders are un-premultiplied by
their opacity, and the depth test keeps only Gaussians at the mesh's surface. A bake that observes enough
never gets here, so its texture and its speed are unchanged.
"""
from __future__ import annotations

import time

import torch

from ...core.callbacks import check

__all__ = ["MIN_OBSERVED_SHARE", "FALLBACK_ALPHA", "atlas_texels", "observed_share", "texels_under",
           "rebake_if_unobserved"]

# Under this share of the atlas observed, more than 19 texels in 20 come from the inpainting: the texture says
# little about the object. Bakes of solid surfaces observe most of their atlas (tests/desktop/jobs/test_honest_bake.py).
MIN_OBSERVED_SHARE = 0.05
# Opacity from which a pixel of the fallback's renders counts: a tenth of the usual 0.5.
FALLBACK_ALPHA = 0.05


def atlas_texels(faces, uvs, texture_size: int, device=None, cancel=None) -> torch.Tensor:
    """bool [S,S]: the texels inside some chart of the UV layout (row 0 = top); ``cancel``: checked while the layout
    is rasterised."""
    from ..uv.stats import uv_coverage

    return uv_coverage(faces, uvs, int(texture_size), device=device, cancel=cancel) > 0


def observed_share(observed, faces, uvs, texture_size: int, cancel=None) -> float:
    """Share (0..1) of the atlas' texels that are ``observed`` (bool [S,S]); 0 for an empty atlas (``cancel``: as
    in ``atlas_texels``)."""
    observed = torch.as_tensor(observed).bool()
    atlas = atlas_texels(faces, uvs, texture_size, device=observed.device, cancel=cancel)
    total = int(atlas.sum())
    return int((observed & atlas).sum()) / total if total else 0.0


def texels_under(uvs: list, texture_size: int, device=None) -> torch.Tensor:
    """bool [S,S]: the texels that contain some point of ``uvs`` (a list of [P,2] tensors, row 0 = top)."""
    s = int(texture_size)
    out = torch.zeros(s * s, dtype=torch.bool, device=device)
    for uv in uvs:
        uv = torch.as_tensor(uv, device=device).float()
        col = (uv[:, 0] * s).long().clamp(0, s - 1)
        row = ((1 - uv[:, 1]) * s).long().clamp(0, s - 1)
        out[row * s + col] = True
    return out.view(s, s)


def rebake_if_unobserved(observed, app_rep, vertices, faces, uvs, texture_size: int, extrinsics, intrinsics,
                         resolution: int, info: dict, device=None, cancel=None, progress=None,
                         cg_iterations: int = 30):
    """None when the bake observed at least ``MIN_OBSERVED_SHARE`` of the atlas; otherwise (texture float
    [S,S,3], observed [S,S]) of a fast bake of ``app_rep`` at full size from pixels of opacity >
    ``FALLBACK_ALPHA`` (same cameras and resolution), or None again when that observed no more.

    ``info`` gets "observed_share" (of the texture kept) and, when the bake was tried again, "bake_fallback":
    the first share, the fallback's, its settings, seconds and whether it was used. ``progress(stage, done,
    total)`` hears "reobserve" per view, then "resolve" per iteration of the new solve."""
    share = observed_share(observed, faces, uvs, texture_size, cancel=cancel)
    info["observed_share"] = round(share, 6)
    if share >= MIN_OBSERVED_SHARE:
        return None
    from .least_squares import TextureAccumulator
    from .observations import render_observations

    t = time.perf_counter()
    check(cancel)
    acc = TextureAccumulator(vertices, faces, uvs, texture_size, device=device)
    views = render_observations(app_rep, extrinsics, intrinsics, resolution, cancel=cancel,
                                alpha_threshold=FALLBACK_ALPHA, gaussian_scale=1.0)
    n = len(extrinsics)
    for i, (color, mask, depth) in enumerate(views):
        acc.add_view(color, mask, extrinsics[i], intrinsics[i], depth=depth, cancel=cancel)
        if progress is not None:
            progress("reobserve", i + 1, n)
    texture, again = acc.solve(iterations=cg_iterations, cancel=cancel,
                               progress=None if progress is None else (lambda d, t: progress("resolve", d, t)))
    second = observed_share(again, faces, uvs, texture_size, cancel=cancel)
    used = second > share
    info["bake_fallback"] = {"observed_share_before": round(share, 6), "observed_share_after": round(second, 6),
                             "alpha_threshold": FALLBACK_ALPHA, "gaussian_scale": 1.0, "used": used,
                             "seconds": round(time.perf_counter() - t, 3)}
    if not used:
        return None
    info["observed_share"] = round(second, 6)
    return texture, again
