"""Exact ray marching of the radiance field (`Strivec`) in pure PyTorch (CPU or any torch device).

Written from the rendering semantics in TRELLIS_FACTS.md §7.3 and the standard emission-absorption
volume-rendering equations:

* Voxels: row i covers the axis-aligned box ``[vmin, vmax)`` with, in [0,1] units,
  ``vmin = position - 0.5 / res`` and ``vmax = position + 0.5 / res`` (res = the Strivec's
  resolution = 2**depth, all voxels at one depth), mapped to world space by
  ``world = unit * aabb[3:] + aabb[:3]`` (``unit - 0.5`` for the TRELLIS aabb).
* Rays: pixel (i, j) (row 0 = top) is sampled through its centre (j + 0.5, i + 0.5), with the same
  pinhole model as the Gaussian renderer: camera direction ``((j + 0.5 - cx W) / (fx W),
  (i + 0.5 - cy H) / (fy H), 1)``, normalised, rotated to world by the OpenCV extrinsics.
  The ray parameter t is the world distance from the camera centre.
* Samples: the fixed world positions ``t_k = k * step`` (k = 1, 2, ...), ``step = voxel_size / 16``
  (voxel_size = aabb edge / res; the smallest edge if the aabb is not a cube). A sample counts when it
  lies inside an occupied voxel and its camera depth ``z = t_k * (d . forward)`` is greater than
  ``near``. Empty space contributes nothing. ``far`` does not cut rays (at the render_video settings,
  radius 2 and far 1.6, the back half of the object lies beyond it; the same choice as the Gaussian
  renderer), it is accepted for API symmetry only.
* Field inside a voxel (rank R, ``dim`` samples per axis vector): per axis
  ``u = (p - vmin) / (vmax - vmin) * dim - 0.5``; cell ``c = clamp(floor(u), 0, dim - 2)``,
  ``f = u - c`` (not clamped, so the half-cells at the two ends extrapolate linearly from the
  outermost pair); value ``v = trivec[c] * (1 - f) + trivec[c + 1] * f``; ``w_r`` = product of the
  three axis values of rank r; density ``sigma = softplus(sum_r density_r * w_r)``; colour
  ``sigmoid(sum_r SH_C0 * features_dc_r * w_r)`` per channel. (§7.3 states ``* 8`` and a clamp to
  [0, 6] for the shipped dim = 8; the general form uses ``dim`` and [0, dim - 2].)
  ``density_shift`` is not added: §7.3 does not list it (it is 0 for every decoder output anyway).
* Compositing, front to back, no early termination: ``alpha_k = min(1 - exp(-sigma_k step), 0.999)``,
  ``T_k = prod_{l<k} (1 - alpha_l)``, ``color = sum_k T_k alpha_k c_k + T bg``, ``alpha = 1 - T``,
  ``depth = sum_k T_k alpha_k z_k`` (alpha-weighted camera depth, not normalised: divide by alpha for
  the mean depth, as for the Gaussian renderer).
* Supersampling: ``ssaa = s`` renders at (s H, s W) and area-averages s x s blocks.

Implementation: every occupied voxel's 8 corners are projected to bound the pixels whose rays can hit
it (all pixels if the voxel reaches behind the camera plane), with a 1-pixel margin. The image is
processed in bands of rows holding about ``pair_budget`` such (pixel, voxel) candidates. Each
candidate gets an exact ray/box slab test in float64, giving the half-open interval [t_in, t_out) and
so the integer range of sample indices k inside the voxel. Adjacent voxels share face planes computed
from the same integer coordinates, so a sample never falls into two voxels or into a crack between
them. The intervals are shaded in voxel-major order (cache-friendly table lookups), in chunks of
about ``sample_budget`` work elements: per interval the samples are composited on their own (log-
transmittance L, premultiplied colour C, weighted depth D); then the intervals of each ray, sorted
by their first sample, are composited front to back: ``color += exp(sum of the earlier L) * C``. This
is the same sum as compositing sample by sample, so the result does not depend on the chunking.
Positions and transmittance sums are float64 (float32 on devices without float64), the field
evaluation float32 (the local coordinate is formed in float64 before the cast). Memory is bounded by
the budgets plus the [H*W] accumulators.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from ..representations.gaussian import SH_C0
from ..core.callbacks import CancelCheck, check
from .cameras import image_size

__all__ = ["render_strivec", "ALPHA_MAX", "STEPS_PER_VOXEL"]

ALPHA_MAX = 0.999
STEPS_PER_VOXEL = 16
_NO_FLOAT64_DEVICES = {"mps"}
_LOG_1M_ALPHA_MAX = math.log(1.0 - ALPHA_MAX)


def _voxel_resolution(strivec) -> int:
    depth = getattr(strivec, "depth", None)
    if depth is not None and depth.numel() > 0:
        d = depth.reshape(-1).to(torch.int64)
        dmin, dmax = int(d.min()), int(d.max())
        if dmin != dmax:
            raise NotImplementedError("render_strivec: voxels at mixed octree depths are not supported "
                                      f"(depths {dmin}..{dmax}); TRELLIS outputs use one depth")
        return 1 << dmin
    return int(strivec.resolution)


def _pixel_rays(ray, width, fx, fy, cx, cy, rot, wide):
    """Unit world directions [P,3] and camera depth per unit distance [P] of flat pixel ids."""
    row = torch.div(ray, width, rounding_mode="floor")
    col = ray - row * width
    dc = torch.stack([(col.to(wide) + 0.5 - cx) / fx, (row.to(wide) + 0.5 - cy) / fy,
                      torch.ones(ray.shape, dtype=wide, device=ray.device)], -1)
    inv_norm = torch.rsqrt((dc * dc).sum(-1))
    # world direction = R^T d_cam (row vectors: d_cam @ R)
    return (dc @ rot) * inv_norm[:, None], inv_norm


def _rows(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x[idx] for a 1-D index (index_select: much faster than advanced indexing for row gathers)."""
    return torch.index_select(x, 0, idx)


def _shade(ctx, i_ray, i_vox, i_k0, cn):
    """Evaluate and composite the samples of a run of intervals (voxel-major order).

    Returns per interval: L = sum of log(1 - alpha) (wide), C [I,3] = premultiplied colour and
    D = alpha-weighted camera depth, both with the transmittance measured from the interval's start.
    """
    wide, step, dim, rank = ctx.wide, ctx.step, ctx.dim, ctx.rank
    n_int = i_ray.numel()
    device = i_ray.device
    d = _rows(ctx.pix_dir, i_ray)
    sc = _rows(ctx.scale, i_vox)
    t0 = i_k0.to(wide) * step
    u0 = (ctx.origin + t0[:, None] * d - _rows(ctx.vmin, i_vox)) * sc - 0.5   # local coord of sample k0
    du = (step * d) * sc                                                      # its increment per step
    dz = _rows(ctx.pix_dz, i_ray)
    tot = int(cn.sum())
    sid = torch.repeat_interleave(torch.arange(n_int, device=device), cn)
    first = torch.cumsum(cn, 0) - cn
    jj = (torch.arange(tot, device=device) - _rows(first, sid)).to(wide)
    u = _rows(u0, sid) + jj[:, None] * _rows(du, sid)                        # [S,3]
    c = torch.floor(u).clamp(0, dim - 2)
    f = (u - c).to(torch.float32)
    row = _rows(_rows(ctx.row_base, i_vox), sid) + c.to(torch.int64)         # [S,3]
    tab = _rows(ctx.table, row.reshape(-1)).reshape(tot, 3, 2 * rank)         # [S,3,2R]
    v = torch.addcmul(tab[..., :rank], f[..., None], tab[..., rank:])        # [S,3,R] lerp
    w = v[:, 0] * v[:, 1] * v[:, 2]                                           # [S,R]
    s_vox = _rows(i_vox, sid)
    mixed = torch.bmm(w[:, None, :], _rows(ctx.mix, s_vox))[:, 0]             # [S,4]
    sigma = F.softplus(mixed[:, 0])
    rgb = torch.sigmoid(mixed[:, 1:])
    # log(1 - alpha) = max(-sigma step, log(1 - 0.999)); alpha from it
    lt = torch.clamp(-sigma.to(wide) * step, min=_LOG_1M_ALPHA_MAX)
    alpha = -torch.expm1(lt)
    excl = torch.cumsum(lt, 0) - lt
    trans = torch.exp(excl - _rows(_rows(excl, first), sid))                  # from the interval start
    wgt = trans * alpha
    col = torch.zeros(n_int, 3, dtype=wide, device=device).index_add_(0, sid, wgt[:, None] * rgb.to(wide))
    w0 = torch.zeros(n_int, dtype=wide, device=device).index_add_(0, sid, wgt)
    w1 = torch.zeros(n_int, dtype=wide, device=device).index_add_(0, sid, wgt * jj)
    logt = torch.zeros(n_int, dtype=wide, device=device).index_add_(0, sid, lt)
    depth = t0 * dz * w0 + step * dz * w1                                     # sum wgt * (k0 + j) step dz
    return logt, col, depth


def render_strivec(strivec, extrinsics: torch.Tensor, intrinsics: torch.Tensor, resolution,
                   near: float = 0.8, far: float = 1.6, bg_color: Sequence[float] = (0.0, 0.0, 0.0),
                   ssaa: int = 1, cancel: CancelCheck = None, *,
                   pair_budget: int = 1 << 21, sample_budget: int = 1 << 22) -> dict:
    """Render one view of a `Strivec` (OpenCV extrinsics [4,4], normalised intrinsics [3,3]).

    resolution: int (square) or (height, width) of the returned image. Returns ``color`` [3,H,W]
    (not clipped), ``alpha`` [1,H,W] and ``depth`` [1,H,W] (see the module docstring), float32.
    ``pair_budget`` bounds the (pixel, voxel) candidates held at once (the image is processed in
    bands of rows of about that many candidates), ``sample_budget`` the elements of one chunk of the
    field evaluation (samples x rank x 6). ``cancel()`` is polled between chunks and raises
    `Cancelled` when it returns True.
    """
    out_h, out_w = image_size(resolution)
    ssaa = int(ssaa)
    if ssaa < 1:
        raise ValueError("ssaa must be >= 1")
    height, width = out_h * ssaa, out_w * ssaa
    device = strivec.device
    wide = torch.float32 if device.type in _NO_FLOAT64_DEVICES else torch.float64
    check(cancel)

    with torch.no_grad():
        bg = torch.as_tensor(bg_color, dtype=torch.float32, device=device).reshape(3)
        ext = torch.as_tensor(extrinsics).to(device=device, dtype=wide).reshape(4, 4)
        k_mat = torch.as_tensor(intrinsics).to(device=device, dtype=wide).reshape(3, 3)
        rot, tvec = ext[:3, :3], ext[:3, 3]
        origin = -(rot.T @ tvec)
        fx, fy = float(k_mat[0, 0]) * width, float(k_mat[1, 1]) * height
        cx, cy = float(k_mat[0, 2]) * width, float(k_mat[1, 2]) * height

        npix = height * width
        log_t = torch.zeros(npix, dtype=wide, device=device)           # sum of log(1 - alpha) per ray
        acc_c = torch.zeros(npix, 3, dtype=wide, device=device)
        acc_d = torch.zeros(npix, dtype=wide, device=device)

        n_vox = len(strivec)
        if n_vox > 0:
            res = _voxel_resolution(strivec)
            aabb = strivec.aabb.to(device=device, dtype=wide)
            a_min, a_size = aabb[:3], aabb[3:]
            step = float(a_size.min()) / res / STEPS_PER_VOXEL
            rank, dim = strivec.trivec.shape[1], strivec.trivec.shape[3]
            if dim < 2:
                raise ValueError("Strivec dim must be >= 2 for linear interpolation")
            vidx = torch.round(strivec.position.to(wide) * res - 0.5).to(torch.int64)   # [N,3]
            vmin = a_min + vidx.to(wide) * (a_size / res)
            vmax = a_min + (vidx + 1).to(wide) * (a_size / res)

            # ---- screen bounds of each voxel (pixel index ranges, inclusive, 1-pixel margin)
            corner_sel = torch.tensor([[(c >> a) & 1 for a in range(3)] for c in range(8)],
                                      dtype=torch.bool, device=device)
            corners = torch.where(corner_sel[None], vmax[:, None], vmin[:, None])          # [N,8,3]
            cam = corners @ rot.T + tvec
            cz = cam[..., 2]
            front = cz.min(1).values > 1e-6
            czs = torch.where(front[:, None], cz, torch.ones_like(cz))
            pu = fx * cam[..., 0] / czs + cx
            pv = fy * cam[..., 1] / czs + cy
            # pixel j is a candidate when its centre j + 0.5 lies in [umin - 1, umax + 1]
            j0 = (torch.ceil(pu.min(1).values - 0.5) - 1).clamp(0, width)
            j1 = (torch.floor(pu.max(1).values - 0.5) + 1).clamp(-1, width - 1)
            i0 = (torch.ceil(pv.min(1).values - 0.5) - 1).clamp(0, height)
            i1 = (torch.floor(pv.max(1).values - 0.5) + 1).clamp(-1, height - 1)
            # a voxel reaching to or behind the camera plane: every pixel is a candidate
            j0 = torch.where(front, j0, torch.zeros_like(j0)).to(torch.int64)
            i0 = torch.where(front, i0, torch.zeros_like(i0)).to(torch.int64)
            j1 = torch.where(front, j1, torch.full_like(j1, width - 1)).to(torch.int64)
            i1 = torch.where(front, i1, torch.full_like(i1, height - 1)).to(torch.int64)
            bw = (j1 - j0 + 1).clamp(min=0)
            live = (bw > 0) & (i1 >= i0) & (cz.max(1).values > near)   # wholly before near: culled
            del corners, cam, cz, czs, pu, pv

            # ---- field tables: per (voxel, axis, cell c) the R values at c and the R slopes to c + 1
            tv = strivec.trivec.to(device=device, dtype=torch.float32).permute(0, 2, 3, 1)   # [N,3,d,R]
            table = torch.cat([tv[:, :, :-1], tv[:, :, 1:] - tv[:, :, :-1]], -1)
            ctx = _Ctx()
            ctx.wide, ctx.step, ctx.dim, ctx.rank, ctx.origin, ctx.vmin = wide, step, dim, rank, origin, vmin
            ctx.table = table.reshape(n_vox * 3 * (dim - 1), 2 * rank).contiguous()
            ctx.mix = torch.cat([strivec.density.to(device=device, dtype=torch.float32).reshape(n_vox, rank, 1),
                                 SH_C0 * strivec.features_dc.to(device=device, dtype=torch.float32)
                                 .reshape(n_vox, rank, 3)], -1).contiguous()                 # [N,R,4]
            ctx.row_base = ((torch.arange(n_vox, device=device) * 3)[:, None]
                            + torch.arange(3, device=device)) * (dim - 1)                     # [N,3]
            ctx.scale = dim / (vmax - vmin)                                                  # [N,3]
            chunk_samples = max(256, sample_budget // (rank * 6))
            tiny = 1e-300 if wide == torch.float64 else 1e-30

            # ---- bands of rows holding about pair_budget candidates each
            lv = live.nonzero().squeeze(-1)
            row_load = torch.zeros(height + 1, dtype=torch.int64, device=device)
            row_load.index_add_(0, i0[lv], bw[lv])
            row_load.index_add_(0, i1[lv] + 1, -bw[lv])
            row_cum = torch.cumsum(torch.cumsum(row_load[:height], 0), 0)    # candidates in rows [0, r]
            r0 = 0
            while r0 < height:
                done = int(row_cum[r0 - 1]) if r0 > 0 else 0
                r1 = int(torch.searchsorted(row_cum, torch.tensor(done + pair_budget, device=device),
                                            right=True))
                r1 = min(max(r1, r0 + 1), height)                                    # rows [r0, r1)
                _render_band(ctx, r0, r1, lv, i0, i1, j0, bw, vmin, vmax, width, fx, fy, cx, cy, rot,
                             near, tiny, pair_budget, chunk_samples, log_t, acc_c, acc_d, cancel)
                r0 = r1

        trans = torch.exp(log_t)
        color = (acc_c + trans[:, None] * bg.to(wide)).to(torch.float32).T.reshape(3, height, width)
        alpha = (1 - trans).to(torch.float32).reshape(1, height, width)
        depth = acc_d.to(torch.float32).reshape(1, height, width)
        if ssaa > 1:
            color, alpha, depth = (F.avg_pool2d(x[None], kernel_size=ssaa, stride=ssaa)[0]
                                   for x in (color, alpha, depth))
    return {"color": color, "alpha": alpha, "depth": depth}


class _Ctx:
    """Per-render constants shared by the band and shading helpers."""


def _budget_chunks(csum: torch.Tensor, budget: int, cancel=None):
    """Consecutive (start, stop) item ranges whose sizes (cumulative sums `csum`) add up to about
    `budget` each; an item larger than the budget gets a range of its own. Checks `cancel` per range."""
    start, total = 0, csum.numel()
    while start < total:
        check(cancel)
        base = int(csum[start - 1]) if start > 0 else 0
        stop = int(torch.searchsorted(csum, torch.tensor(base + budget, device=csum.device), right=True))
        stop = max(stop, start + 1)
        yield start, stop
        start = stop


def _render_band(ctx, r0, r1, lv, i0, i1, j0, bw, vmin, vmax, width, fx, fy, cx, cy, rot, near, tiny,
                 pair_budget, chunk_samples, log_t, acc_c, acc_d, cancel):
    """All intervals of the rays of image rows [r0, r1): find, shade, composite into the accumulators."""
    device, wide, step = lv.device, ctx.wide, ctx.step
    check(cancel)
    sel = lv[(i0[lv] < r1) & (i1[lv] >= r0)]
    if sel.numel() == 0:
        return
    bi0 = i0[sel].clamp(min=r0)
    bh = i1[sel].clamp(max=r1 - 1) - bi0 + 1
    counts = bh * bw[sel]
    # rays of the band (local ids): unit world direction, depth per unit distance, slab inverses
    ctx.pix_dir, ctx.pix_dz = _pixel_rays(torch.arange(r0 * width, r1 * width, device=device), width,
                                          fx, fy, cx, cy, rot, wide)
    pix_inv = 1.0 / torch.where(ctx.pix_dir == 0, torch.full_like(ctx.pix_dir, tiny), ctx.pix_dir)
    pix_knear = (torch.floor(near / (step * ctx.pix_dz)) + 1).clamp(min=1)   # first k with k step dz > near
    keys, logts, cols, depths = [], [], [], []
    for start, stop in _budget_chunks(torch.cumsum(counts, 0), pair_budget, cancel):
        cnt = counts[start:stop]
        tot = int(cnt.sum())
        vox = torch.repeat_interleave(sel[start:stop], cnt)                       # voxel-major order
        first = torch.cumsum(cnt, 0) - cnt
        local = torch.arange(tot, device=device) - torch.repeat_interleave(first, cnt)
        g = torch.repeat_interleave(torch.arange(start, stop, device=device), cnt)
        bwv = _rows(bw, vox)
        ray = (_rows(bi0, g) - r0 + local // bwv) * width + _rows(j0, vox) + local % bwv   # band-local id
        inv = _rows(pix_inv, ray)
        t1 = (_rows(vmin, vox) - ctx.origin) * inv
        t2 = (_rows(vmax, vox) - ctx.origin) * inv
        t_in = torch.minimum(t1, t2).max(-1).values
        t_out = torch.maximum(t1, t2).min(-1).values
        k0 = torch.maximum(torch.ceil(t_in / step), _rows(pix_knear, ray))
        n = torch.ceil(t_out / step) - k0
        keep = n > 0
        ray, vox, k0, n = ray[keep], vox[keep], k0[keep].to(torch.int64), n[keep].to(torch.int64)
        del t1, t2, t_in, t_out, inv, local, g, bwv, keep
        if k0.numel() and int(k0.max()) >= (1 << 31):
            raise ValueError("render_strivec: camera too far from the radiance field for the sample index range")
        # shade the intervals in chunks of about chunk_samples samples (never splitting an interval)
        for a, b in _budget_chunks(torch.cumsum(n, 0), chunk_samples, cancel):
            lt, col, dep = _shade(ctx, ray[a:b], vox[a:b], k0[a:b], n[a:b])
            keys.append(ray[a:b] * (1 << 31) + k0[a:b])
            logts.append(lt)
            cols.append(col)
            depths.append(dep)
    if not keys:
        return
    # composite the intervals of each ray front to back (their sample ranges are disjoint: unique keys)
    key = torch.cat(keys)
    order = torch.argsort(key)
    key = key[order]
    lt = torch.cat(logts)[order]
    col = torch.cat(cols)[order]
    dep = torch.cat(depths)[order]
    ray = torch.div(key, 1 << 31, rounding_mode="floor")
    excl = torch.cumsum(lt, 0) - lt
    new_seg = torch.ones(ray.numel(), dtype=torch.bool, device=device)
    new_seg[1:] = ray[1:] != ray[:-1]
    seg_id = torch.cumsum(new_seg.to(torch.int64), 0) - 1
    trans = torch.exp(excl - excl[new_seg][seg_id])
    gray = ray + r0 * width
    acc_c.index_add_(0, gray, trans[:, None] * col)
    acc_d.index_add_(0, gray, trans * dep)
    log_t.index_add_(0, gray, lt)
