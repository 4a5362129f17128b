"""Exact tile-based splatting of 3-D Gaussians in pure PyTorch (CPU or any torch device).

Written from the published equations (EWA splatting / 3D Gaussian Splatting / Mip-Splatting papers):

* World -> camera with the OpenCV extrinsics (x right, y down, z forward); perspective projection with
  the normalised intrinsics scaled to pixels: ``u = fx*W * x/z + cx*W``, ``v = fy*H * y/z + cy*H``.
* Pixel convention: pixel (i, j) (row i, column j, row 0 = top) covers [j, j+1) x [i, i+1) in pixel
  units and is sampled at its centre (j + 0.5, i + 0.5). With cx = cy = 0.5 the principal point lies
  on the pixel corner in the middle of an even-sized image.
* 3-D covariance ``S = R diag(s)^2 R^T`` (R from the (w, x, y, z) quaternion); screen covariance
  ``S' = J W S W^T J^T`` with W the extrinsic rotation and J the Jacobian of the projection at the
  centre (no clamping of x/z, y/z).
* Mip-Splatting 2-D Mip filter: ``S'' = S' + kernel_size * I`` (pixel^2) and the opacity is scaled by
  ``sqrt(det S' / det S'')`` (the normalisation of the published 2-D Mip filter, which keeps the
  integral of the filtered splat equal to that of the unfiltered one). ``opacity_compensation=False``
  gives plain 3DGS-style dilation instead.
* Colour of SH degree 0: ``max(SH_C0 * f_dc + 0.5, 0)``.
* Per pixel, Gaussians are composited front to back in order of camera z:
  ``alpha = min(0.99, o * exp(-0.5 d^T S''^-1 d))``; contributions with alpha < 1/255 are skipped;
  a Gaussian whose contribution would bring the transmittance below 1e-4 is not composited and ends
  the pixel. ``color = sum(w_i c_i) + T * bg``, ``alpha = 1 - T``, ``depth = sum(w_i z_i)`` with
  ``w_i = alpha_i * T_i`` (alpha-weighted, not normalised: divide by alpha for the mean depth).
* Culling: centres with z <= near are dropped. ``far`` only defines the projection's depth range in
  the reference and does not cull by default: at the render_video settings (radius 2, far 1.6) the
  object centre itself lies beyond ``far``. Pass ``cull_far=True`` to drop centres with z >= far.
* Tiles: each Gaussian is binned into the tiles overlapped by the bounding box of the ellipse on
  which its alpha falls to 1/255 (slightly enlarged), so the tiling never drops a contribution the
  1/255 test would keep: the result equals an untiled per-pixel evaluation up to float rounding.
* Evaluation: (tile, depth)-sorted lists are walked in chunks of [tiles, 256 pixels, K entries]
  (bounded by ``work_budget``); the transmittance and a per-pixel "finished" flag carry between
  chunks, and tiles whose pixels are all finished drop out. The exponent is one float64 matmul of
  per-pixel quadratic features with per-splat coefficients (float32 direct form on devices without
  float64); everything else is float32.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch

from ..representations.gaussian import SH_C0, quaternion_to_matrix
from ..utils.cancel import check
from . import triton_support

ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.99
T_MIN = 1e-4
# Devices without float64: there the exponent is evaluated directly in float32 instead of by a
# float64 quadratic-form matmul (slower, same result up to rounding).
_NO_FLOAT64_DEVICES = {"mps"}
# On CUDA with float32 inputs and Triton importable, the per-pixel compositing runs in the fused Triton
# kernel of `gaussian_render_triton` (same equations; projection and binning stay here). Set to False
# to force the pure-PyTorch path (the reference) everywhere.
USE_TRITON = True


def _project(xyz, scales, rots, opacity, extrinsics, intrinsics, width, height, near, far, cull_far,
             kernel_size, opacity_compensation):
    """Per-Gaussian screen-space quantities. Returns a dict of tensors for the kept Gaussians."""
    rot_w = extrinsics[:3, :3]
    p = xyz @ rot_w.T + extrinsics[:3, 3]
    x, y, z = p.unbind(-1)
    keep = z > near
    if cull_far:
        keep &= z < far
    fxp, fyp = intrinsics[0, 0] * width, intrinsics[1, 1] * height
    cxp, cyp = intrinsics[0, 2] * width, intrinsics[1, 2] * height
    zs = torch.where(keep, z, torch.ones_like(z))          # avoid dividing by ~0 for culled ones
    u = fxp * x / zs + cxp
    v = fyp * y / zs + cyp
    # Jacobian of (x, y, z) -> (u, v) at the centre, composed with the world->camera rotation.
    zero = torch.zeros_like(zs)
    jac = torch.stack([
        torch.stack([fxp / zs, zero, -fxp * x / (zs * zs)], -1),
        torch.stack([zero, fyp / zs, -fyp * y / (zs * zs)], -1),
    ], -2)                                                  # [N, 2, 3]
    # Screen covariance = A A^T with A = J W R diag(s): symmetric positive semi-definite by construction.
    a_mat = jac @ rot_w @ quaternion_to_matrix(rots) * scales[:, None, :]
    cov = a_mat @ a_mat.transpose(-1, -2)
    c00, c01, c11 = cov[:, 0, 0], cov[:, 0, 1], cov[:, 1, 1]
    det0 = (c00 * c11 - c01 * c01).clamp(min=0)
    c00f, c11f = c00 + kernel_size, c11 + kernel_size
    det = c00f * c11f - c01 * c01
    op = opacity
    if opacity_compensation:
        op = op * torch.sqrt((det0 / det).clamp(min=0))
    keep &= (det > 0) & (op >= ALPHA_MIN) & torch.isfinite(u) & torch.isfinite(v)
    det = torch.where(keep, det, torch.ones_like(det))
    conic = torch.stack([c11f / det, -c01 / det, c00f / det], -1)
    # Alpha >= 1/255 requires d^T S''^-1 d <= 2 ln(255 o); the bounding box of that ellipse has
    # half-widths sqrt(r2 * S''_00), sqrt(r2 * S''_11). Enlarged a little for rounding safety.
    r2 = 2 * torch.log((op * 255.0).clamp(min=1.0))
    half_x = torch.sqrt(r2 * c00f) * 1.001 + 0.01
    half_y = torch.sqrt(r2 * c11f) * 1.001 + 0.01
    idx = keep.nonzero().squeeze(-1)
    return dict(idx=idx, u=u[idx], v=v[idx], z=z[idx], conic=conic[idx], opacity=op[idx],
                half_x=half_x[idx], half_y=half_y[idx])


def _bin(proj, width, height, tile_size):
    """Sorted (tile, depth) list: per-tile start/count and the Gaussian order within tiles."""
    ntx, nty = -(-width // tile_size), -(-height // tile_size)
    u, v, hx, hy = proj["u"], proj["v"], proj["half_x"], proj["half_y"]

    def tile_range(lo, hi, n):
        lo = torch.floor((lo / tile_size).clamp(-1, n + 1)).long().clamp(0, n)
        hi = (torch.floor((hi / tile_size).clamp(-1, n + 1)).long() + 1).clamp(0, n)
        return lo, hi

    tx0, tx1 = tile_range(u - hx, u + hx, ntx)
    ty0, ty1 = tile_range(v - hy, v + hy, nty)
    wx, wy = (tx1 - tx0).clamp(min=0), (ty1 - ty0).clamp(min=0)
    counts = wx * wy
    device = u.device
    n = u.shape[0]
    order = torch.argsort(proj["z"], stable=True)           # front to back
    rank = torch.empty_like(order)
    rank[order] = torch.arange(n, device=device)
    total = int(counts.sum())
    gid = torch.repeat_interleave(torch.arange(n, device=device), counts, output_size=total)
    first = torch.cumsum(counts, 0) - counts
    local = torch.arange(total, device=device) - first[gid]
    wxg = wx[gid].clamp(min=1)
    tile = (ty0[gid] + local // wxg) * ntx + tx0[gid] + local % wxg
    key = tile * max(n, 1) + rank[gid]
    key, _ = torch.sort(key)
    sorted_g = order[key % max(n, 1)]
    tile_count = torch.bincount(key // max(n, 1), minlength=ntx * nty)
    tile_start = torch.cumsum(tile_count, 0) - tile_count
    return ntx, nty, sorted_g, tile_start, tile_count


def render_gaussians(gaussian, extrinsics: torch.Tensor, intrinsics: torch.Tensor, resolution,
                     near: float = 0.8, far: float = 1.6, bg_color: Sequence[float] = (0.0, 0.0, 0.0),
                     kernel_size: float = 0.1, tile_size: int = 16,
                     cancel: Optional[Callable[[], bool]] = None, *, opacity_compensation: bool = True,
                     cull_far: bool = False, max_chunk: int = 256,
                     work_budget: int = 1 << 21) -> dict:
    """Render a `Gaussian` with OpenCV extrinsics [4,4] and normalised intrinsics [3,3].

    resolution: int (square) or (height, width). Returns ``color`` [3,H,W] (not clipped), ``alpha``
    [1,H,W] and ``depth`` [1,H,W] (sum of alpha-weighted camera z). ``max_chunk`` bounds the number of
    list entries per tile evaluated at once, ``work_budget`` the elements of one [tiles, pixels, chunk]
    tensor. ``cancel()`` is polled between chunks and raises `Cancelled` when it returns True.
    """
    if isinstance(resolution, int):
        height = width = resolution
    else:
        height, width = int(resolution[0]), int(resolution[1])
    xyz = gaussian.get_xyz
    device, dtype = xyz.device, xyz.dtype
    extrinsics = torch.as_tensor(extrinsics, dtype=dtype, device=device).reshape(4, 4)
    intrinsics = torch.as_tensor(intrinsics, dtype=dtype, device=device).reshape(3, 3)
    bg = torch.as_tensor(bg_color, dtype=dtype, device=device).reshape(3)
    check(cancel)

    with torch.no_grad():
        proj = _project(xyz, gaussian.get_scaling, gaussian.get_rotation, gaussian.get_opacity.reshape(-1),
                        extrinsics, intrinsics, width, height, near, far, cull_far, kernel_size,
                        opacity_compensation)
        colors = (SH_C0 * gaussian.get_features.reshape(-1, 3)[proj["idx"]] + 0.5).clamp(min=0)
        ntx, nty, sorted_g, tile_start, tile_count = _bin(proj, width, height, tile_size)
        if USE_TRITON and triton_support.usable("gaussian_composite", device):
            from . import gaussian_render_triton as grt
            if grt.supported(device, dtype, tile_size):
                check(cancel)
                try:
                    return grt.composite(proj, colors, ntx, nty, sorted_g, tile_start, tile_count, width,
                                         height, tile_size, bg)
                except Exception as err:
                    if triton_support.is_fatal(err):
                        raise
                    triton_support.disable("gaussian_composite", err)   # redone below by the PyTorch path

        ts = tile_size
        npix = ts * ts
        ntiles = ntx * nty
        trans = torch.ones(ntiles, npix, dtype=dtype, device=device)
        acc_c = torch.zeros(ntiles, npix, 3, dtype=dtype, device=device)
        acc_d = torch.zeros(ntiles, npix, dtype=dtype, device=device)
        done = torch.zeros(ntiles, npix, dtype=torch.bool, device=device)
        # Pixel-centre offsets inside a tile (row-major), relative to the tile centre.
        iy, ix = torch.meshgrid(torch.arange(ts, device=device), torch.arange(ts, device=device), indexing="ij")
        off_x = ix.reshape(-1).to(dtype) + 0.5 - ts / 2
        off_y = iy.reshape(-1).to(dtype) + 0.5 - ts / 2
        g_u, g_v, g_z, g_conic = proj["u"], proj["v"], proj["z"], proj["conic"]
        g_logop = torch.log(proj["opacity"])
        wide = torch.float32 if device.type in _NO_FLOAT64_DEVICES else torch.float64
        if wide == torch.float64:
            # Quadratic-form features of each pixel: power = feat @ coefficients (one matmul per chunk).
            ox, oy = off_x.to(wide), off_y.to(wide)
            feat = torch.stack([ox * ox, ox * oy, oy * oy, ox, oy, torch.ones_like(ox)], -1)  # [P, 6]

        active = (tile_count > 0).nonzero().squeeze(-1)
        pos = 0
        while active.numel() > 0:
            n_act = active.numel()
            chunk = max(8, min(max_chunk, work_budget // (npix * n_act)))
            tiles_per_batch = max(1, work_budget // (npix * chunk))
            k = torch.arange(chunk, device=device)
            for b0 in range(0, n_act, tiles_per_batch):
                check(cancel)
                tl = active[b0:b0 + tiles_per_batch]
                slot = pos + k[None, :]                                   # [B, K]
                valid = slot < tile_count[tl, None]
                entry = (tile_start[tl, None] + slot).clamp(max=max(sorted_g.numel() - 1, 0))
                g = sorted_g[entry]                                       # [B, K]
                # log(alpha) before the 0.99 clamp = log(opacity) - 0.5 d^T conic d
                tcx = (tl % ntx * ts + ts / 2).to(wide)[:, None]
                tcy = (tl // ntx * ts + ts / 2).to(wide)[:, None]
                mx, my = g_u[g].to(wide) - tcx, g_v[g].to(wide) - tcy    # centres, tile-centred [B, K]
                cn = g_conic[g].to(wide)
                ca, cb, cc = cn[..., 0], cn[..., 1], cn[..., 2]
                logop = torch.where(valid, g_logop[g].to(wide), torch.full_like(mx, -1e4))
                if wide == torch.float64:
                    coef = torch.stack([-0.5 * ca, -cb, -0.5 * cc, ca * mx + cb * my, cb * mx + cc * my,
                                        logop - 0.5 * (ca * mx * mx + 2 * cb * mx * my + cc * my * my)], 1)
                    power = torch.matmul(feat, coef).to(dtype)            # [B, P, K]
                else:
                    dx = off_x[None, :, None] - mx[:, None, :]
                    dy = off_y[None, :, None] - my[:, None, :]
                    power = (ca[:, None, :] * dx * dx + cc[:, None, :] * dy * dy) * -0.5 \
                        - cb[:, None, :] * dx * dy + logop[:, None, :]
                    del dx, dy
                # alpha >= 1/255 needs power >= log(1/255) > -10: clamping there changes no kept value
                # and keeps exp() off its slow underflow path.
                alpha = power.clamp_(min=-10.0).exp_().clamp_(max=ALPHA_MAX)
                alpha.masked_fill_(alpha < ALPHA_MIN, 0.0)
                t0 = trans[tl]                                            # [B, P]
                t_incl = torch.cumprod(1 - alpha, dim=-1).mul_(t0[:, :, None])
                take = t_incl >= T_MIN                                    # a prefix along K
                take &= ~done[tl][:, :, None]
                w = alpha.mul_(torch.cat([t0[:, :, None], t_incl[:, :, :-1]], -1)).mul_(take)
                acc_c[tl] += torch.bmm(w, colors[g])
                acc_d[tl] += torch.bmm(w, g_z[g][:, :, None])[..., 0]
                # transmittance after the last composited entry (take is a prefix, t_incl decreasing)
                trans[tl] = torch.where(take, t_incl, t0[:, :, None]).amin(-1)
                done[tl] |= t_incl[..., -1] < T_MIN
            pos += chunk
            active = active[(tile_count[active] > pos) & ~done[active].all(-1)]

        def untile(t, c):
            t = t.reshape(nty, ntx, ts, ts, c).permute(4, 0, 2, 1, 3).reshape(c, nty * ts, ntx * ts)
            return t[:, :height, :width]

        trans_img = untile(trans, 1)
        color = untile(acc_c, 3) + trans_img * bg[:, None, None]
        return {"color": color, "alpha": 1 - trans_img, "depth": untile(acc_d, 1)}
