"""The fast bake must not blur: a flat square with a sharp-edged pattern, baked from

* perfect observations (the true colour point-sampled at every pixel of the mesh's own raster): the solver
  alone, which must give the ideal texels back to within a fraction of a texel of blur;
* renders of surface Gaussians carrying the pattern (overlapping discs larger than a pixel, as a decoder's):
  the bake's default renders them at ``sharpening_scale`` of their size, which must be measurably sharper
  than the Gaussians at full size.

Blur is ``effective_blur`` of benchmarks/realistic_objects.py: the Gaussian blur (sigma in texels) of the
ideal texture that best explains the bake.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.realistic_objects import effective_blur
from trellis.renderers.cameras import orbit_cameras
from trellis.renderers.mesh_render import render_mesh
from trellis.export.bake.least_squares import TextureAccumulator
from trellis.export.bake.observations import (MIN_OBSERVATION_SCALE, render_observations,
                                             sharpening_scale)

HALF = 0.4          # the square is [-HALF, HALF]^2 at z = 0, facing +z
MARGIN = 0.03       # UV margin around it (the gutter)
SIZE = 128          # texture side
RES = 256           # observation side: ~0.9 texels per pixel at the centre, as the app's 1024 / 1024


def truth(p: torch.Tensor) -> torch.Tensor:
    """Sharp edges: a checker of 0.1 and stripes 0.012 wide every 0.05 along a rotated axis."""
    c, s = math.cos(0.5), math.sin(0.5)
    a = p[:, 0] * c + p[:, 1] * s
    b = -p[:, 0] * s + p[:, 1] * c
    checker = ((torch.floor(a / 0.1) + torch.floor(b / 0.1)) % 2).float()
    stripe = (torch.remainder(a + 0.3, 0.05) < 0.012).float()
    out = torch.stack([0.15 + 0.7 * checker, 0.8 - 0.6 * stripe, 0.3 + 0.4 * checker * (1 - stripe)], -1)
    return out


def plane():
    n = 16
    xs = torch.linspace(-HALF, HALF, n + 1)
    gy, gx = torch.meshgrid(xs, xs, indexing="ij")
    v = torch.stack([gx.reshape(-1), gy.reshape(-1), torch.zeros((n + 1) ** 2)], -1)
    idx = torch.arange((n + 1) ** 2).reshape(n + 1, n + 1)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]
    f = torch.cat([torch.stack([a, b, d], -1).reshape(-1, 3), torch.stack([a, d, c], -1).reshape(-1, 3)])
    uv = MARGIN + (1 - 2 * MARGIN) * (v[:, :2] + HALF) / (2 * HALF)
    return v, f, uv


def ideal(size: int = SIZE):
    """The true colour at every texel centre (row 0 = top, v = 1 - (row + 0.5) / S) and the texels inside
    the square."""
    t = (torch.arange(size) + 0.5) / size
    vv, uu = torch.meshgrid(1 - t, t, indexing="ij")
    x = (uu - MARGIN) / (1 - 2 * MARGIN) * 2 * HALF - HALF
    y = (vv - MARGIN) / (1 - 2 * MARGIN) * 2 * HALF - HALF
    inside = (x.abs() < HALF - 0.01) & (y.abs() < HALF - 0.01)
    p = torch.stack([x.reshape(-1), y.reshape(-1), torch.zeros(size * size)], -1)
    return truth(p).reshape(size, size, 3), inside


def cameras():
    yaws = [0.3 + 2 * math.pi * i / 8 for i in range(8)]
    pitches = [1.0 + 0.35 * (i % 3) for i in range(8)]
    return orbit_cameras(yaws, pitches, 2.0, 40.0)


def psnr(a, b, mask) -> float:
    return 10 * math.log10(1 / float((a - b)[mask].square().mean()))


def bake(views, v, f, uv, ext, intr) -> torch.Tensor:
    acc = TextureAccumulator(v, f, uv, SIZE)
    for i, (color, mask, depth) in enumerate(views):
        acc.add_view(color, mask, ext[i], intr[i], depth=depth)
    tex, _ = acc.solve()
    return tex


def perfect_views(v, f, ext, intr):
    for e, i in zip(ext, intr):
        out = render_mesh({"vertices": v, "faces": f}, e, i, RES, return_types=("mask", "attr", "depth"), attrs=v)
        mask = out["mask"][0] > 0.5
        color = torch.zeros(RES, RES, 3)
        color[mask] = truth(out["attr"].permute(1, 2, 0)[mask])
        yield color, mask, out["depth"][0]


@pytest.fixture(scope="module")
def square():
    v, f, uv = plane()
    ext, intr = cameras()
    return v, f, uv, ext, intr, *ideal()


def test_the_solver_gives_sharp_edges_back_from_perfect_observations(square):
    v, f, uv, ext, intr, want, inside = square
    tex = bake(perfect_views(v, f, ext, intr), v, f, uv, ext, intr)
    blur = effective_blur(tex, want, inside)
    # Measured on a CPU: 22.5 dB, sigma 0.50 texels; with the smoothing weight at 1 (12x the
    # default here) 17.7 dB, sigma 1.12: that must fail.
    assert psnr(tex, want, inside) > 21.5
    assert blur["sigma_texels"] < 0.75, blur


def surface_gaussians(n_side: int = 150, seed: int = 0, sigma: float = 1.5, opacity: float = 0.98):
    """Overlapping discs on the square (tangent sigma = ``sigma`` x the spacing, ~2.3 x the distance to the
    nearest neighbour, as the realistic benchmark's)."""
    from trellis.representations import Gaussian
    from trellis.representations.gaussian import SH_C0

    g = torch.Generator().manual_seed(seed)
    spacing = 2 * HALF / n_side
    t = (torch.arange(n_side) + 0.5) * spacing - HALF
    gy, gx = torch.meshgrid(t, t, indexing="ij")
    xyz = torch.stack([gx.reshape(-1), gy.reshape(-1), torch.zeros(n_side ** 2)], -1)
    xyz[:, :2] += (torch.rand(n_side ** 2, 2, generator=g) - 0.5) * spacing
    gauss = Gaussian([-0.5, -0.5, -0.5, 1, 1, 1], mininum_kernel_size=9e-4, scaling_bias=4e-3,
                     opacity_bias=0.1, scaling_activation="softplus")
    gauss.from_xyz(xyz)
    gauss.from_scaling(torch.tensor([sigma * spacing, sigma * spacing, 1e-3]).expand(len(xyz), 3).clone())
    gauss.from_rotation(torch.tensor([1.0, 0, 0, 0]).expand(len(xyz), 4).clone())
    gauss.from_opacity(torch.full((len(xyz), 1), opacity))
    gauss.from_features(((truth(xyz) - 0.5) / SH_C0).reshape(-1, 1, 3))
    return gauss


@pytest.fixture(scope="module")
def opaque(square):
    """The opaque surface Gaussians baked from renders at full size and at ``sharpening_scale`` (the fast bake's
    default; that bake's observed texels too): both tests below bake these very two, so they are made once."""
    v, f, uv, ext, intr, _, _ = square
    gauss = surface_gaussians()
    scale = sharpening_scale(gauss, RES)
    full = bake(render_observations(gauss, ext, intr, RES), v, f, uv, ext, intr)
    sharp = TextureAccumulator(v, f, uv, SIZE)
    for i, (color, mask, depth) in enumerate(render_observations(gauss, ext, intr, RES, gaussian_scale=scale)):
        sharp.add_view(color, mask, ext[i], intr[i], depth=depth)
    return {"gaussians": gauss, "scale": scale, "full": full, "sharp": sharp.solve()}


@pytest.mark.slow
def test_the_fast_bake_renders_the_gaussians_sharper(square, opaque):
    *_, want, inside = square
    scale = opaque["scale"]
    assert MIN_OBSERVATION_SCALE <= scale < 0.8, scale      # the discs are ~1.4 px wide here
    full, (sharp, _) = opaque["full"], opaque["sharp"]
    b_full, b_sharp = effective_blur(full, want, inside), effective_blur(sharp, want, inside)
    p_full, p_sharp = psnr(full, want, inside), psnr(sharp, want, inside)
    # Measured on a CPU: scale 0.71; sigma 2.05 -> 1.24 texels, 14.3 -> 16.5 dB.
    assert b_sharp["sigma_texels"] < b_full["sigma_texels"] - 0.2, (b_full, b_sharp)
    assert p_sharp > p_full + 0.5, (p_full, p_sharp)


def test_sharpening_scale_follows_the_pixel_size():
    g = surface_gaussians(8)                    # tangent sigma 0.075, far above a pixel
    assert sharpening_scale(g, 256) == MIN_OBSERVATION_SCALE
    small = surface_gaussians(400, sigma=0.5)   # sigma 1e-3: under a pixel of a 256-wide view
    assert sharpening_scale(small, 256) == 1.0
    px = 4 * math.tan(math.radians(20)) / 4096  # sigma 1e-3 at 4096: ~2.8 px -> brought to one pixel
    assert sharpening_scale(small, 4096) == pytest.approx(max(MIN_OBSERVATION_SCALE, px / 1e-3), rel=1e-3)


def test_scaled_gaussians_leave_the_original_alone():
    from trellis.export.bake.observations import scaled_gaussians

    g = surface_gaussians(8)
    before = g.get_scaling.clone()
    half = scaled_gaussians(g, 0.5)
    assert torch.equal(g.get_scaling, before)
    assert scaled_gaussians(g, 1.0) is g
    # Halved above the minimum kernel; never below it.
    assert torch.allclose(half.get_scaling[:, :2], before[:, :2] * 0.5, rtol=1e-4)
    assert float(half.get_scaling.min()) >= 9e-4 * (1 - 1e-5)
    with pytest.raises(ValueError):
        scaled_gaussians(g, 0.0)
    assert np.isfinite(half.get_scaling.numpy()).all()


@pytest.mark.slow
def test_a_bake_that_observed_almost_nothing_is_done_again_from_fainter_pixels(square, opaque):
    """Faint Gaussians (opacity 0.08, as an untrained decoder's) leave no pixel above the observations' alpha
    threshold: the bake observes nothing and would be black. ``rebake_if_unobserved`` bakes again from the
    Gaussians at full size and pixels of opacity > FALLBACK_ALPHA; their un-premultiplied colours are as right
    as the opaque Gaussians' at full size. Opaque Gaussians observe nearly all and are left alone."""
    from trellis.export.bake.coverage import FALLBACK_ALPHA, MIN_OBSERVED_SHARE, rebake_if_unobserved

    v, f, uv, ext, intr, want, inside = square

    def first_bake(gauss):
        acc = TextureAccumulator(v, f, uv, SIZE)
        views = render_observations(gauss, ext, intr, RES, gaussian_scale=sharpening_scale(gauss, RES))
        for i, (color, mask, depth) in enumerate(views):
            acc.add_view(color, mask, ext[i], intr[i], depth=depth)
        return acc.solve()

    _, seen = opaque["sharp"]                       # what first_bake gives for the opaque Gaussians
    info = {}
    assert rebake_if_unobserved(seen, opaque["gaussians"], v, f, uv, SIZE, ext, intr, RES, info) is None
    assert info["observed_share"] > 0.95 and "bake_fallback" not in info, info

    faint = surface_gaussians(opacity=0.08)
    tex, seen = first_bake(faint)
    info, heard = {}, []
    again = rebake_if_unobserved(seen, faint, v, f, uv, SIZE, ext, intr, RES, info,
                                 progress=lambda stage, done, total: heard.append((stage, done, total)))
    assert again is not None, info
    # every view observed again, then the new solve's own steps (its time is not the last view's)
    stages = [stage for stage, _, _ in heard]
    assert stages == sorted(stages, key=["reobserve", "resolve"].index) and heard[len(ext) - 1] == ("reobserve",
                                                                                                      len(ext), len(ext))
    assert heard[-1][0] == "resolve" and heard[-1][1] == heard[-1][2] > 0
    fallback = info["bake_fallback"]
    # Measured (CPU): 0 % observed, then 100 % at alpha > 0.05.
    assert fallback["observed_share_before"] < MIN_OBSERVED_SHARE and fallback["used"], info
    assert info["observed_share"] == fallback["observed_share_after"] > 0.9
    assert fallback["alpha_threshold"] == FALLBACK_ALPHA and fallback["gaussian_scale"] == 1.0
    tex, seen = again
    full = opaque["full"]                           # the opaque Gaussians baked at full size
    # Measured (CPU): 17.0 dB for the faint Gaussians' fallback, 14.3 dB for the opaque ones at full size;
    # colours left premultiplied by the opacity would be about 8x too dark (under 6 dB).
    assert psnr(tex, want, inside & seen) > psnr(full, want, inside) - 1.0
