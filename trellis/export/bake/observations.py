"""Observations for the texture bake (spec §14.3, §15.4): cameras on the spherical Hammersley sequence and
the renders of the appearance representation (Gaussians or a radiance field) from them, as colour, mask and
depth per view, which the bakes fold into the texture.
"""
from __future__ import annotations

import copy
import math

from ...core.callbacks import check
from ...renderers.cameras import hammersley_sphere_views, orbit_cameras

# The fast bake shrinks the Gaussians of its renders at most to this fraction of their size
# (``sharpening_scale``; docs/benchmarks/export.md#texture-bake).
MIN_OBSERVATION_SCALE = 0.6


def observation_cameras(nviews: int = 100, radius: float = 2.0, fov: float = 40.0, device=None):
    """(extrinsics [N,4,4], intrinsics [N,3,3]) on the spherical Hammersley sequence (§14.3)."""
    yaws, pitches = hammersley_sphere_views(nviews)
    return orbit_cameras(yaws, pitches, radius, fov, device=device)


def scaled_gaussians(gaussian, factor: float):
    """A shallow copy of ``gaussian`` whose scales (after activation, minimum kernel included) are
    ``factor`` times the original's, floored at the representation's minimum kernel size; the original
    is not changed. ``factor`` 1 returns ``gaussian`` itself."""
    if factor == 1:
        return gaussian
    if not factor > 0:
        raise ValueError(f"the Gaussian scale factor must be > 0, got {factor!r}")
    out = copy.copy(gaussian)
    out.from_scaling(gaussian.get_scaling * factor)
    return out


def sharpening_scale(gaussian, resolution: int, radius: float = 2.0, fov: float = 40.0,
                     floor: float = MIN_OBSERVATION_SCALE, sample: int = 65536) -> float:
    """The factor the fast bake renders ``gaussian`` at: the median tangent scale of its Gaussians (geometric
    mean of the two larger axes, over at most ``sample`` of them) brought down to one pixel of a
    ``resolution``-wide observation at the object's centre (``radius``, ``fov`` of the bake's cameras), never
    below ``floor`` times itself and never enlarged. Gaussians already smaller than a pixel are left alone
    (shrinking them only adds aliasing), overlapping ones larger than a pixel stop blurring the renders."""
    s = gaussian.get_scaling.detach()
    if len(s) == 0:
        return 1.0
    step = max(1, len(s) // sample)
    s = s[::step].float().sort(dim=-1).values
    tangent = float((s[:, 1] * s[:, 2]).sqrt().median())
    pixel = 2 * radius * math.tan(math.radians(fov) / 2) / resolution
    return float(min(1.0, max(floor, pixel / max(tangent, 1e-12))))


def render_observations(app_rep, extrinsics, intrinsics, resolution: int = 1024, cancel=None,
                        alpha_threshold: float = 0.5, gaussian_scale: float = 1.0):
    """Yield (color [H,W,3] float, mask [H,W] bool, depth [H,W] float) per view of a `Gaussian`
    (or a `Strivec` radiance field), on the representation's device, black background.

    Unlike the reference (mask = any channel > 0 of the colour on black), the mask is the rendered
    opacity > ``alpha_threshold`` and the colour is un-premultiplied by it, so dark surfaces are
    observed too and the soft silhouette rim does not darken the texture. depth = mean camera z.

    ``gaussian_scale`` < 1 renders the Gaussians with their scales times that factor (``scaled_gaussians``):
    each pixel then shows the colour of the few Gaussians nearest to its surface point instead of a blend
    over their overlapping footprints, which blurs the renders by about the Gaussians' own size
    (docs/benchmarks/export.md#texture-bake). The gaps it opens fall below ``alpha_threshold`` and are simply not
    observed in that view. Ignored for a radiance field.
    """
    from ...renderers import render
    from ...representations import Gaussian, Strivec

    if not isinstance(app_rep, (Gaussian, Strivec)):
        raise TypeError(f"cannot bake a texture from a {type(app_rep).__name__} (expected Gaussian or Strivec)")
    if isinstance(app_rep, Gaussian):
        app_rep = scaled_gaussians(app_rep, gaussian_scale)
    for extr, intr in zip(extrinsics, intrinsics):
        check(cancel)
        out = render(app_rep, extr, intr, resolution, cancel=cancel)
        alpha = out["alpha"][0]
        mask = alpha > alpha_threshold
        a = alpha.clamp(min=1e-6)
        color = (out["color"] / a).clamp(0, 1).permute(1, 2, 0)
        depth = out["depth"][0] / a
        yield color, mask, depth
