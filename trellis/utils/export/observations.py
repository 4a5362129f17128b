"""Observations for the texture bake (spec §14.3, §15.4): cameras on the spherical Hammersley sequence and
the renders of the appearance representation (Gaussians or a radiance field) from them, as colour, mask and
depth per view. texture_bake.py folds them into the texture and re-exports these names.
"""
from __future__ import annotations


from ...core.callbacks import check
from ...renderers.cameras import hammersley_sphere_views, orbit_cameras


def observation_cameras(nviews: int = 100, radius: float = 2.0, fov: float = 40.0, device=None):
    """(extrinsics [N,4,4], intrinsics [N,3,3]) on the spherical Hammersley sequence (§14.3)."""
    yaws, pitches = hammersley_sphere_views(nviews)
    return orbit_cameras(yaws, pitches, radius, fov, device=device)


def render_observations(app_rep, extrinsics, intrinsics, resolution: int = 1024, cancel=None,
                        alpha_threshold: float = 0.5):
    """Yield (color [H,W,3] float, mask [H,W] bool, depth [H,W] float) per view of a `Gaussian`
    (or a `Strivec` radiance field), on the representation's device, black background.

    Unlike the reference (mask = any channel > 0 of the colour on black), the mask is the rendered
    opacity > ``alpha_threshold`` and the colour is un-premultiplied by it, so dark surfaces are
    observed too and the soft silhouette rim does not darken the texture. depth = mean camera z.
    """
    from ...renderers import render
    from ...representations import Gaussian, Strivec

    if not isinstance(app_rep, (Gaussian, Strivec)):
        raise TypeError(f"cannot bake a texture from a {type(app_rep).__name__} (expected Gaussian or Strivec)")
    for extr, intr in zip(extrinsics, intrinsics):
        check(cancel)
        out = render(app_rep, extr, intr, resolution, cancel=cancel)
        alpha = out["alpha"][0]
        mask = alpha > alpha_threshold
        a = alpha.clamp(min=1e-6)
        color = (out["color"] / a).clamp(0, 1).permute(1, 2, 0)
        depth = out["depth"][0] / a
        yield color, mask, depth
