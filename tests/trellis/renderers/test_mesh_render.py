"""Tests of the pure-PyTorch triangle rasteriser (trellis/renderers/mesh_render.py)."""
import math

import numpy as np
import pytest
import torch

from trellis.renderers.cameras import intrinsics_from_fov, orbit_cameras
from trellis.renderers.mesh_render import (bary_derivatives, interpolate, rasterize,
                                           render_mesh)
from trellis.core.callbacks import Cancelled

from tests.helpers.meshes import to_clip, uv_sphere


# ----------------------------------------------------------------------------- helpers

def _fixed(clip, height, width):
    """Reference snapping, written independently: 1/256-pixel grid, row 0 = NDC y -1."""
    c = clip.double().numpy()
    x = (c[:, 0] / c[:, 3] + 1) * (width * 0.5)
    y = (c[:, 1] / c[:, 3] + 1) * (height * 0.5)
    return np.round(np.stack([x, y], -1) * 256).astype(np.int64)


def _perturbed_sign(e, dx, dy):
    """Sign of the edge function at the sample point moved by (-eps, +eps^2)."""
    return np.where(e != 0, np.sign(e), np.where(dy != 0, np.sign(dy), np.sign(dx)))


def _brute_force(cam_verts, clip, faces, height, width, fx, fy, cx, cy):
    """Per-pixel loop over all triangles: exact fill rule, ray/triangle intersection in 3-D."""
    fixed = _fixed(clip, height, width)
    verts = cam_verts.double().numpy()
    faces = faces.numpy()
    tri_fixed = fixed[faces]  # [T,3,2]
    area = ((tri_fixed[:, 1, 0] - tri_fixed[:, 0, 0]) * (tri_fixed[:, 2, 1] - tri_fixed[:, 0, 1])
            - (tri_fixed[:, 1, 1] - tri_fixed[:, 0, 1]) * (tri_fixed[:, 2, 0] - tri_fixed[:, 0, 0]))
    out = []
    for i in range(height):
        for j in range(width):
            p = np.array([256 * j + 128, 256 * i + 128])
            cands = []
            for t in range(faces.shape[0]):
                if area[t] == 0:
                    continue
                ok = True
                for k in range(3):
                    a, b = tri_fixed[t, (k + 1) % 3], tri_fixed[t, (k + 2) % 3]
                    dx, dy = b[0] - a[0], b[1] - a[1]
                    e = dx * (p[1] - a[1]) - dy * (p[0] - a[0])
                    if _perturbed_sign(e, dx, dy) != np.sign(area[t]):
                        ok = False
                        break
                if not ok:
                    continue
                # Moller-Trumbore from the camera centre along the pixel's ray.
                d = np.array([((j + 0.5) / width - cx) / fx, ((i + 0.5) / height - cy) / fy, 1.0])
                v0, v1, v2 = verts[faces[t]]
                e1, e2 = v1 - v0, v2 - v0
                h = np.cross(d, e2)
                det = e1 @ h
                s = -v0
                u = (s @ h) / det
                q = np.cross(s, e1)
                v = (d @ q) / det
                tt = (e2 @ q) / det
                cands.append((tt * d[2], t, np.array([1 - u - v, u, v])))
            out.append(cands)
    return out


def _cube(half=0.4):
    corners = [[x, y, z] for x in (-half, half) for y in (-half, half) for z in (-half, half)]
    v = torch.tensor(corners, dtype=torch.float32)
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    faces = []
    for a, b, c, d in quads:
        faces += [(a, b, c), (a, c, d)]
    faces = torch.tensor(faces, dtype=torch.int64)
    # make every face point outwards
    n = torch.cross(v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]], dim=-1)
    cen = v[faces].mean(1)
    flip = (n * cen).sum(-1) < 0
    faces[flip] = faces[flip][:, [0, 2, 1]]
    return v, faces


def _camera_rays(extrinsics, intrinsics, height, width):
    """World-space eye [3] and unnormalised ray directions [H,W,3] through pixel centres."""
    rot, t = extrinsics[:3, :3].double(), extrinsics[:3, 3].double()
    eye = -rot.T @ t
    k = intrinsics.double()
    jj, ii = torch.meshgrid(torch.arange(width, dtype=torch.float64),
                            torch.arange(height, dtype=torch.float64), indexing="xy")
    dc = torch.stack([((jj + 0.5) / width - k[0, 2]) / k[0, 0],
                      ((ii + 0.5) / height - k[1, 2]) / k[1, 1], torch.ones_like(jj)], -1)
    return eye, dc @ rot  # rot.T @ d for every pixel


# ----------------------------------------------------------------------------- tests

@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_matches_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    height, width, n_tri = 20, 20, 30
    fov = math.radians(60)
    intr = intrinsics_from_fov(fov)
    ext = torch.eye(4)
    z = 1.5 + 2.5 * torch.rand(n_tri, 1, generator=g)
    centre_xy = (torch.rand(n_tri, 2, generator=g) * 2.6 - 1.3) * z * math.tan(fov / 2)
    centres = torch.cat([centre_xy, z], -1)
    verts = (centres[:, None, :] + 0.6 * torch.randn(n_tri, 3, 3, generator=g)).reshape(-1, 3)
    verts[:, 2] = verts[:, 2].clamp(min=0.5)
    faces = torch.arange(3 * n_tri).reshape(n_tri, 3)
    clip = to_clip(verts, ext, intr)
    face_id, bary, depth = rasterize(clip, faces, height, width, chunk_budget=64)
    ref = _brute_force(verts, clip, faces, height, width, intr[0, 0].item(), intr[1, 1].item(),
                       intr[0, 2].item(), intr[1, 2].item())
    n_covered = 0
    for p, cands in enumerate(ref):
        i, j = divmod(p, width)
        got = int(face_id[i, j])
        if not cands:
            assert got == 0, (i, j)
            assert float(depth[i, j]) == 0 and bool((bary[i, j] == 0).all())
            continue
        n_covered += 1
        best = min(c[0] for c in cands)
        # float32 depth key: exact ties in the key go to the lower face id, near ties either way
        allowed = {c[1] for c in cands if c[0] <= best * (1 + 1e-5)}
        assert got - 1 in allowed, (i, j, got, allowed)
        c = next(c for c in cands if c[1] == got - 1)
        assert abs(float(depth[i, j]) - c[0]) <= 1e-5 * max(1.0, c[0])
        np.testing.assert_allclose(bary[i, j].double().numpy(), c[2], atol=1e-5)
    assert n_covered > 50  # the scene actually covers something
    # chunking does not change anything
    face_id2, bary2, depth2 = rasterize(clip, faces, height, width)
    assert torch.equal(face_id, face_id2) and torch.equal(bary, bary2)
    assert torch.equal(depth, depth2)


@pytest.mark.parametrize("seed", [0, 1])
def test_raster_keys_hold_the_face_rasterize_gives(seed):
    """``raster_keys`` (the visibility counts read faces from it): each covered pixel's key holds, in its low 32 bits,
    the 0-based face ``rasterize`` puts there; an empty pixel's key is EMPTY_KEY."""
    from trellis.renderers.mesh_render import EMPTY_KEY, raster_keys
    g = torch.Generator().manual_seed(seed)
    n_tri = 40
    intr = intrinsics_from_fov(math.radians(60))
    verts = (torch.rand(n_tri, 1, 3, generator=g) * torch.tensor([2.0, 2.0, 2.0]) + torch.tensor([-1.0, -1.0, 2.0])
             + 0.5 * torch.randn(n_tri, 3, 3, generator=g)).reshape(-1, 3)
    verts[:, 2] = verts[:, 2].clamp(min=0.5)
    faces = torch.arange(3 * n_tri).reshape(n_tri, 3)
    clip = to_clip(verts, torch.eye(4), intr)
    face_id, _, _ = rasterize(clip, faces, 24, 32)
    keys = raster_keys(clip, faces, 24, 32)
    assert keys.shape == (24 * 32,) and keys.dtype == torch.int64
    covered = keys != EMPTY_KEY
    assert covered.sum() > 100 and torch.equal(covered.reshape(24, 32), face_id > 0)
    assert torch.equal((keys[covered] & 0xFFFFFFFF) + 1, face_id.reshape(-1)[covered])
    assert int((EMPTY_KEY & 0xFFFFFFFF)) > 2 ** 31           # the visibility's spare slot lies past every face


def test_equal_depth_tie_goes_to_lower_face_id():
    clip = torch.tensor([[-1, -1, 0, 1], [3, -1, 0, 1], [-1, 3, 0, 1]], dtype=torch.float32)
    faces = torch.tensor([[0, 1, 2], [0, 2, 1], [0, 1, 2]])
    face_id, _, depth = rasterize(clip, faces, 8, 8)
    assert bool((face_id == 1).all()) and torch.allclose(depth, torch.ones_like(depth))


def test_quad_split_full_screen_no_crack_no_overlap():
    # Two triangles covering the whole screen; the shared diagonal passes through pixel centres.
    g = torch.Generator().manual_seed(0)
    for ndc_y_up in (False, True):
        for faces in ([[0, 1, 2], [0, 2, 3]], [[0, 2, 1], [0, 3, 2]], [[1, 2, 0], [3, 2, 0]]):
            faces = torch.tensor(faces)
            xy = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
            w = 0.5 + torch.rand(4, 1, generator=g)
            clip = torch.cat([xy * w, torch.zeros(4, 1), w], -1)
            total = torch.zeros(16, 16, dtype=torch.int64)
            for f in range(2):
                fid, _, _ = rasterize(clip, faces[f:f + 1], 16, 16, ndc_y_up=ndc_y_up)
                total += (fid > 0).long()
            assert bool((total == 1).all())
            fid, _, _ = rasterize(clip, faces, 16, 16, ndc_y_up=ndc_y_up)
            assert bool((fid > 0).all())


def test_grid_partition_vertices_and_edges_on_pixel_centres():
    # Vertices on pixel centres, random diagonals and windings, random w: every pixel centre of
    # the screen is owned by exactly one triangle (edges and vertices hit centres everywhere).
    g = torch.Generator().manual_seed(1)
    size = 16
    ks = torch.arange(-1, 10, dtype=torch.float32)
    pix = 0.5 + 2 * ks  # -1.5 .. 18.5 pixels
    gx, gy = torch.meshgrid(pix, pix, indexing="xy")
    ndc = torch.stack([gx, gy], -1).reshape(-1, 2) / size * 2 - 1
    w = 0.5 + torch.rand(ndc.shape[0], 1, generator=g)
    clip = torch.cat([ndc * w, torch.zeros_like(w), w], -1)
    n = pix.numel()
    faces = []
    for r in range(n - 1):
        for c in range(n - 1):
            a, b, d, e = r * n + c, r * n + c + 1, (r + 1) * n + c, (r + 1) * n + c + 1
            if torch.rand(1, generator=g) < 0.5:
                tris = [(a, b, e), (a, e, d)]
            else:
                tris = [(a, b, d), (b, e, d)]
            for t in tris:
                faces.append(t if torch.rand(1, generator=g) < 0.5 else t[::-1])
    faces = torch.tensor(faces)
    total = torch.zeros(size, size, dtype=torch.int64)
    for f in range(faces.shape[0]):
        fid, _, _ = rasterize(clip, faces[f:f + 1], size, size)
        total += (fid > 0).long()
    assert bool((total == 1).all())


def test_closed_cube_each_pixel_exactly_one_front_and_one_back_face():
    verts, faces = _cube()
    ext, intr = orbit_cameras([0.7], [0.4])
    ext, intr = ext[0], intr[0]
    clip = to_clip(verts, ext, intr)
    size = 64
    eye = -ext[:3, :3].T @ ext[:3, 3]
    tri = verts[faces]
    n = torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
    front = (n * (eye - verts[faces].mean(1))).sum(-1) > 0
    cnt_front = torch.zeros(size, size, dtype=torch.int64)
    cnt_back = torch.zeros(size, size, dtype=torch.int64)
    for f in range(faces.shape[0]):
        fid, _, _ = rasterize(clip, faces[f:f + 1], size, size)
        (cnt_front if front[f] else cnt_back).add_((fid > 0).long())
    assert cnt_front.max() == 1 and cnt_back.max() == 1
    assert torch.equal(cnt_front, cnt_back)
    face_id, _, _ = rasterize(clip, faces, size, size)
    assert torch.equal((face_id > 0).long(), cnt_front)
    assert cnt_front.sum() > 300
    assert bool(front[face_id[face_id > 0] - 1].all())  # the depth test keeps the near side


def test_perspective_correct_world_position():
    verts, faces = uv_sphere(0.45, 12, 24)
    verts = verts * torch.tensor([1.0, 0.8, 1.1])
    size = 48
    ext, intr = orbit_cameras([0.3], [0.5])
    ext, intr = ext[0], intr[0]
    clip = to_clip(verts, ext, intr)
    face_id, bary, depth = rasterize(clip, faces, size, size)
    pos = interpolate(verts, face_id, bary, faces=faces)
    pos_fc = interpolate(verts[faces], face_id, bary)
    assert torch.allclose(pos, pos_fc, atol=1e-6)
    eye, dirs = _camera_rays(ext, intr, size, size)
    cov = face_id > 0
    f = face_id[cov] - 1
    tri = verts.double()[faces[f]]
    nrm = torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
    d = dirs[cov]
    t = ((tri[:, 0] - eye) * nrm).sum(-1) / (d * nrm).sum(-1)
    hit = eye + t[:, None] * d
    assert (pos[cov].double() - hit).abs().max() < 1e-4
    # view depth = camera z of the hit point
    cam_z = hit @ ext[2, :3].double() + ext[2, 3].double()
    assert (depth[cov].double() - cam_z).abs().max() < 1e-4
    assert bool((depth[~cov] == 0).all()) and bool((pos[~cov] == 0).all())


def test_bary_derivatives_match_finite_differences():
    verts, faces = _cube(0.45)
    ext, intr = orbit_cameras([0.4], [0.3], radius=1.6)
    size = 64
    clip = to_clip(verts, ext[0], intr[0])
    face_id, bary, _ = rasterize(clip, faces, size, size)
    db = bary_derivatives(clip, faces, face_id)
    uv = verts[:, :2] * 3
    _, duv = interpolate(uv, face_id, bary, faces=faces, bary_db=db)
    # central differences where the 3x3 neighbourhood lies on one face
    f = face_id
    c = f[1:-1, 1:-1]
    same = ((c > 0) & (c == f[1:-1, 2:]) & (c == f[1:-1, :-2]) & (c == f[2:, 1:-1])
            & (c == f[:-2, 1:-1]))
    b = bary.double()
    fdx = (b[1:-1, 2:] - b[1:-1, :-2]) / 2
    fdy = (b[2:, 1:-1] - b[:-2, 1:-1]) / 2
    inner = db[1:-1, 1:-1].double()
    assert same.sum() > 500
    # central differences of a rational function: second-order error, a few % under perspective
    for ana, fd in ((inner[..., 0][same], fdx[same]), (inner[..., 1][same], fdy[same])):
        assert bool(((ana - fd).abs() <= 1e-4 + 0.03 * fd.abs()).all())
    # without perspective (equal w) barycentrics are affine: derivatives are exact differences
    clip_affine = clip / clip[:, 3:]
    face_id, bary, _ = rasterize(clip_affine, faces, size, size)
    db = bary_derivatives(clip_affine, faces, face_id)
    b = bary.double()
    inner = db[1:-1, 1:-1].double()
    f = face_id
    same = ((f[1:-1, 1:-1] > 0) & (f[1:-1, 1:-1] == f[1:-1, 2:]) & (f[1:-1, 1:-1] == f[2:, 1:-1]))
    assert (inner[..., 0][same] - (b[1:-1, 2:] - b[1:-1, 1:-1])[same]).abs().max() < 1e-5
    assert (inner[..., 1][same] - (b[2:, 1:-1] - b[1:-1, 1:-1])[same]).abs().max() < 1e-5
    assert duv.shape == (size, size, 2, 2)


def test_opengl_path_matches_opencv_path():
    verts, faces = uv_sphere(0.5, 10, 20)
    ext, intr = orbit_cameras([1.1], [-0.3])
    ext, intr = ext[0], intr[0]
    size = 40
    clip_cv = to_clip(verts, ext, intr, near=1.0, far=3.0)
    view_gl = ext.clone()
    view_gl[1:3] *= -1
    n, f = 1.0, 3.0
    fx, fy, cx, cy = intr[0, 0], intr[1, 1], intr[0, 2], intr[1, 2]
    proj_gl = torch.tensor([[2 * fx, 0, -2 * cx + 1, 0], [0, 2 * fy, 2 * cy - 1, 0],
                            [0, 0, (n + f) / (n - f), 2 * n * f / (n - f)], [0, 0, -1, 0]])
    vh = torch.cat([verts, torch.ones_like(verts[:, :1])], -1)
    clip_gl = vh @ (proj_gl @ view_gl).T
    a = rasterize(clip_cv, faces, size, size)
    b = rasterize(clip_gl, faces, size, size, ndc_y_up=True)
    agree = a[0] == b[0]
    assert agree.float().mean() > 0.995
    assert torch.allclose(a[1][agree], b[1][agree], atol=1e-4)
    assert torch.allclose(a[2][agree], b[2][agree], atol=1e-4)


def test_normal_render_faces_camera_and_ssaa_mask_levels():
    verts, faces = uv_sphere(0.5, 16, 32)
    ext, intr = orbit_cameras([0.5], [0.25])
    size = 48
    out = render_mesh((verts, faces), ext[0], intr[0], size)
    fid = out["face_id"]
    cov = fid > 0
    assert out["mask"].shape == (1, size, size) and out["normal"].shape == (3, size, size)
    assert torch.equal(out["mask"][0] > 0, cov)
    nrm = out["normal"].permute(1, 2, 0)[cov] * 2 - 1
    assert torch.allclose(nrm.norm(dim=-1), torch.ones(nrm.shape[0]), atol=1e-5)
    eye = -ext[0, :3, :3].T @ ext[0, :3, 3]
    cen = verts[faces].mean(1)[fid[cov] - 1]
    assert bool(((nrm * (eye - cen)).sum(-1) > 0).all())
    assert bool((out["normal"][:, ~cov] == 0).all())
    # sphere of radius .5 at distance 2 with fov 40: projected radius in pixels
    r_pix = size * 0.5 / math.tan(math.radians(20)) * math.tan(math.asin(0.25))
    assert abs(cov.float().sum().item() - math.pi * r_pix ** 2) < 0.05 * math.pi * r_pix ** 2
    out2 = render_mesh((verts, faces), ext[0], intr[0], size, ssaa=2,
                       return_types=("mask", "depth", "normal"))
    m = out2["mask"]
    levels = torch.tensor([0, 0.25, 0.5, 0.75, 1.0])
    assert bool(((m[..., None] - levels).abs().min(-1).values < 1e-7).all())
    assert bool(((m > 0) & (m < 1)).any())
    d = out2["depth"][m > 0]
    assert bool(((d > 1.4) & (d < 2.0)).all())
    with pytest.raises(ValueError):
        render_mesh((verts, faces), ext[0], intr[0], size, ssaa=2)


def test_render_mesh_extract_result_and_empty_mesh():
    from trellis.representations.mesh.mesh_extract_result import MeshExtractResult

    verts, faces = _cube(0.3)
    mesh = MeshExtractResult(verts, faces)
    ext, intr = orbit_cameras([0.2], [0.3])
    out = render_mesh(mesh, ext, intr, 32, return_types=("mask", "normal", "attr"),
                      attrs=verts + 0.5)
    assert out["mask"].sum() > 50 and out["attr"].shape == (3, 32, 32)
    empty = MeshExtractResult(torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.int64))
    out = render_mesh(empty, ext[0], intr[0], 32)
    assert out["mask"].sum() == 0 and out["normal"].sum() == 0 and out["face_id"].sum() == 0


def test_yaw0_camera_puts_world_up_at_the_top():
    ext, intr = orbit_cameras([0.0], [0.0])
    verts = torch.tensor([[-0.2, 0.0, 0.3], [0.2, 0.0, 0.3], [0.0, 0.0, 0.5]])
    faces = torch.tensor([[0, 1, 2]])
    size = 32
    fid, _, _ = rasterize(to_clip(verts, ext[0], intr[0]), faces, size, size)
    rows = torch.nonzero(fid > 0)[:, 0]
    assert rows.numel() > 0 and bool((rows < size // 2).all())
    # apex (z = 0.5) is above the base (z = 0.3): its rows are the smallest
    cols = torch.nonzero(fid > 0)[:, 1]
    assert cols.min() < size // 2 <= cols.max()


def test_triangles_behind_camera_are_skipped():
    clip = torch.tensor([[-1, -1, 0, 1], [1, -1, 0, 1], [0, 1, 0, -1],
                         [-1, -1, 0, 1], [1, -1, 0, 1], [0, 1, 0, 1]], dtype=torch.float32)
    fid, _, _ = rasterize(clip, torch.tensor([[0, 1, 2], [3, 4, 5]]), 8, 8)
    assert set(fid.unique().tolist()) <= {0, 2} and bool((fid == 2).any())


def test_cancel_raises():
    verts, faces = uv_sphere(0.5, 8, 16)
    ext, intr = orbit_cameras([0.0], [0.0])
    clip = to_clip(verts, ext[0], intr[0])
    with pytest.raises(Cancelled):
        rasterize(clip, faces, 32, 32, cancel=lambda: True)
    calls = []

    def cancel_later():
        calls.append(1)
        return len(calls) >= 3

    with pytest.raises(Cancelled):
        rasterize(clip, faces, 32, 32, cancel=cancel_later, chunk_budget=1)  # many chunks
    assert len(calls) == 3
    with pytest.raises(Cancelled):
        render_mesh((verts, faces), ext[0], intr[0], 32, cancel=lambda: True)


def test_a_failing_fast_kernel_falls_back_to_the_same_result(monkeypatch):
    # A user's Triton may not compile (old GPU, missing toolchain). Simulated here (Triton cannot run on a
    # CPU): the kernel raises, the call is redone by the PyTorch twin with a warning, and stays off after.
    from trellis import fastpaths

    v, f = uv_sphere(0.8, 12, 24)
    ext, intr = orbit_cameras([0.4], [0.3], 2.5, 40.0)
    clip = to_clip(v, ext[0], intr[0])
    ref = rasterize(clip, f, 48, 48)
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        args[4].fill_(0)                 # a half-done launch may leave anything behind
        raise RuntimeError("PTX assembler not found")
    first = fastpaths.KERNELS["mesh_raster"][0]
    kernel_module = fastpaths._import_kernel_module(first.module)
    monkeypatch.setattr(kernel_module, "raster_keys", broken)
    monkeypatch.setattr(fastpaths, "_disabled", {})
    monkeypatch.setattr(fastpaths, "_backend_reason", lambda backend, device: None)
    monkeypatch.setattr(fastpaths, "_override", True)
    with pytest.warns(RuntimeWarning, match="mesh_raster"):
        got = rasterize(clip, f, 48, 48)
    assert calls == [1] and first.key in fastpaths._disabled
    for a, b in zip(ref, got):
        assert torch.equal(a, b)
    got2 = rasterize(clip, f, 48, 48)    # switched off: not tried again, no warning
    assert calls == [1] and all(torch.equal(a, b) for a, b in zip(ref, got2))


def test_fast_path_rules(monkeypatch):
    from trellis import fastpaths
    from trellis.core.callbacks import Cancelled

    assert not fastpaths.usable("mesh_raster", torch.device("cpu"))
    assert "CUDA" in fastpaths.reason_off("mesh_raster", "cpu")
    assert fastpaths.is_fatal(torch.OutOfMemoryError("x")) and fastpaths.is_fatal(Cancelled())
    assert not fastpaths.is_fatal(RuntimeError("compile error"))
    # One switch: the environment variable (read at each call), overridden by set_enabled.
    monkeypatch.setattr(fastpaths, "_override", None)
    monkeypatch.setenv(fastpaths.ENV_VAR, "off")
    assert not fastpaths.enabled() and "switched off" in fastpaths.reason_off("gaussian_composite", "cpu")
    monkeypatch.setenv(fastpaths.ENV_VAR, "on")
    assert fastpaths.enabled()
    fastpaths.set_enabled(False)
    try:
        assert not fastpaths.enabled()
        # Off: the twin runs even where the kernel would be usable, and nothing is imported or tried.
        monkeypatch.setattr(fastpaths, "_backend_reason", lambda backend, device: None)
        tried = []
        for k in fastpaths.KERNELS["mesh_raster"]:
            monkeypatch.setattr(fastpaths._import_kernel_module(k.module), k.function, lambda *a, **kw: tried.append(1))
        assert fastpaths.dispatch("mesh_raster", "cpu", lambda *a: "twin", 1) == "twin" and not tried
    finally:
        fastpaths.set_enabled(None)
    # A kernel answering NotImplemented (inputs it does not handle) hands over to the twin and stays on.
    for k in fastpaths.KERNELS["mesh_raster"]:
        monkeypatch.setattr(fastpaths._import_kernel_module(k.module), k.function, lambda *a, **kw: NotImplemented)
    monkeypatch.setattr(fastpaths, "_disabled", {})
    assert fastpaths.dispatch("mesh_raster", "cpu", lambda *a: "twin") == "twin"
    assert not any(k.key in fastpaths._disabled for k in fastpaths.KERNELS["mesh_raster"])
    assert fastpaths.status("cpu")["fast"]
    for name, kernels in fastpaths.KERNELS.items():   # every kernel names a twin that exists, and a function
        for k in kernels:
            mod, fn = k.twin.rsplit(".", 1)
            assert callable(getattr(__import__(mod, fromlist=[fn]), fn))
            assert callable(getattr(fastpaths._import_kernel_module(k.module), k.function))


# ----------------------------------------------------------------------------- the PyTorch twin of the raster kernel

def _reference_keys(coefs, box, count, plane, height, width):
    """Plain per-(triangle, candidate pixel) evaluation of the conventions in mesh_render's docstring:
    the three int64 edge functions A*dj + B*di + E0 must all be > 0, depth = 1 / max(float64 plane, 1e-30)
    rounded to float32, key = (depth bits << 32) | face, nearest key per pixel."""
    coefs, box, count, plane = (x.numpy() for x in (coefs, box, count, plane))
    keys = np.full(height * width, np.iinfo(np.int64).max, dtype=np.int64)
    for t in range(len(count)):
        if count[t] == 0:
            continue
        j0, i0, bw, bh = (int(x) for x in box[t])
        di, dj = np.meshgrid(np.arange(bh, dtype=np.int64), np.arange(bw, dtype=np.int64), indexing="ij")
        inside = np.ones_like(di, dtype=bool)
        for k in range(3):
            a, b, c = (np.int64(x) for x in coefs[t, k])
            inside &= a * dj + b * di + c > 0
        g0, gx, gy = (np.float64(x) for x in plane[t])
        invw = np.maximum(g0 + gx * dj.astype(np.float64) + gy * di.astype(np.float64), 1e-30)
        depth = (1.0 / invw).astype(np.float32)
        key = (depth.view(np.int32).astype(np.int64) << 32) | t
        pix = (i0 + di) * width + (j0 + dj)
        np.minimum.at(keys, pix[inside], key[inside])
    return torch.from_numpy(keys)


def _soup(seed, n, height, width):
    """Random triangles from sub-pixel slivers to several times the screen; a third of them with vertices
    on pixel centres and corners and w = 1 (axis-parallel edges through pixel centres: the fill rule's ties),
    zero-area ones, duplicates (exact depth ties) and both windings. float64 clip coordinates."""
    g = torch.Generator().manual_seed(seed)
    size = torch.tensor([width, height], dtype=torch.float64)
    scale = torch.tensor([0.01, 0.1, 0.5, 3.0], dtype=torch.float64)[torch.randint(0, 4, (n, 1, 1), generator=g)]
    centre = torch.rand(n, 1, 2, generator=g, dtype=torch.float64) * 1.2 - 0.1
    px = (centre + scale * torch.randn(n, 3, 2, generator=g, dtype=torch.float64)) * size
    w = 0.5 + 2 * torch.rand(n, 3, 1, generator=g, dtype=torch.float64)
    grid = torch.arange(n) % 3 == 0
    px[grid] = torch.round(px[grid] * 2) / 2          # pixel corners and centres
    w[grid] = 1.0
    px[1::10, 2] = (px[1::10, 0] + px[1::10, 1]) / 2  # collinear: zero area
    px[2::10, 1] = px[2::10, 0]                       # repeated vertex
    ndc = px / size * 2 - 1
    clip = torch.cat([ndc * w, torch.zeros(n, 3, 1, dtype=torch.float64), w], -1).reshape(-1, 4)
    faces = torch.arange(3 * n).reshape(n, 3)
    faces = torch.cat([faces, faces[-5:], faces[-5:].flip(1)])   # duplicates: depth ties
    return clip, faces


@pytest.mark.parametrize("seed,height,width", [(0, 17, 23), (1, 24, 24), (2, 31, 9), (3, 1, 40)])
def test_raster_keys_twin_matches_per_candidate_reference(seed, height, width):
    from trellis.renderers.mesh_render import _INT64_MAX, triangle_setup_torch, raster_keys_torch

    clip, faces = _soup(seed, 60, height, width)
    coefs, box, count, plane = triangle_setup_torch(clip, faces, height, width, False)
    assert int((count > 0).sum()) >= 10 and int(count.max()) >= height * width // 2  # big ones included
    ref = _reference_keys(coefs, box, count, plane, height, width)
    assert int((ref != _INT64_MAX).sum()) > height * width // 3
    for budget in (None, 1, 2, 5, 37, 10 ** 6):     # one fragment per chunk up to one chunk for all
        keys = torch.full((height * width,), _INT64_MAX, dtype=torch.int64)
        raster_keys_torch(coefs, box, count, plane, keys, width, budget=budget)
        assert torch.equal(keys, ref), budget
    # merging into keys that already hold some values (the scatter-min includes them)
    keys = torch.full((height * width,), _INT64_MAX, dtype=torch.int64)
    keys[::3] = 5
    raster_keys_torch(coefs, box, count, plane, keys, width, budget=7)
    expect = ref.clone()
    expect[::3] = torch.minimum(expect[::3], torch.tensor(5))
    assert torch.equal(keys, expect)


def test_raster_keys_twin_nothing_to_draw_and_cancel():
    from trellis.renderers.mesh_render import _INT64_MAX, triangle_setup_torch, raster_keys_torch

    clip, faces = _soup(5, 10, 16, 16)
    coefs, box, count, plane = triangle_setup_torch(clip, faces, 16, 16, False)
    keys = torch.full((256,), _INT64_MAX, dtype=torch.int64)
    raster_keys_torch(coefs, box, torch.zeros_like(count), plane, keys, 16)  # every triangle skipped
    raster_keys_torch(coefs[:0], box[:0], count[:0], plane[:0], keys, 16)   # no triangles
    assert bool((keys == _INT64_MAX).all())
    with pytest.raises(Cancelled):
        raster_keys_torch(coefs, box, count, plane, keys, 16, cancel=lambda: True)
