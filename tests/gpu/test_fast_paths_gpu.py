"""Every fast kernel equals its PyTorch twin on the GPU (tests/gpu: skipped without CUDA), for each
backend (Triton, NVRTC) that has one.

* ``mesh_raster``: face ids, barycentrics and depth bit-identical (exact integer coverage, float64
  depth keys) on random triangle soups from sub-pixel to screen-filling, with vertices on pixel centres,
  a closed sphere and an atlas-sized image; and equal to the CPU raster.
* ``gaussian_composite``: colour / alpha / depth within 2e-5 of each other on all but a few pixels
  and within 1e-3 everywhere (the kernel multiplies the transmittance in float32 step by step, the twin
  sums log(1 - alpha) in float64: they can only part where a pixel's transmittance lands within
  rounding of the 1e-4 stop, whose last contribution is below 1e-4 * alpha), and both within 1e-4 of
  the float64 brute-force reference of the CPU tests.
"""

import numpy as np
import pytest
import torch

from tests.helpers.gpu_inputs import random_splats
from tests.helpers.meshes import to_clip, uv_sphere
from tests.helpers.splats import random_scene, render_brute_force
from trellis import fastpaths
from trellis.renderers.cameras import orbit_cameras
from trellis.renderers.gaussian_render import render_gaussians
from trellis.renderers.mesh_render import rasterize

DEV = "cuda"


@pytest.mark.parametrize("n, seed, kind, res, bg", [
    (200_000, 0, "shell", 512, (0, 0, 0)),
    (200_000, 1, "cube", (300, 500), (0.2, 0.5, 1.0)),
    (50_000, 2, "shell", 1024, (1, 1, 1)),
])
def test_gaussian_composite_kernel_equals_twin(fast_on, need_kernel, n, seed, kind, res, bg):
    need_kernel("gaussian_composite")
    g = random_splats(n, seed, kind)
    ext, intr = orbit_cameras([0.3 + seed], [0.2 - 0.3 * seed], radius=2.0, fov=40.0, device=DEV)
    twin = fast_on(False, render_gaussians, g, ext[0], intr[0], res, bg_color=bg)
    kern = fast_on(True, render_gaussians, g, ext[0], intr[0], res, bg_color=bg)
    assert twin["alpha"].max() > 0.5
    for key in ("color", "alpha", "depth"):
        diff = (kern[key] - twin[key]).abs()
        assert diff.max().item() <= 1e-3, key
        assert (diff > 2e-5).float().mean().item() <= 1e-4, key   # a few pixels at most


def test_gaussian_paths_match_brute_force_on_cuda(fast_on, need_kernel):
    need_kernel("gaussian_composite")
    for seed, res, yaw, pitch, bg, kern, tile in [(0, 24, 0.3, 0.2, (0, 0, 0), 0.1, 16),
                                                  (1, 24, 2.0, -0.4, (0.2, 0.5, 1.0), 0.1, 16),
                                                  (2, 21, 4.0, 0.9, (1, 1, 1), 0.3, 8)]:
        rng = np.random.default_rng(seed)
        e, k = orbit_cameras([yaw], [pitch], radius=2.0, fov=40.0)
        eye = -e[0, :3, :3].T.double().numpy() @ e[0, :3, 3].double().numpy()
        g = random_scene(rng, eye=eye)
        ref = render_brute_force(g, e[0], k[0], res, res, bg=bg, kernel_size=kern)
        for fast in (True, False):
            out = fast_on(fast, render_gaussians, g.to(DEV), e[0].to(DEV), k[0].to(DEV), res, bg_color=bg,
                          kernel_size=kern, tile_size=tile)
            for got, want in zip((out["color"], out["alpha"], out["depth"]), ref):
                np.testing.assert_allclose(got.cpu().numpy(), want, atol=1e-4, rtol=0)


def _soup(n, seed, scale, snap=False, res=256):
    gen = torch.Generator().manual_seed(seed)
    centres = (torch.rand(n, 1, 3, generator=gen) - 0.5) * 1.6
    verts = (centres + torch.randn(n, 3, 3, generator=gen) * scale).reshape(-1, 3)
    verts[:, 2] = verts[:, 2] * 0.3 + 3.0                      # in front of the camera: clip w in [2, 4]
    clip = torch.cat([verts[:, :2] * verts[:, 2:3], torch.zeros_like(verts[:, :1]), verts[:, 2:3]], -1)
    if snap:   # vertices exactly on pixel centres: exercises the fill rule
        ndc = clip[:, :2] / clip[:, 3:]
        pix = torch.floor((ndc + 1) * res / 2) + 0.5
        clip[:, :2] = (pix * 2 / res - 1) * clip[:, 3:]
    faces = torch.arange(n * 3).reshape(n, 3)
    return clip.double(), faces


@pytest.mark.parametrize("n, scale, res, snap", [
    (20_000, 0.002, 256, False),     # mostly sub-pixel
    (5_000, 0.05, 512, True),        # a few pixels, vertices on pixel centres
    (300, 0.8, 512, False),          # screen-filling
    (200_000, 0.01, 2048, False),    # atlas-sized image
])
def test_mesh_raster_kernel_equals_twin_bit_for_bit(fast_on, need_kernel, n, scale, res, snap):
    need_kernel("mesh_raster")
    clip, faces = _soup(n, n + res, scale, snap, res)
    clip = clip.float()
    twin = fast_on(False, rasterize, clip.to(DEV), faces.to(DEV), res, res)
    kern = fast_on(True, rasterize, clip.to(DEV), faces.to(DEV), res, res)
    assert (twin[0] > 0).any()
    for a, b in zip(twin, kern):
        assert torch.equal(a, b)
    if res <= 512:
        cpu = rasterize(clip, faces, res, res)
        for a, b in zip(cpu, kern):
            assert torch.equal(a, b.cpu())


def test_mesh_raster_sphere_views(fast_on, need_kernel):
    need_kernel("mesh_raster")
    v, f = uv_sphere(0.5, 200, 400)
    ext, intr = orbit_cameras([0.1, 1.7, 3.9], [0.0, 0.6, -1.1], 2.0, 40.0)
    for i in range(3):
        clip = to_clip(v, ext[i], intr[i]).to(DEV)
        twin = fast_on(False, rasterize, clip, f.to(DEV), 1024, 1024)
        kern = fast_on(True, rasterize, clip, f.to(DEV), 1024, 1024)
        for a, b in zip(twin, kern):
            assert torch.equal(a, b)


def test_status_reports_the_fast_path_on_this_gpu(monkeypatch):
    monkeypatch.delenv(fastpaths.ENV_VAR, raising=False)
    st = fastpaths.status(DEV)
    assert st["device"].startswith("cuda")
    if fastpaths.triton_importable() and torch.cuda.get_device_capability() >= (7, 0):
        assert st["fast"], st
        assert "fast paths on" in fastpaths.describe(DEV)
    fastpaths.set_enabled(False)
    try:
        assert not fastpaths.status(DEV)["fast"] and "slower path" in fastpaths.describe(DEV)
    finally:
        fastpaths.set_enabled(None)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_kernels_run_on_a_second_gpu_after_the_first(fast_on, need_kernel):
    # A compiled kernel belongs to one device's context: the second GPU (often of the same kind, as with
    # --gpus 0,1) must get its own, not the first one's.
    need_kernel("gaussian_composite")
    g0 = random_splats(20_000, 5, "shell")
    ext, intr = orbit_cameras([0.7], [0.1], radius=2.0, fov=40.0)
    outs = {}
    for dev in ("cuda:0", "cuda:1"):
        g = g0.to(dev)
        outs[dev] = {fast: fast_on(fast, render_gaussians, g, ext[0].to(dev), intr[0].to(dev), 256)
                     for fast in (True, False)}
        v, f = uv_sphere(0.5, 40, 80)
        clip, f = to_clip(v, ext[0], intr[0]).to(dev), f.to(dev)
        a = fast_on(True, rasterize, clip, f, 256, 256)
        b = fast_on(False, rasterize, clip, f, 256, 256)
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    for dev, o in outs.items():
        assert (o[True]["color"] - o[False]["color"]).abs().max().item() <= 1e-3, dev
    assert torch.equal(outs["cuda:0"][True]["color"].cpu(), outs["cuda:1"][True]["color"].cpu())
