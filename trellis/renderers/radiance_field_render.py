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
it (all pixels if the voxel reaches behind the camera plane); each (pixel, voxel) candidate gets an
exact ray/box slab test in float64, giving the half-open interval [t_in, t_out) and so the integer
range of sample indices k inside the voxel. Adjacent voxels share face planes computed from the
same integer coordinates, so a sample never falls into two voxels or into a crack between them.
The (ray, k)-sorted intervals are expanded into samples in chunks; per-ray log-transmittance is
carried across chunks, so the result does not depend on the chunking. Positions and transmittance
sums are float64 (float32 on devices without float64), the field evaluation float32.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from ..representations.gaussian import SH_C0
from ..utils.cancel import check

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


def render_strivec(strivec, extrinsics: torch.Tensor, intrinsics: torch.Tensor, resolution,
                   near: float = 0.8, far: float = 1.6, bg_color: Sequence[float] = (0.0, 0.0, 0.0),
                   ssaa: int = 1, cancel: Optional[Callable[[], bool]] = None, *,
                   pair_budget: int = 1 << 21, sample_budget: int = 1 << 22) -> dict:
    """Render one view of a `Strivec` (OpenCV extrinsics [4,4], normalised intrinsics [3,3]).

    resolution: int (square) or (height, width) of the returned image. Returns ``color`` [3,H,W]
    (not clipped), ``alpha`` [1,H,W] and ``depth`` [1,H,W] (see the module docstring), float32.
    ``pair_budget`` bounds the (pixel, voxel) candidates tested at once, ``sample_budget`` the
    elements of the per-chunk field evaluation (samples x rank x 6). ``cancel()`` is polled between
    chunks and raises `Cancelled` when it returns True.
    """
    if isinstance(resolution, int):
        out_h = out_w = resolution
    else:
        out_h, out_w = int(resolution[0]), int(resolution[1])
    ssaa = int(ssaa)
    if ssaa < 1:
        raise ValueError("ssaa must be >= 1")
    height, width = out_h * ssaa, out_w * ssaa
    device = strivec.aabb.device if strivec.position is None else strivec.position.device
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
        carry = torch.zeros(npix, dtype=wide, device=device)           # sum of log(1 - alpha)
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
            zmin, zmax = cz.min(1).values, cz.max(1).values
            front = zmin > 1e-6
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
            bh = (i1 - i0 + 1).clamp(min=0)
            bw = torch.where(zmax > near, bw, torch.zeros_like(bw))          # wholly before near: culled
            counts = bw * bh

            # ---- (ray, voxel) intervals, in voxel groups of at most pair_budget candidates
            hit_ray, hit_vox, hit_k0, hit_n = [], [], [], []
            live = (counts > 0).nonzero().squeeze(-1)
            csum = torch.cumsum(counts[live], 0)
            start = 0
            while start < live.numel():
                check(cancel)
                base = int(csum[start - 1]) if start > 0 else 0
                stop = int(torch.searchsorted(csum, torch.tensor(base + pair_budget, device=device),
                                              right=True))
                stop = max(stop, start + 1)
                vox_g = live[start:stop]
                cnt = counts[vox_g]
                tot = int(cnt.sum())
                vox = torch.repeat_interleave(vox_g, cnt)
                first = torch.cumsum(cnt, 0) - cnt
                local = torch.arange(tot, device=device) - torch.repeat_interleave(first, cnt)
                bwv = bw[vox]
                ray = (i0[vox] + local // bwv) * width + j0[vox] + local % bwv
                d, dz = _pixel_rays(ray, width, fx, fy, cx, cy, rot, wide)
                d_safe = torch.where(d == 0, torch.full_like(d, 1e-300 if wide == torch.float64 else 1e-30), d)
                inv = 1.0 / d_safe
                t1 = (vmin[vox] - origin) * inv
                t2 = (vmax[vox] - origin) * inv
                t_in = torch.minimum(t1, t2).max(-1).values
                t_out = torch.maximum(t1, t2).min(-1).values
                k0 = torch.ceil(t_in / step)
                k_near = torch.floor(near / (step * dz)) + 1
                k0 = torch.maximum(torch.maximum(k0, k_near), torch.ones_like(k0))
                k1 = torch.ceil(t_out / step)
                n = k1 - k0
                keep = n > 0
                hit_ray.append(ray[keep])
                hit_vox.append(vox[keep])
                hit_k0.append(k0[keep].to(torch.int64))
                hit_n.append(n[keep].to(torch.int64))
                start = stop

            if hit_ray:
                ray_all = torch.cat(hit_ray)
                vox_all = torch.cat(hit_vox)
                k0_all = torch.cat(hit_k0)
                n_all = torch.cat(hit_n)
            else:
                ray_all = vox_all = k0_all = n_all = torch.zeros(0, dtype=torch.int64, device=device)
            del hit_ray, hit_vox, hit_k0, hit_n

            if ray_all.numel() > 0:
                # order by (ray, first sample): intervals of one ray are disjoint in t
                order = torch.argsort(k0_all, stable=True)
                order = order[torch.argsort(ray_all[order], stable=True)]
                ray_all, vox_all, k0_all, n_all = ray_all[order], vox_all[order], k0_all[order], n_all[order]

                trivec = strivec.trivec.to(device=device, dtype=torch.float32).reshape(-1)
                dens_w = strivec.density.to(device=device, dtype=torch.float32).reshape(n_vox, rank)
                dc_w = strivec.features_dc.to(device=device, dtype=torch.float32).reshape(n_vox, rank, 3)
                vox_stride = rank * 3 * dim
                lane = (torch.arange(rank, device=device)[:, None] * (3 * dim)
                        + torch.arange(3, device=device)[None, :] * dim)                 # [R,3]
                chunk_samples = max(256, sample_budget // (rank * 6))
                ncum = torch.cumsum(n_all, 0)
                start = 0
                n_int = ray_all.numel()
                while start < n_int:
                    check(cancel)
                    base = int(ncum[start - 1]) if start > 0 else 0
                    stop = int(torch.searchsorted(ncum, torch.tensor(base + chunk_samples, device=device),
                                                  right=True))
                    stop = max(stop, start + 1)
                    cn = n_all[start:stop]
                    tot = int(cn.sum())
                    sid = torch.repeat_interleave(torch.arange(start, stop, device=device), cn)
                    first = torch.cumsum(cn, 0) - cn
                    kk = k0_all[sid] + torch.arange(tot, device=device) - torch.repeat_interleave(first, cn)
                    s_ray = ray_all[sid]
                    s_vox = vox_all[sid]
                    d, dz = _pixel_rays(s_ray, width, fx, fy, cx, cy, rot, wide)
                    t = kk.to(wide) * step
                    p = origin + t[:, None] * d
                    u = (p - vmin[s_vox]) / (vmax[s_vox] - vmin[s_vox]) * dim - 0.5
                    c = torch.floor(u).clamp(0, dim - 2)
                    f = (u - c).to(torch.float32)                                        # [S,3]
                    gidx = (s_vox[:, None, None] * vox_stride + lane[None]
                            + c.to(torch.int64)[:, None, :])                             # [S,R,3]
                    v0 = trivec[gidx]
                    v1 = trivec[gidx + 1]
                    fr = f[:, None, :]
                    w = (v0 * (1 - fr) + v1 * fr).prod(-1)                              # [S,R]
                    sigma = F.softplus((dens_w[s_vox] * w).sum(-1))
                    rgb = torch.sigmoid(SH_C0 * torch.einsum("sr,src->sc", w, dc_w[s_vox]))
                    # log(1 - alpha) = max(-sigma step, log(1 - 0.999)); alpha from it
                    lt = torch.clamp(-sigma.to(wide) * step, min=_LOG_1M_ALPHA_MAX)
                    alpha = -torch.expm1(lt)
                    # exclusive per-ray cumulative sum of lt inside the chunk, plus the carry
                    cs = torch.cumsum(lt, 0)
                    excl = cs - lt
                    new_seg = torch.ones(tot, dtype=torch.bool, device=device)
                    new_seg[1:] = s_ray[1:] != s_ray[:-1]
                    seg_id = torch.cumsum(new_seg.to(torch.int64), 0) - 1
                    seg_base = excl[new_seg][seg_id]
                    trans = torch.exp(carry[s_ray] + excl - seg_base)
                    wgt = trans * alpha
                    acc_c.index_add_(0, s_ray, wgt[:, None] * rgb.to(wide))
                    acc_d.index_add_(0, s_ray, wgt * (t * dz))
                    carry.index_add_(0, s_ray, lt)
                    start = stop

        trans = torch.exp(carry)
        color = (acc_c + trans[:, None] * bg.to(wide)).to(torch.float32).T.reshape(3, height, width)
        alpha = (1 - trans).to(torch.float32).reshape(1, height, width)
        depth = acc_d.to(torch.float32).reshape(1, height, width)
        if ssaa > 1:
            color, alpha, depth = (F.avg_pool2d(x[None], kernel_size=ssaa, stride=ssaa)[0]
                                   for x in (color, alpha, depth))
    return {"color": color, "alpha": alpha, "depth": depth}
