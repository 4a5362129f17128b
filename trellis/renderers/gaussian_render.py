"""Exact splatting of 3-D Gaussians in pure PyTorch (CPU or any torch device), with fast GPU kernels beside it.

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
* Extent: only pixel centres inside the bounding box of the ellipse on which a Gaussian's alpha falls
  to 1/255 (slightly enlarged, ``project``) can receive it, so evaluating (Gaussian, pixel) pairs in
  that box alone gives the result of an untiled per-pixel evaluation up to float rounding.

Compositing is a pair of functions with the same arguments (``trellis.fastpaths`` chooses):

* ``composite_torch`` — this module, the reference, any device. Vectorised over (Gaussian, pixel)
  pairs with no per-tile loops: Gaussians are taken front to back in groups of at most ``work_budget``
  candidate pairs; a group's pairs are evaluated at once (exponent in float64, alpha in float32),
  those with alpha >= 1/255 on unfinished pixels are stable-sorted by pixel (pairs are generated in
  depth order, so each pixel's run is front to back), and the transmittance is a segmented product
  taken as a float64 cumulative sum of log(1 - alpha). Per-pixel log-transmittance and the
  "finished" flag carry from group to group, and a Gaussian whose box holds no unfinished pixel
  (an integral image of the finished map) is skipped: hidden layers cost almost nothing.
* ``trellis_triton.gaussian_composite.composite`` (Triton) and ``trellis_nvrtc.gaussian_composite.
  composite`` (CUDA C through PyTorch's NVRTC, for GPUs without Triton) — tiles of ``tile_size``²
  pixels walking (tile, depth)-sorted lists from ``kernel_inputs``, sequential float32 transmittance.
  They agree with the twin to ~1e-6 except where a running transmittance lands within rounding of the
  1e-4 stop (tests/gpu/ states the tolerances).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from .. import fastpaths
from ..representations.gaussian import SH_C0, quaternion_to_matrix
from ..core.callbacks import CancelCheck, check
from .cameras import image_size
from .gaussian_constants import ALPHA_MAX, ALPHA_MIN, KERNEL_COLUMNS, POWER_MIN, T_MIN, TILE_SIZE

# Devices without float64: there the exponent is evaluated in float32 (same result up to rounding).
_NO_FLOAT64_DEVICES = {"mps"}
# Candidate (Gaussian, pixel) pairs per group of ``composite_torch`` on the CPU (GPUs: ``_work_budget``).
_DEFAULT_WORK_BUDGET = {"cpu": 1 << 20}


def project(xyz, scales, rots, opacity, extrinsics, intrinsics, width, height, near, far, cull_far,
             kernel_size, opacity_compensation):
    """Screen-space quantities of the kept (Gaussian, camera) pairs, for one camera (extrinsics [4,4], intrinsics
    [3,3]) or several at once (extrinsics [K,4,4], intrinsics [K,3,3]). Returns a dict of tensors; its "idx" is
    each pair's flat index camera * N + Gaussian (the Gaussian's own index for one camera)."""
    ext, intr = extrinsics.reshape(-1, 4, 4), intrinsics.reshape(-1, 3, 3)
    views, n = ext.shape[0], xyz.shape[0]
    # Every camera's R^T side by side ([3, 3K]): one matrix product serves all of them (for one camera, R^T).
    rot_cols = ext[:, :3, :3].transpose(1, 2).permute(1, 0, 2).reshape(3, 3 * views)
    p = (xyz @ rot_cols).view(n, views, 3).transpose(0, 1) + ext[:, None, :3, 3]         # [K, N, 3]
    x, y, z = p.unbind(-1)
    keep = z > near
    if cull_far:
        keep &= z < far
    fxp, fyp = intr[:, 0, 0, None] * width, intr[:, 1, 1, None] * height
    cxp, cyp = intr[:, 0, 2, None] * width, intr[:, 1, 2, None] * height
    zs = torch.where(keep, z, torch.ones_like(z))          # avoid dividing by ~0 for culled ones
    u = fxp * x / zs + cxp
    v = fyp * y / zs + cyp
    # Screen covariance = A A^T with A = J W R diag(s) (symmetric positive semi-definite by construction),
    # J the Jacobian of (x, y, z) -> (u, v) at the centre: its rows are (fx/z, 0, -fx x/z^2) and
    # (0, fy/z, -fy y/z^2), so A's rows combine rows of M = W R. M comes from one plain matrix product
    # (M^T of every Gaussian stacked) and the rest is elementwise, several times faster than batched 2x3 and 3x3
    # products (docs/benchmarks/kernels.md#gaussian-compositing).
    m_t = (quaternion_to_matrix(rots).transpose(1, 2).reshape(-1, 3) @ rot_cols).view(n, 3, views, 3)
    m_t = m_t.permute(2, 0, 1, 3)                                                               # M^T [K, N, 3, 3]
    m0, m1, m2 = m_t[..., 0], m_t[..., 1], m_t[..., 2]                                          # rows of M
    inv_z = 1.0 / zs
    a0 = (m0 * (fxp * inv_z)[..., None] - m2 * (fxp * x * inv_z * inv_z)[..., None]) * scales
    a1 = (m1 * (fyp * inv_z)[..., None] - m2 * (fyp * y * inv_z * inv_z)[..., None]) * scales
    c00, c01, c11 = (a0 * a0).sum(-1), (a0 * a1).sum(-1), (a1 * a1).sum(-1)
    del m_t, m0, m1, m2, a0, a1, inv_z, p
    det0 = (c00 * c11 - c01 * c01).clamp(min=0)
    c00f, c11f = c00 + kernel_size, c11 + kernel_size
    det = c00f * c11f - c01 * c01
    op = opacity.expand(views, n)
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
    idx = keep.reshape(-1).nonzero().squeeze(-1)

    def kept(t):
        return t.reshape(views * n, *t.shape[2:])[idx]
    return dict(idx=idx, u=kept(u), v=kept(v), z=kept(z), conic=kept(conic), opacity=kept(op),
                half_x=kept(half_x), half_y=kept(half_y))


def bin_tiles(proj, width, height, tile_size):
    """Sorted (tile, depth) lists for tile-based compositing (used by the Triton kernel): ntx, nty, the
    Gaussian order within tiles, per-tile start and count."""
    ntx, nty = -(-width // tile_size), -(-height // tile_size)
    u, v, hx, hy = proj["u"], proj["v"], proj["half_x"], proj["half_y"]

    def tile_range(lo, hi, n):
        lo = torch.floor((lo / tile_size).clamp(-1, n + 1)).long().clamp(0, n)
        hi = (torch.floor((hi / tile_size).clamp(-1, n + 1)).long() + 1).clamp(0, n)
        return lo, hi

    tx0, tx1 = tile_range(u - hx, u + hx, ntx)
    ty0, ty1 = tile_range(v - hy, v + hy, nty)
    if "row0" in proj:          # views stacked in one tall image (bands of whole tiles): a splat keeps to its band
        ty0 = torch.maximum(ty0, torch.div(proj["row0"], tile_size, rounding_mode="floor"))
        ty1 = torch.minimum(ty1, -torch.div(-proj["row1"], tile_size, rounding_mode="floor"))
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


def kernel_inputs(proj, colors, width, height, tile_size):
    """What the tile-based compositing kernels read: ``bin_tiles``' lists (int64 order and starts,
    int32 counts) and one float32 row of ``KERNEL_COLUMNS`` per splat; never empty tensors (a kernel
    gets a valid pointer even where nothing is drawn)."""
    ntx, nty, sorted_g, tile_start, tile_count = bin_tiles(proj, width, height, tile_size)
    device = colors.device
    table = torch.cat([proj["u"][:, None], proj["v"][:, None], proj["conic"], torch.log(proj["opacity"])[:, None],
                       colors, proj["z"][:, None]], 1).float().contiguous()
    if table.shape[0] == 0:
        table = torch.zeros(1, len(KERNEL_COLUMNS), dtype=torch.float32, device=device)
    if sorted_g.numel() == 0:
        sorted_g = torch.zeros(1, dtype=torch.int64, device=device)
    return (ntx, nty, sorted_g.to(torch.int64).contiguous(), tile_start.to(torch.int64).contiguous(),
            tile_count.to(torch.int32).contiguous(), table)


def _pixel_boxes(proj, width, height):
    """Per Gaussian, the pixel-index box [x0, x1] x [y0, y1] of the centres inside its extent."""
    def span(c, half, n):
        lo = torch.ceil((c - half - 0.5).clamp(-1, n + 1)).long().clamp(0, n)
        hi = torch.floor((c + half - 0.5).clamp(-2, n)).long().clamp(-1, n - 1)
        return lo, hi

    x0, x1 = span(proj["u"], proj["half_x"], width)
    y0, y1 = span(proj["v"], proj["half_y"], height)
    if "row0" in proj:          # views stacked in one tall image: a splat stays in its own view's rows
        y0, y1 = torch.maximum(y0, proj["row0"]), torch.minimum(y1, proj["row1"] - 1)
    return x0, y0, (x1 - x0 + 1).clamp(min=0), (y1 - y0 + 1).clamp(min=0)


def _work_budget(device: torch.device, npx: int) -> int:
    """Candidate pairs per group: on the CPU fixed; on a GPU ~32 per pixel between 2**22 and 2**24
    (fewer, larger groups pay on a big GPU; docs/benchmarks/kernels.md#gaussian-compositing),
    and at most what a quarter of the free memory holds (~96 bytes per pair at the peak)."""
    if device.type in _DEFAULT_WORK_BUDGET:
        return _DEFAULT_WORK_BUDGET[device.type]
    try:
        if device.type == "cuda":
            from ..core.device import free_device_memory       # under any VRAM budget or cap
            free = free_device_memory(device)
        else:
            free, _ = torch.get_device_module(device).mem_get_info(device)
    except Exception:  # backends without a memory query
        free = None
    return work_budget_for(npx, free)


def work_budget_for(npx: int, free_bytes: int | None) -> int:
    """Candidate pairs per group of a GPU render of `npx` pixels with `free_bytes` free to this process (None:
    unknown): ``_work_budget``'s rule. Pure."""
    budget = min(max(32 * npx, 1 << 22), 1 << 24)
    if free_bytes is not None:
        budget = min(budget, max(1 << 20, free_bytes // 4 // 96))
    return int(budget)


def composite_torch(proj, colors, width, height, bg, tile_size=TILE_SIZE, cancel=None, work_budget=None):
    """Composite projected splats front to back (the PyTorch twin of the ``gaussian_composite`` kernel).

    proj: the dict of ``project`` (u, v, z, conic, opacity, half_x, half_y of the kept Gaussians);
    colors [N,3]; bg [3]. Returns ``{"color" [3,H,W], "alpha" [1,H,W], "depth" [1,H,W]}``.
    ``tile_size`` is the kernel's (unused here: no tiles); ``work_budget`` bounds the candidate pairs
    evaluated at once (default: ``_work_budget``; ~96 bytes each at the peak). ``cancel()`` is polled between
    groups.
    """
    device, dtype = colors.device, colors.dtype
    npx = width * height
    log_t = torch.zeros(npx, dtype=torch.float64, device=device)    # log transmittance per pixel
    acc = torch.zeros(4, npx, dtype=dtype, device=device)           # colour, depth
    done = torch.zeros(npx, dtype=torch.bool, device=device)
    n = proj["u"].shape[0]
    budget = max(1, int(work_budget or _work_budget(device, npx)))
    wide = torch.float32 if device.type in _NO_FLOAT64_DEVICES else torch.float64
    if n > 0 and npx > 0:
        order = torch.argsort(proj["z"], stable=True)                # front to back
        x0, y0, bw, bh = (t[order].to(torch.int32) for t in _pixel_boxes(proj, width, height))
        count = bw.long() * bh.long()
        # Per-Gaussian tables in depth order, one row per quantity: a candidate's values are gathered
        # with one index_select along the columns (torch's CUDA gather of wide rows is many times slower).
        boxes = torch.stack([x0, y0, bw])
        params = torch.stack([proj["u"][order], proj["v"][order], *proj["conic"][order].unbind(-1),
                              torch.log(proj["opacity"][order])]).to(wide)
        shade = torch.cat([colors[order].T, proj["z"][order][None]]).to(dtype)
        budget_t = torch.tensor([budget], device=device)
        pos = 0
        while pos < n:
            check(cancel)
            cnt = count[pos:]
            if pos > 0:
                # Skip Gaussians whose box holds no unfinished pixel (integral image of the live map).
                live = torch.zeros(height + 1, width + 1, dtype=torch.int32, device=device)
                live[1:, 1:] = (~done).view(height, width).to(torch.int32).cumsum(0).cumsum(1)
                bx0, by0 = x0[pos:], y0[pos:]
                bx1, by1 = bx0 + bw[pos:], by0 + bh[pos:]
                inside = live[by1, bx1] - live[by0, bx1] - live[by1, bx0] + live[by0, bx0]
                cnt = torch.where(inside > 0, cnt, torch.zeros_like(cnt))
            cum = torch.cumsum(cnt, 0)
            k = torch.searchsorted(cum, budget_t, right=True)[0]
            k = torch.clamp(k, min=1, max=cnt.shape[0])
            k, total, rest = (int(x) for x in torch.stack([k, cum[k - 1], cum[-1]]).tolist())
            if rest == 0:
                break                                               # nothing left can reach a live pixel
            if total > 0:
                _composite_group(pos, cnt[:k], total, boxes, params, shade, width, log_t, acc, done)
            pos += k
    trans = torch.exp(log_t).to(dtype)
    color = acc[:3] + trans[None, :] * bg.to(dtype)[:, None]
    return {"color": color.reshape(3, height, width), "alpha": (1 - trans).reshape(1, height, width),
            "depth": acc[3].reshape(1, height, width)}


def _composite_group(pos, cnt, total, boxes, params, shade, width, log_t, acc, done):
    """Composite Gaussians pos .. pos + len(cnt) (depth order) into the per-pixel accumulators."""
    device = cnt.device
    k = cnt.shape[0]
    # int32 index arithmetic (a group holds < 2**31 candidates; int64 division is slow on GPUs).
    cnt32 = cnt.to(torch.int32)
    local_g = torch.repeat_interleave(torch.arange(pos, pos + k, device=device, dtype=torch.int32), cnt32,
                                      output_size=total)            # Gaussian (depth-order index)
    first = torch.cumsum(cnt32, 0, dtype=torch.int32).sub_(cnt32)
    lin = torch.arange(total, device=device, dtype=torch.int32).sub_(first[local_g - pos])
    del first
    bx0, by0, w_box = boxes.index_select(1, local_g)
    row = torch.div(lin, w_box, rounding_mode="floor")
    px = lin.sub_(row * w_box).add_(bx0)
    py = row.add_(by0)
    del bx0, by0, w_box
    pix = py * width + px
    if pos > 0:
        # Candidates on finished pixels (hidden layers under a saturated front) are dropped before the
        # float work (in the first group no pixel is finished yet).
        live = torch.nonzero(~done[pix])[:, 0]
        pix, px, py, local_g = torch.stack([pix, px, py, local_g]).index_select(1, live)
        del live
    u, v, ca, cb, cc, logop = params.index_select(1, local_g)
    dx = px.to(u.dtype).add_(0.5).sub_(u)
    dy = py.to(u.dtype).add_(0.5).sub_(v)
    del px, py, u, v
    power = ca.mul_(dx).mul_(dx).addcmul_(cc.mul_(dy), dy).mul_(-0.5)
    power.sub_(cb.mul_(dx).mul_(dy)).add_(logop)
    del dx, dy, ca, cb, cc, logop
    alpha = power.to(torch.float32).clamp_(min=POWER_MIN).exp_().clamp_(max=ALPHA_MAX)
    del power
    sel = torch.nonzero(alpha >= ALPHA_MIN)[:, 0]
    if sel.numel() == 0:
        return
    pix, alpha, gi = pix[sel], alpha[sel], local_g[sel]
    del sel, local_g
    # Pairs were generated Gaussian by Gaussian in depth order: a stable sort by pixel makes each
    # pixel's run contiguous and front to back.
    pix, perm = torch.sort(pix, stable=True)
    alpha, gi = alpha[perm].to(torch.float64), gi[perm]
    del perm
    lg = torch.log1p(-alpha)
    incl = torch.cumsum(lg, 0)
    excl = incl - lg
    # The running sum before each pixel's run (its value at the run's first pair), scattered to the
    # pixel and gathered back: only run starts add a non-zero, so the sum is exact (and needs no sync).
    start = torch.ones(pix.shape[0], dtype=torch.bool, device=device)
    start[1:] = pix[1:] != pix[:-1]
    run_base = torch.zeros_like(log_t).index_add_(0, pix, excl * start)
    base = (run_base.sub_(log_t))[pix]                           # carry the pixel's transmittance in
    del start, run_base
    t_incl = torch.exp(incl - base)
    take = t_incl >= T_MIN                                       # a prefix of each pixel's run
    w = alpha.mul_(torch.exp(excl.sub_(base))).to(acc.dtype).mul_(take)
    del incl, excl, base
    acc.index_add_(1, pix, shade.index_select(1, gi).mul_(w))
    log_t.index_add_(0, pix, lg.mul_(take))
    refused = torch.zeros(log_t.shape[0], dtype=torch.int32, device=device)
    refused.index_add_(0, pix, (~take).to(torch.int32))
    done |= refused > 0                                          # the first refused splat ends the pixel


def render_gaussians(gaussian, extrinsics: torch.Tensor, intrinsics: torch.Tensor, resolution,
                     near: float = 0.8, far: float = 1.6, bg_color: Sequence[float] = (0.0, 0.0, 0.0),
                     kernel_size: float = 0.1, tile_size: int = TILE_SIZE,
                     cancel: CancelCheck = None, *, opacity_compensation: bool = True,
                     cull_far: bool = False, work_budget: Optional[int] = None) -> dict:
    """Render a `Gaussian` with OpenCV extrinsics [4,4] and normalised intrinsics [3,3].

    resolution: int (square) or (height, width). Returns ``color`` [3,H,W] (not clipped), ``alpha``
    [1,H,W] and ``depth`` [1,H,W] (sum of alpha-weighted camera z). Compositing runs in the fast
    kernel where ``trellis.fastpaths`` allows, else in ``composite_torch`` (``work_budget``: its
    candidate pairs per group; ``tile_size``: the kernel's tiles). ``cancel()`` is polled between
    steps and raises `Cancelled` when it returns True.
    """
    out = render_gaussian_views(gaussian, torch.as_tensor(extrinsics).reshape(1, 4, 4),
                                torch.as_tensor(intrinsics).reshape(1, 3, 3), resolution, near, far, bg_color,
                                kernel_size, tile_size, cancel, opacity_compensation=opacity_compensation,
                                cull_far=cull_far, work_budget=work_budget)
    return {key: img[0] for key, img in out.items()}


def render_gaussian_views(gaussian, extrinsics: torch.Tensor, intrinsics: torch.Tensor, resolution,
                          near: float = 0.8, far: float = 1.6, bg_color: Sequence[float] = (0.0, 0.0, 0.0),
                          kernel_size: float = 0.1, tile_size: int = TILE_SIZE,
                          cancel: CancelCheck = None, *, opacity_compensation: bool = True,
                          cull_far: bool = False, work_budget: Optional[int] = None) -> dict:
    """`render_gaussians` from K cameras at once: extrinsics [K,4,4], intrinsics [K,3,3], the same other arguments.
    Returns ``color`` [K,3,H,W] (not clipped), ``alpha`` and ``depth`` [K,1,H,W].

    Several views are composited as one tall image of K bands, each a whole number of tiles high, with every
    (Gaussian, view) pair projected by one ``project`` call and binned into its own band only (``row0`` / ``row1``):
    the same compositing dispatch as one view's, so K frames cost one projection, one binning and one compositing
    launch. From a thread beside other GPU work (the app's preview beside the bake) that is what matters: every launch
    from Python takes and gives back the interpreter lock. A view equals its own render up to float32 rounding of its
    band's offset (a splat of band b has ``v + b * band_height`` in the float32 table: at most ~5e-4 px for 8 views of
    1024 px); one view is exactly the single render.
    """
    height, width = image_size(resolution)
    xyz = gaussian.get_xyz
    device, dtype = xyz.device, xyz.dtype
    extrinsics = torch.as_tensor(extrinsics, dtype=dtype, device=device).reshape(-1, 4, 4)
    intrinsics = torch.as_tensor(intrinsics, dtype=dtype, device=device).reshape(-1, 3, 3)
    if extrinsics.shape[0] != intrinsics.shape[0]:
        raise ValueError(f"{extrinsics.shape[0]} extrinsics for {intrinsics.shape[0]} intrinsics")
    views, n = extrinsics.shape[0], xyz.shape[0]
    # whole tiles, so that no tile holds rows of two views; one view needs no band
    band = height if views == 1 else -(-height // tile_size) * tile_size
    bg = torch.as_tensor(bg_color, dtype=dtype, device=device).reshape(3)
    check(cancel)
    with torch.no_grad():
        proj = project(xyz, gaussian.get_scaling, gaussian.get_rotation, gaussian.get_opacity.reshape(-1),
                       extrinsics, intrinsics, width, height, near, far, cull_far, kernel_size,
                       opacity_compensation)
        view = torch.div(proj["idx"], max(n, 1), rounding_mode="floor")
        row0 = view * band
        proj.update(v=proj["v"] + row0.to(proj["v"].dtype), row0=row0, row1=row0 + height)
        colors = (SH_C0 * gaussian.get_features.reshape(-1, 3)[proj["idx"] - view * n] + 0.5).clamp(min=0)
        del view
        out = fastpaths.dispatch("gaussian_composite", device, composite_torch, proj, colors, width, views * band,
                                 bg, tile_size, cancel, work_budget=work_budget)
    return {key: img.view(img.shape[0], views, band, width)[:, :, :height].transpose(0, 1)
            for key, img in out.items()}
