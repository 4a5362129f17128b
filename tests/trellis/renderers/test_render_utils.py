"""Radiance-field renderer vs a brute-force ray marcher; render_video / multiview / snapshot; mp4 writer."""
import math
import re
import subprocess

import numpy as np
import pytest
import torch

from trellis.renderers.cameras import orbit_cameras, projection_opencv
from trellis.renderers.gaussian_render import render_gaussians
from trellis.renderers.radiance_field_render import render_strivec
from trellis.representations import Gaussian, MeshExtractResult, Strivec
from trellis.representations.gaussian import SH_C0
from trellis.utils import render_utils
from trellis.core.callbacks import Cancelled

AABB = [-0.5, -0.5, -0.5, 1.0, 1.0, 1.0]


# ---------------------------------------------------------------------------------------------------
# Test objects
# ---------------------------------------------------------------------------------------------------
def make_strivec(seed, res=8, n=40, rank=3, dim=6, dense_frac=0.2):
    g = torch.Generator().manual_seed(seed)
    coords = torch.randperm(res ** 3, generator=g)[:n]
    coords = torch.stack([coords // (res * res), coords // res % res, coords % res], -1)
    s = Strivec(res, AABB, rank=rank, dim=dim)
    s.position = (coords.float() + 0.5) / res
    s.depth = torch.full((n, 1), int(math.log2(res)), dtype=torch.uint8)
    s.trivec = 1 + 0.4 * torch.randn(n, rank, 3, dim, generator=g)
    dens = 15 * torch.randn(n, rank, generator=g) + 10
    dense = torch.rand(n, generator=g) < dense_frac            # some voxels hit the 0.999 alpha clamp
    dens[dense] = 600.0 / rank
    s.density = dens
    s.features_dc = 2 * torch.randn(n, rank, 1, 3, generator=g)
    return s


def make_gaussian(n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    gs = Gaussian(AABB, mininum_kernel_size=0.0)
    xyz = 0.25 * torch.randn(n, 3, generator=g).clamp(-1.6, 1.6)
    gs.from_xyz(xyz)
    gs.from_scaling(0.02 + 0.04 * torch.rand(n, 3, generator=g))
    gs.from_rotation(torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1))
    gs.from_opacity(0.5 + 0.45 * torch.rand(n, 1, generator=g))
    rgb = 0.2 + 0.8 * torch.rand(n, 3, generator=g)
    gs.from_features(((rgb - 0.5) / SH_C0).reshape(n, 1, 3))
    return gs


def make_icosphere(radius=0.4, subdiv=2):
    t = (1 + 5 ** 0.5) / 2
    v = [[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t], [0, -1, -t], [0, 1, -t],
         [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]]
    f = [[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4], [11, 10, 2],
         [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8], [3, 8, 9], [4, 9, 5],
         [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]]
    verts = [np.array(p, dtype=np.float64) / np.linalg.norm(p) for p in v]
    for _ in range(subdiv):
        cache, nf = {}, []

        def mid(a, b):
            key = (min(a, b), max(a, b))
            if key not in cache:
                m = verts[a] + verts[b]
                verts.append(m / np.linalg.norm(m))
                cache[key] = len(verts) - 1
            return cache[key]
        for a, b, c in f:
            ab, bc, ca = mid(a, b), mid(b, c), mid(c, a)
            nf += [[a, ab, ca], [b, bc, ab], [c, ca, bc], [ab, bc, ca]]
        f = nf
    vt = torch.tensor(np.array(verts) * radius, dtype=torch.float32)
    return MeshExtractResult(vt, torch.tensor(f, dtype=torch.int64), res=64)


# ---------------------------------------------------------------------------------------------------
# Brute-force radiance-field reference (float64, one ray at a time, spec §7.3 read literally)
# ---------------------------------------------------------------------------------------------------
def brute_force_pixels(s, extrinsics, intrinsics, height, width, pixels, near, bg):
    res = s.resolution
    dim = s.trivec.shape[-1]
    pos = s.position.double().numpy()
    amin, asize = s.aabb[:3].double().numpy(), s.aabb[3:].double().numpy()
    vmin = (pos - 0.5 / res) * asize + amin                   # voxel boxes in world units
    vmax = (pos + 0.5 / res) * asize + amin
    tv = s.trivec.double().numpy()
    dens = s.density.double().numpy()
    dc = s.features_dc.double().numpy()[:, :, 0, :]
    step = 1.0 / res / 16
    ext = np.asarray(extrinsics, dtype=np.float64)
    k = np.asarray(intrinsics, dtype=np.float64)
    rot, tr = ext[:3, :3], ext[:3, 3]
    origin = -rot.T @ tr
    t_max = np.linalg.norm(origin) + 1.0
    ks = np.arange(1, int(t_max / step) + 2)
    out = []
    for (i, j) in pixels:
        d_cam = np.array([(j + 0.5 - k[0, 2] * width) / (k[0, 0] * width),
                          (i + 0.5 - k[1, 2] * height) / (k[1, 1] * height), 1.0])
        d_cam /= np.linalg.norm(d_cam)
        d = rot.T @ d_cam
        color, depth, trans = np.zeros(3), 0.0, 1.0
        ts = ks * step
        pts = origin + ts[:, None] * d
        inside = np.all((pts[:, None, :] >= vmin[None]) & (pts[:, None, :] < vmax[None]), -1)   # [K,N]
        for kk in np.nonzero(inside.any(1))[0]:
            v = int(np.nonzero(inside[kk])[0][0])
            assert inside[kk].sum() == 1
            z = ts[kk] * d_cam[2]
            if z <= near:
                continue
            u = (pts[kk] - vmin[v]) / (vmax[v] - vmin[v]) * dim - 0.5
            w = np.ones(tv.shape[1])
            for a in range(3):
                c = int(min(max(math.floor(u[a]), 0), dim - 2))
                f = u[a] - c
                w = w * (tv[v, :, a, c] * (1 - f) + tv[v, :, a, c + 1] * f)
            sigma = np.logaddexp(0.0, np.dot(dens[v], w))
            rgb = 1 / (1 + np.exp(-(SH_C0 * (dc[v] * w[:, None]).sum(0))))
            alpha = min(1 - math.exp(-sigma * step), 0.999)
            color += trans * alpha * rgb
            depth += trans * alpha * z
            trans *= 1 - alpha
        out.append((color + trans * np.asarray(bg), 1 - trans, depth))
    return out


RF_CASES = [
    # (seed, n voxels, rank, dim, yaw, pitch, radius, near, (H, W), bg, principal point)
    (0, 30, 2, 4, 0.3, 0.4, 2.0, 0.8, (24, 24), (0, 0, 0), (0.5, 0.5)),
    (1, 60, 4, 8, 2.1, -0.3, 1.2, 0.8, (20, 28), (0.2, 0.5, 1.0), (0.45, 0.55)),   # near clips
    (2, 48, 3, 5, 4.0, 0.9, 0.3, 0.01, (18, 18), (1, 1, 1), (0.5, 0.5)),   # camera inside the grid
]


@pytest.mark.parametrize("case", RF_CASES)
def test_rf_matches_brute_force(case):
    seed, n, rank, dim, yaw, pitch, radius, near, (h, w), bg, (cx, cy) = case
    s = make_strivec(seed, n=n, rank=rank, dim=dim)
    ext, intr = orbit_cameras([yaw], [pitch], radius, 60.0)
    intr[0, 0, 2], intr[0, 1, 2] = cx, cy
    out = render_strivec(s, ext[0], intr[0], (h, w), near=near, bg_color=bg)
    assert out["color"].shape == (3, h, w) and out["alpha"].shape == (1, h, w)
    assert out["depth"].shape == (1, h, w)
    pixels = [(i, j) for i in range(h) for j in range(w)]
    ref = brute_force_pixels(s, ext[0], intr[0], h, w, pixels, near, bg)
    col = np.array([r[0] for r in ref]).reshape(h, w, 3).transpose(2, 0, 1)
    alp = np.array([r[1] for r in ref]).reshape(1, h, w)
    dep = np.array([r[2] for r in ref]).reshape(1, h, w)
    assert (alp > 0.5).sum() > 10 and (alp < 1e-9).sum() > 10   # both hit and empty pixels exist
    np.testing.assert_allclose(out["color"].numpy(), col, atol=1e-5, rtol=0)
    np.testing.assert_allclose(out["alpha"].numpy(), alp, atol=1e-5, rtol=0)
    np.testing.assert_allclose(out["depth"].numpy(), dep, atol=1e-5, rtol=0)


def test_rf_chunking_ssaa_empty_and_cancel():
    s = make_strivec(3, n=50, rank=3, dim=8)
    ext, intr = orbit_cameras([1.0], [0.2], 2.0, 40.0)
    a = render_strivec(s, ext[0], intr[0], 24)
    b = render_strivec(s, ext[0], intr[0], 24, pair_budget=97, sample_budget=3000)   # many tiny chunks
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=0)
    # ssaa = area average of the supersampled image
    big = render_strivec(s, ext[0], intr[0], 24)
    small = render_strivec(s, ext[0], intr[0], 12, ssaa=2)
    pooled = torch.nn.functional.avg_pool2d(big["color"][None], 2)[0]
    torch.testing.assert_close(small["color"], pooled, atol=1e-6, rtol=0)
    # no voxels: background only
    e = Strivec(8, AABB, rank=2, dim=4)
    out = render_strivec(e, ext[0], intr[0], 8, bg_color=(0.1, 0.2, 0.3))
    assert torch.allclose(out["color"], torch.tensor([0.1, 0.2, 0.3])[:, None, None].expand(3, 8, 8))
    assert out["alpha"].abs().max() == 0
    with pytest.raises(Cancelled):
        render_strivec(s, ext[0], intr[0], 24, cancel=lambda: True)


def test_rf_pixel_convention_matches_projection():
    """A single opaque voxel lands where projection_opencv (and the Gaussian renderer) put its centre."""
    s = Strivec(16, AABB, rank=1, dim=2)
    s.position = torch.tensor([[10.5, 5.5, 8.5]]) / 16
    s.depth = torch.full((1, 1), 4, dtype=torch.uint8)
    s.trivec = torch.ones(1, 1, 3, 2)
    s.density = torch.full((1, 1), 1e4)
    s.features_dc = torch.zeros(1, 1, 1, 3)
    ext, intr = orbit_cameras([0.7], [0.3], 2.0, 40.0)
    out = render_strivec(s, ext[0], intr[0], (96, 128))
    a = out["alpha"][0].double()
    ii, jj = torch.meshgrid(torch.arange(96.0), torch.arange(128.0), indexing="ij")
    cy_img, cx_img = ((ii + 0.5) * a).sum() / a.sum(), ((jj + 0.5) * a).sum() / a.sum()
    centre = torch.cat([s.position[0] - 0.5, torch.ones(1)])
    clip = projection_opencv(intr[0], 0.8, 1.6) @ ext[0] @ centre
    ndc = clip[:2] / clip[3]
    assert abs(cx_img - (ndc[0] + 1) * 128 / 2) < 0.2
    assert abs(cy_img - (ndc[1] + 1) * 96 / 2) < 0.2
    assert out["alpha"].max() > 0.99 and 20 < (a > 0.5).sum() < 80


# ---------------------------------------------------------------------------------------------------
# render_video / render_multiview / render_snapshot
# ---------------------------------------------------------------------------------------------------
def spec_orbit_camera(yaw, pitch, r):
    """§14.1 from scratch (numpy float64): eye, OpenCV look-at at the origin, world up +z."""
    eye = r * np.array([math.sin(yaw) * math.cos(pitch), math.cos(yaw) * math.cos(pitch), math.sin(pitch)])
    z = -eye / np.linalg.norm(eye)
    x = np.cross(-np.array([0.0, 0.0, 1.0]), z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    rot = np.stack([x, y, z])
    ext = np.eye(4)
    ext[:3, :3], ext[:3, 3] = rot, -rot @ eye
    return ext


def test_render_video_gaussian_frames_cameras_progress():
    g = make_gaussian(200)
    calls = []
    res = render_utils.render_video(g, resolution=64, num_frames=8, verbose=False,
                                    progress=lambda i, n: calls.append((i, n)))
    assert set(res) == {"color", "depth"}
    assert calls == [(i + 1, 8) for i in range(8)]
    assert len(res["color"]) == 8 and len(res["depth"]) == 8
    for f in res["color"]:
        assert f.dtype == np.uint8 and f.shape == (64, 64, 3)
        assert f[24:40, 24:40].max() > 40                       # the object is visible at the centre
        assert f[24:40, 24:40].mean() > f[:4].mean() + 5
    assert res["depth"][0].shape == (64, 64) and res["depth"][0].dtype == np.float32
    # the orbit: yaw = linspace(0, 2 * 3.1415, n), pitch = 0.25 + 0.5 sin(yaw), r = 2, fov = 40
    ext, intr = render_utils.video_cameras(8, 2.0, 40.0)
    for k in (0, 3):
        yaw = 2 * 3.1415 * k / 7
        np.testing.assert_allclose(ext[k].numpy(), spec_orbit_camera(yaw, 0.25 + 0.5 * math.sin(yaw), 2.0),
                                   atol=2e-6)
    np.testing.assert_allclose(intr[0].numpy(), [[0.5 / math.tan(math.radians(20)), 0, 0.5],
                                                 [0, 0.5 / math.tan(math.radians(20)), 0.5], [0, 0, 1]],
                               atol=1e-6)
    # render_video used exactly that first camera
    ext0 = torch.tensor(spec_orbit_camera(0.0, 0.25, 2.0), dtype=torch.float32)
    direct = render_gaussians(g, ext0, intr[0], 64, near=0.8, far=1.6, kernel_size=0.1)
    expect = (np.clip(direct["color"].numpy().transpose(1, 2, 0), 0, 1) * 255).astype(np.uint8)
    assert np.abs(expect.astype(int) - res["color"][0].astype(int)).max() <= 1


def test_render_video_mesh_normals():
    mesh = make_icosphere()
    res = render_utils.render_video(mesh, resolution=48, num_frames=3, verbose=False)
    assert set(res) == {"normal", "mask"}
    assert len(res["normal"]) == 3
    for f, m in zip(res["normal"], res["mask"]):
        assert f.dtype == np.uint8 and f.shape == (48, 48, 3)
        assert f[20:28, 20:28].min() > 0 and f[0, 0].max() == 0
        assert m.shape == (48, 48) and m[24, 24] == 1 and m[0, 0] == 0
    # facing the camera the normal is roughly -view direction: (n + 1) / 2 at the centre
    ext = render_utils.video_cameras(3)[0][0]
    n_expect = -ext[2, :3].numpy()                         # the normal points back to the camera
    n_img = res["normal"][0][22:26, 22:26].reshape(-1, 3).mean(0) / 255 * 2 - 1
    assert np.dot(n_img / np.linalg.norm(n_img), n_expect) > 0.95


def test_render_video_strivec_and_unsupported():
    s = make_strivec(4, n=60, rank=2, dim=4)
    res = render_utils.render_video(s, resolution=16, num_frames=2, verbose=False)
    assert set(res) == {"color", "depth"}
    assert res["color"][0].shape == (16, 16, 3) and res["color"][0].dtype == np.uint8
    assert res["color"][0].max() > 0
    # the default RF supersampling is 4 (spec §14.2)
    ext, intr = render_utils.video_cameras(2)
    direct = render_strivec(s, ext[0], intr[0], 16, ssaa=4)
    expect = (np.clip(direct["color"].numpy().transpose(1, 2, 0), 0, 1) * 255).astype(np.uint8)
    assert np.array_equal(expect, res["color"][0])
    with pytest.raises(TypeError):
        render_utils.render_video(object(), num_frames=2)


def test_render_multiview_and_snapshot():
    g = make_gaussian(200, seed=1)
    frames, ext, intr = render_utils.render_multiview(g, resolution=32, nviews=6, verbose=False)
    assert len(frames) == 6 and frames[0].shape == (32, 32, 3) and frames[0].dtype == np.uint8
    assert ext.shape == (6, 4, 4) and intr.shape == (6, 3, 3)
    centres = -(ext[:, :3, :3].transpose(1, 2) @ ext[:, :3, 3:])[..., 0]
    np.testing.assert_allclose(centres.norm(dim=-1).numpy(), 2.0, atol=1e-5)
    # view i: (u, v) = (i/n, radical inverse base 2), yaw = 2 pi v, pitch = arccos(1 - 2u) - pi/2
    for i in range(6):
        u, v = i / 6, int(format(i, "b")[::-1], 2) / 2 ** len(format(i, "b")) if i else 0.0
        yaw, pitch = 2 * math.pi * v, math.acos(1 - 2 * u) - math.pi / 2
        expect = spec_orbit_camera(yaw, pitch, 2.0)
        if i == 0:   # straight below the object: look-at with up +z is degenerate, compare the eye only
            np.testing.assert_allclose(centres[0].numpy(), [0, 0, -2], atol=1e-5)
            continue
        np.testing.assert_allclose(ext[i].numpy(), expect, atol=1e-5)
    snap = render_utils.render_snapshot(g, resolution=32, verbose=False)
    assert len(snap["color"]) == 4 and snap["color"][0].shape == (32, 32, 3)
    assert all(f.max() > 0 for f in snap["color"])
    # snapshot cameras: yaw 0/90/180/270° - 16°, pitch 20°, r 10, fov 8°
    ext, intr = orbit_cameras([math.radians(a - 16) for a in (0, 90, 180, 270)], [math.radians(20)] * 4, 10, 8)
    direct = render_utils.render_frames(g, ext, intr, {"resolution": 32}, verbose=False)
    assert all(np.array_equal(a, b) for a, b in zip(direct["color"], snap["color"]))
    # colors_overwrite (Gaussians only): pure red everywhere
    red = torch.tensor([[1.0, 0.0, 0.0]]).expand(len(g), 3)
    res = render_utils.render_frames(g, ext[:1], intr[:1], {"resolution": 32}, colors_overwrite=red,
                                     verbose=False)
    assert res["color"][0][..., 0].max() > 100 and res["color"][0][..., 1:].max() == 0
    with pytest.raises(ValueError):
        render_utils.render_frames(make_icosphere(subdiv=0), ext[:1], intr[:1], colors_overwrite=red,
                                   verbose=False)


def test_one_dispatch_from_representation_to_renderer():
    """trellis.renderers.render picks each representation's renderer and moves the cameras to rep.device;
    each representation's device is read from its tensors."""
    from trellis import renderers
    from trellis.renderers.mesh_render import render_mesh

    ext, intr = orbit_cameras([0.3], [0.2], 2.0, 40.0)
    g, s, m = make_gaussian(50), make_strivec(1), make_icosphere(subdiv=0)
    cases = [(g, render_gaussians, {"near": 0.8, "far": 1.6}), (s, render_strivec, {"ssaa": 2}),
             (m, render_mesh, {"return_types": ("mask", "normal")})]
    for rep, fn, opt in cases:
        assert rep.device == torch.device("cpu")
        assert renderers.renderer_for(rep) is fn
        got = renderers.render(rep, ext[0].double(), intr[0], 24, **opt)
        want = fn(rep, ext[0].double(), intr[0], 24, **opt)
        assert got.keys() == want.keys()
        for key in got:
            assert torch.equal(got[key], want[key]), key
    empty = Strivec(8, AABB)
    assert empty.device == empty.aabb.device and Gaussian(AABB).device == torch.device("cpu")
    with pytest.raises(AttributeError):
        s.device = "cuda"                       # derived, never stored
    with pytest.raises(TypeError, match="no renderer for object"):
        renderers.render(object(), ext[0], intr[0], 8)


def test_cancel_mid_video():
    g = make_gaussian(100)
    calls = []
    with pytest.raises(Cancelled):
        render_utils.render_video(g, resolution=32, num_frames=10, verbose=False,
                                  progress=lambda i, n: calls.append(i), cancel=lambda: len(calls) >= 3)
    assert calls == [1, 2, 3]


# ---------------------------------------------------------------------------------------------------
# save_video
# ---------------------------------------------------------------------------------------------------
def probe(path):
    import imageio_ffmpeg
    r = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)],
                       capture_output=True, text=True)
    line = next(x for x in r.stderr.splitlines() if "Video:" in x)
    m = re.search(r"Video: (\w+)", line)
    size = re.search(r", (\d+)x(\d+)", line)
    return m.group(1), line, (int(size.group(1)), int(size.group(2)))


def decode(path):
    import imageio_ffmpeg
    gen = imageio_ffmpeg.read_frames(str(path))
    meta = gen.__next__()
    w, h = meta["size"]
    frames = [np.frombuffer(f, dtype=np.uint8).reshape(h, w, 3) for f in gen]
    return meta, frames


def test_save_video_roundtrip(tmp_path):
    g = make_gaussian(200)
    frames = render_utils.render_video(g, resolution=64, num_frames=8, verbose=False)["color"]
    path = render_utils.save_video(frames, tmp_path / "turntable.mp4", fps=15)
    codec, line, size = probe(path)
    assert codec == "h264" and "yuv420p(tv, bt709, progressive)" in line and size == (64, 64)
    meta, dec = decode(path)
    assert len(dec) == 8 and dec[0].shape == (64, 64, 3) and abs(meta["fps"] - 15) < 1e-6
    err = np.mean([np.abs(a.astype(float) - b.astype(float)).mean() for a, b in zip(dec, frames)])
    assert err < 4.0, err                                # lossy, but the same picture and colours
    import imageio.v3 as iio
    all_frames = iio.imread(path, plugin="FFMPEG", index=None)
    assert all_frames.shape == (8, 64, 64, 3)
    # flat colours survive the RGB -> BT.709 YUV -> RGB round trip
    flat = [np.broadcast_to(np.array(c, np.uint8), (32, 32, 3)) for c in [(200, 50, 30), (20, 180, 240)]]
    _, dec_flat = decode(render_utils.save_video(flat, tmp_path / "flat.mp4"))
    for a, b in zip(dec_flat, flat):
        assert np.abs(a[8:24, 8:24].astype(int) - b[8:24, 8:24]).max() <= 4
    data = open(path, "rb").read()
    assert data.find(b"moov") < data.find(b"mdat")       # +faststart: index before the media data


def test_save_video_odd_size_gray_and_empty(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (33, 47, 3), dtype=np.uint8)
    frames = [np.roll(base, k, axis=1) for k in range(5)]
    path = render_utils.save_video(frames, tmp_path / "odd.mp4")
    codec, line, size = probe(path)
    assert codec == "h264" and "yuv420p" in line and size == (48, 34)
    meta, dec = decode(path)
    assert len(dec) == 5 and dec[0].shape == (34, 48, 3)
    # grey float frames are accepted too
    path2 = render_utils.save_video([np.full((16, 16), 0.5, np.float32)] * 3, tmp_path / "g.mp4")
    _, dec2 = decode(path2)
    assert len(dec2) == 3 and abs(dec2[0].mean() - 128) < 3
    with pytest.raises(ValueError, match="no frames"):
        render_utils.save_video([], tmp_path / "empty.mp4")
    with pytest.raises(ValueError):
        render_utils.save_video([base, base[:32]], tmp_path / "mixed.mp4")
    assert not (tmp_path / "mixed.mp4").exists()


def test_uint8_frames_equal_the_reference_numpy_conversion():
    # frames are converted on the render device; the bytes must equal numpy's clip * 255 + truncation
    from trellis.utils.render_utils import _to_uint8_image

    x = torch.randn(3, 40, 50, generator=torch.Generator().manual_seed(0)) * 0.7 + 0.5
    x[0, 0, :6] = torch.tensor([0.0, 1.0, 1 / 255, 254.9999 / 255, 0.5, -0.0])
    ref = (np.clip(x.numpy().transpose(1, 2, 0), 0.0, 1.0) * 255).astype(np.uint8)
    got = _to_uint8_image(x)
    assert got.dtype == np.uint8 and got.shape == (40, 50, 3) and got.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(got, ref)


def test_save_video_encodes_an_iterator_as_it_yields(tmp_path):
    asked, reported = [], []

    def frames():
        for i in range(4):
            asked.append(i)
            yield np.full((16, 16, 3), 60 * i, np.uint8)
    path = render_utils.save_video(frames(), tmp_path / "streamed.mp4", count=4,
                                   progress=lambda done, total: reported.append((done, total, len(asked))))
    # each frame went to the encoder before the next one was made, and the progress knew the count
    assert reported == [(1, 4, 1), (2, 4, 2), (3, 4, 3), (4, 4, 4)]
    _, decoded = decode(path)
    assert len(decoded) == 4 and decoded[3].mean() > decoded[1].mean()
