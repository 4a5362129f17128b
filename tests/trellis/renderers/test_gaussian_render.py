"""Tests of the pure-PyTorch Gaussian splatting renderer against a plain per-pixel reference."""
import math

import numpy as np
import pytest
import torch

from trellis.renderers.cameras import intrinsics_from_fov, orbit_cameras
from trellis.renderers.gaussian_render import render_gaussians
from trellis.core.callbacks import Cancelled

from tests.helpers.splats import make_gaussian, random_scene, render_brute_force


# The reference: tests/helpers/splats.py's render_brute_force (float64, every Gaussian at every pixel, no tiles, no
# culling radius).
@pytest.mark.parametrize("seed, res, yaw, pitch, bg, kernel, tile, chunk", [
    (0, 24, 0.3, 0.2, (0, 0, 0), 0.1, 16, 256),
    (1, 24, 2.0, -0.4, (0.2, 0.5, 1.0), 0.1, 16, 4),
    (2, 21, 4.0, 0.9, (1, 1, 1), 0.3, 8, 3),
    (3, 24, 5.5, 0.0, (0, 0, 0), 0.0, 16, 256),
    (4, 24, 1.2, 0.5, (0, 0, 0), 0.1, 1, 256),   # 1-pixel tiles: the binning extent decides alone
])
def test_matches_brute_force(seed, res, yaw, pitch, bg, kernel, tile, chunk):
    rng = np.random.default_rng(seed)
    ext, intr = orbit_cameras([yaw], [pitch], radius=2.0, fov=40.0)
    eye = -ext[0, :3, :3].T.double().numpy() @ ext[0, :3, 3].double().numpy()
    g = random_scene(rng, eye=eye)
    out = render_gaussians(g, ext[0], intr[0], res, bg_color=bg, kernel_size=kernel, tile_size=tile,
                           work_budget=chunk)
    color, alpha, depth = render_brute_force(g, ext[0], intr[0], res, res, bg=bg, kernel_size=kernel)
    assert out["color"].shape == (3, res, res) and out["alpha"].shape == (1, res, res)
    assert out["depth"].shape == (1, res, res)
    assert alpha.max() > 0.5 and (alpha < 1e-6).any()        # the scene is neither empty nor full
    np.testing.assert_allclose(out["color"].numpy(), color, atol=1e-4, rtol=0)
    np.testing.assert_allclose(out["alpha"].numpy(), alpha, atol=1e-4, rtol=0)
    np.testing.assert_allclose(out["depth"].numpy(), depth, atol=1e-4, rtol=0)


def test_float32_exponent_path_matches_brute_force(monkeypatch):
    """Devices without float64 (MPS) evaluate the exponent directly in float32; check that path on CPU."""
    import trellis.renderers.gaussian_render as gr

    monkeypatch.setattr(gr, "_NO_FLOAT64_DEVICES", {"cpu", "mps"})
    rng = np.random.default_rng(5)
    ext, intr = orbit_cameras([0.8], [0.1])
    eye = -ext[0, :3, :3].T.double().numpy() @ ext[0, :3, 3].double().numpy()
    g = random_scene(rng, eye=eye)
    out = render_gaussians(g, ext[0], intr[0], 24, work_budget=5)
    color, alpha, depth = render_brute_force(g, ext[0], intr[0], 24, 24)
    np.testing.assert_allclose(out["color"].numpy(), color, atol=1e-4, rtol=0)
    np.testing.assert_allclose(out["alpha"].numpy(), alpha, atol=1e-4, rtol=0)
    np.testing.assert_allclose(out["depth"].numpy(), depth, atol=1e-4, rtol=0)


def test_saturated_pixels_match_brute_force():
    """Many stacked opaque splats: the early stop at T < 1e-4 must agree, also across chunks."""
    rng = np.random.default_rng(7)
    n = 40
    xyz = rng.normal(size=(n, 3)) * 0.05
    scales = np.full((n, 3), 0.15)
    g = make_gaussian(xyz, scales, rng.normal(size=(n, 4)), rng.uniform(0.6, 0.97, n), rng.uniform(0, 1, (n, 3)))
    ext, intr = orbit_cameras([1.0], [0.3])
    color, alpha, depth = render_brute_force(g, ext[0], intr[0], 16, 16)
    for chunk in (2, 256):
        out = render_gaussians(g, ext[0], intr[0], 16, work_budget=chunk)
        np.testing.assert_allclose(out["color"].numpy(), color, atol=1e-4, rtol=0)
        np.testing.assert_allclose(out["alpha"].numpy(), alpha, atol=1e-4, rtol=0)
        np.testing.assert_allclose(out["depth"].numpy(), depth, atol=1e-4, rtol=0)
    assert alpha.max() > 0.999


# ---------------------------------------------------------------------------------------------------
# Analytic checks
# ---------------------------------------------------------------------------------------------------
def test_single_isotropic_gaussian_head_on():
    res, s, o, kernel = 33, 0.1, 0.8, 0.1
    g = make_gaussian([[0, 0, 0]], [[s, s, s]], [[1, 0, 0, 0]], [o], [[0.25, 0.5, 0.75]])
    ext, intr = orbit_cameras([0.0], [0.0], radius=2.0, fov=40.0)
    out = render_gaussians(g, ext[0], intr[0], res, kernel_size=kernel)
    f_px = 0.5 / math.tan(math.radians(20)) * res
    var0 = (f_px * s / 2.0) ** 2                      # projected variance in pixel^2 (z = 2)
    var = var0 + kernel
    peak = o * var0 / var                             # sqrt(det ratio) = var0 / var for isotropic
    a = out["alpha"][0].double().numpy()
    c = res // 2                                      # centre projects to (16.5, 16.5) = centre of pixel 16
    assert a[c, c] == pytest.approx(peak, rel=1e-5)
    assert np.unravel_index(a.argmax(), a.shape) == (c, c)
    # radial symmetry: invariant under transposes and flips around the centre pixel
    np.testing.assert_allclose(a, a.T, atol=1e-6)
    np.testing.assert_allclose(a, a[::-1, :], atol=1e-6)
    np.testing.assert_allclose(a, a[:, ::-1], atol=1e-6)
    # the profile is the expected Gaussian (zero below 1/255), so its std is sqrt(var)
    rr, cc = np.mgrid[0:res, 0:res]
    expect = peak * np.exp(-0.5 * ((rr - c) ** 2 + (cc - c) ** 2) / var)
    expect[expect < 1 / 255] = 0
    np.testing.assert_allclose(a, expect, atol=1e-5)
    sigma_fit = math.sqrt(0.5 * 3 ** 2 / math.log(a[c, c] / a[c, c + 3]))
    assert sigma_fit == pytest.approx(math.sqrt(var), rel=1e-4)
    # colour = alpha * rgb, depth = alpha * z
    np.testing.assert_allclose(out["color"][:, c, c].numpy(), peak * np.array([0.25, 0.5, 0.75]), rtol=1e-5)
    assert out["depth"][0, c, c].item() == pytest.approx(2.0 * peak, rel=1e-5)


def test_without_opacity_compensation_peak_is_opacity():
    g = make_gaussian([[0, 0, 0]], [[0.03] * 3], [[1, 0, 0, 0]], [0.8], [[1, 1, 1]])
    ext, intr = orbit_cameras([0.0], [0.0])
    out = render_gaussians(g, ext[0], intr[0], 33, opacity_compensation=False)
    assert out["alpha"][0, 16, 16].item() == pytest.approx(0.8, rel=1e-6)


def test_occlusion_and_background():
    ext, intr = orbit_cameras([0.0], [0.0])          # camera at +y looking at the origin
    red, green = [1, 0, 0], [0, 1, 0]
    g = make_gaussian([[0, 0.3, 0], [0, -0.3, 0]], [[0.1] * 3, [0.1] * 3], [[1, 0, 0, 0]] * 2,
                      [0.99999, 0.5], [red, green])
    bg = (0.1, 0.2, 0.3)
    res = 33
    out = render_gaussians(g, ext[0], intr[0], res, bg_color=bg)
    # both centres project onto the centre of pixel (16, 16); the front one saturates at alpha 0.99
    f_px = 0.5 / math.tan(math.radians(20)) * res
    var_r, var_g = (f_px * 0.1 / 1.7) ** 2, (f_px * 0.1 / 2.3) ** 2
    a_red = min(0.99, 0.99999 * var_r / (var_r + 0.1))
    a_green = 0.5 * var_g / (var_g + 0.1)
    t_end = (1 - a_red) * (1 - a_green)
    expect = np.array([a_red, (1 - a_red) * a_green, 0]) + t_end * np.array(bg)
    np.testing.assert_allclose(out["color"][:, 16, 16].numpy(), expect, atol=1e-5)
    assert out["alpha"][0, 16, 16].item() == pytest.approx(1 - t_end, abs=1e-5)
    assert out["depth"][0, 16, 16].item() == pytest.approx(a_red * 1.7 + (1 - a_red) * a_green * 2.3, abs=1e-5)
    # the corners see nothing: background colour, zero alpha and depth
    np.testing.assert_allclose(out["color"][:, 0, 0].numpy(), bg, atol=1e-7)
    assert out["alpha"][0, 0, 0].item() == 0 and out["depth"][0, 0, 0].item() == 0
    # swapping the camera to the other side swaps the visible colour
    ext2, _ = orbit_cameras([math.pi], [0.0])
    c2 = render_gaussians(g, ext2[0], intr[0], res)["color"][:, 16, 16]
    assert c2[1] > 0.49 and c2[0] < 0.5 * 0.99 + 1e-3


def test_empty_and_all_culled():
    ext, intr = orbit_cameras([0.0], [0.0])
    g = make_gaussian(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros((0, 4)), np.zeros(0), np.zeros((0, 3)))
    out = render_gaussians(g, ext[0], intr[0], 20, bg_color=(0.5, 0.25, 1.0))
    assert torch.allclose(out["color"], torch.tensor([0.5, 0.25, 1.0])[:, None, None].expand(3, 20, 20))
    assert out["alpha"].abs().max() == 0 and out["depth"].abs().max() == 0
    # a single Gaussian behind the camera
    g = make_gaussian([[0, 3, 0]], [[0.3] * 3], [[1, 0, 0, 0]], [0.9], [[1, 1, 1]])
    out = render_gaussians(g, ext[0], intr[0], 20)
    assert out["alpha"].abs().max() == 0


# ---------------------------------------------------------------------------------------------------
# Camera convention: yaw 0, pitch 0 puts the eye at (0, 2, 0) looking along -y with z up.
# look_at: cam z = (0,-1,0), cam x = normalise((-up) x z) = (-1,0,0), cam y = z x x = (0,0,-1).
# So world +z maps to camera -y (image up) and world +x to camera -x (image left).
# ---------------------------------------------------------------------------------------------------
def _centroid(img):
    a = img["alpha"][0].double()
    rows, cols = torch.meshgrid(torch.arange(a.shape[0]), torch.arange(a.shape[1]), indexing="ij")
    return (a * rows).sum().item() / a.sum().item(), (a * cols).sum().item() / a.sum().item()


def test_camera_convention():
    ext, intr = orbit_cameras([0.0], [0.0])
    res = 32
    up = render_gaussians(make_gaussian([[0, 0, 0.3]], [[0.1] * 3], [[1, 0, 0, 0]], [0.9], [[1, 1, 1]]),
                          ext[0], intr[0], res)
    r, c = _centroid(up)
    assert r + 0.5 < res / 2 - 3 and abs(c + 0.5 - res / 2) < 1e-3   # upper half, horizontally centred
    right = render_gaussians(make_gaussian([[0.3, 0, 0]], [[0.1] * 3], [[1, 0, 0, 0]], [0.9], [[1, 1, 1]]),
                             ext[0], intr[0], res)
    r, c = _centroid(right)
    assert c + 0.5 < res / 2 - 3 and abs(r + 0.5 - res / 2) < 1e-3   # world +x appears on the LEFT
    # exact projected position: u = fx*W*x/z + cx*W with camera x = -0.3, z = 2
    f_px = 0.5 / math.tan(math.radians(20)) * res
    assert c + 0.5 == pytest.approx(-f_px * 0.3 / 2 + res / 2, abs=0.02)


def test_intrinsics_scale_with_resolution():
    g = make_gaussian([[0.1, 0.0, 0.05]], [[0.04] * 3], [[1, 0, 0, 0]], [0.9], [[1, 1, 1]])
    ext, _ = orbit_cameras([0.0], [0.0])
    intr = intrinsics_from_fov(math.radians(40))
    a = render_gaussians(g, ext[0], intr, 20)["alpha"]
    b = render_gaussians(g, ext[0], intr, 40)["alpha"]
    ra, ca = _centroid({"alpha": a})
    rb, cb = _centroid({"alpha": b})
    assert (rb + 0.5) == pytest.approx(2 * (ra + 0.5), abs=0.05)
    assert (cb + 0.5) == pytest.approx(2 * (ca + 0.5), abs=0.05)
    assert a.device == g.get_xyz.device


def test_cancel_raises():
    rng = np.random.default_rng(0)
    ext, intr = orbit_cameras([0.5], [0.2])
    g = random_scene(rng, eye=np.array([0.0, 2.0, 0.0]))
    with pytest.raises(Cancelled):
        render_gaussians(g, ext[0], intr[0], 24, cancel=lambda: True)
    calls = []

    def cancel_later():
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(Cancelled):
        render_gaussians(g, ext[0], intr[0], 24, work_budget=2, cancel=cancel_later)
    out = render_gaussians(g, ext[0], intr[0], 24, cancel=lambda: False)
    assert out["alpha"].max() > 0


def test_binning_extent_covers_every_visible_sample():
    """Wherever alpha >= 1/255 (sampled on a fine grid), the point lies inside the binning box."""
    from trellis.renderers.gaussian_render import project

    rng = np.random.default_rng(11)
    n = 30
    g = make_gaussian(rng.uniform(-0.3, 0.3, (n, 3)), np.exp(rng.uniform(-5, -2.5, (n, 3))),
                      rng.normal(size=(n, 4)), rng.uniform(0.01, 1.0, n), np.zeros((n, 3)))
    ext, intr = orbit_cameras([0.7], [0.3])
    p = project(g.get_xyz, g.get_scaling, g.get_rotation, g.get_opacity.reshape(-1), ext[0], intr[0],
                 64, 64, 0.8, 1.6, False, 0.1, True)
    for i in range(p["idx"].numel()):
        hx, hy = p["half_x"][i].item(), p["half_y"][i].item()
        a_, b_, c_ = p["conic"][i].double().tolist()
        dx, dy = np.meshgrid(np.linspace(-1.2 * hx, 1.2 * hx, 241), np.linspace(-1.2 * hy, 1.2 * hy, 241))
        alpha = np.minimum(0.99, p["opacity"][i].item() * np.exp(-0.5 * (a_ * dx ** 2 + c_ * dy ** 2) - b_ * dx * dy))
        seen = alpha >= 1 / 255
        assert seen.any()
        assert np.abs(dx[seen]).max() <= hx and np.abs(dy[seen]).max() <= hy
        # and the box is tight: it is at most a few percent larger than the visible region
        assert np.abs(dx[seen]).max() > 0.97 * hx - 0.02 and np.abs(dy[seen]).max() > 0.97 * hy - 0.02


def test_a_failing_fast_kernel_falls_back_to_the_same_render(monkeypatch):
    # Simulated broken Triton (it cannot run on a CPU): the compositing kernel raises, the frame is
    # rendered by the PyTorch twin with a warning, and the kernel stays off for the process.
    from trellis import fastpaths

    rng = np.random.default_rng(7)
    ext, intr = orbit_cameras([0.8], [0.2], radius=2.0, fov=40.0)
    eye = -ext[0, :3, :3].T.double().numpy() @ ext[0, :3, 3].double().numpy()
    g = random_scene(rng, eye=eye)
    ref = render_gaussians(g, ext[0], intr[0], 24)
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("triton: no working C compiler")
    kernel_module = fastpaths._import_kernel_module(fastpaths.KERNELS["gaussian_composite"][0].module)
    monkeypatch.setattr(kernel_module, "composite", broken)
    monkeypatch.setattr(fastpaths, "_disabled", {})
    monkeypatch.setattr(fastpaths, "_backend_reason", lambda backend, device: None)
    monkeypatch.setattr(fastpaths, "_override", True)
    with pytest.warns(RuntimeWarning, match="gaussian_composite"):
        out = render_gaussians(g, ext[0], intr[0], 24)
    again = render_gaussians(g, ext[0], intr[0], 24)
    assert calls == [1] and "gaussian_composite:triton" in fastpaths._disabled
    # the Triton kernel is off; the NVRTC one stays on (it declines CPU tensors, so the twin ran)
    assert fastpaths.path_of("gaussian_composite", "cpu") == "nvrtc"
    for key in ("color", "alpha", "depth"):
        assert torch.equal(out[key], ref[key]) and torch.equal(again[key], ref[key])
