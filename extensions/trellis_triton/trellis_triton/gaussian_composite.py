"""Triton compositing for `trellis.renderers.gaussian_render` (CUDA only): the fast kernel of the pair
whose PyTorch twin is ``gaussian_render.composite_torch`` (same arguments, same result within the
tolerances of tests/gpu/). Chosen by ``trellis.fastpaths``.

Written from the same equations as the twin (see the docstring of `gaussian_render`): projection,
culling and the Mip-filter opacity compensation are shared (``gaussian_render.project``); here the
splats are binned into (tile, depth)-sorted lists (``gaussian_render.kernel_inputs``) and composited.

One program per tile (``tile_size`` x ``tile_size`` pixels, one lane per pixel) walks the tile's
depth-sorted list front to back:

* ``power = log(o) - 0.5 d^T S''^-1 d`` with ``d`` = pixel centre (j + 0.5, i + 0.5) minus the
  projected centre, evaluated in float64 (``WIDE``, as the PyTorch CUDA path does) or float32;
* ``alpha = min(ALPHA_MAX, exp(power))``; alpha < ALPHA_MIN is skipped;
* a Gaussian that would bring the transmittance below T_MIN is not composited and ends the pixel;
* ``color = sum(w c) + T bg``, ``alpha = 1 - T``, ``depth = sum(w z)`` with ``w = alpha T``

(the cut-offs of ``trellis.renderers.gaussian_constants``). The tile stops once all its pixels are
finished (checked every ``BATCH`` list entries). The exp is evaluated in float64 and rounded to float32,
like torch's accurate ``expf``: with ``tl.exp`` on float32, a fast approximation, contributions within a
few ulps of the ALPHA_MIN cut were kept by one path and skipped by the other. Agreement with the twin:
tests/gpu/ states the tolerances, docs/benchmarks/kernels.md#gaussian-compositing the measured differences.
"""
from __future__ import annotations

import torch

from trellis.renderers.gaussian_constants import ALPHA_MAX, ALPHA_MIN, KERNEL_COLUMNS, POWER_MIN, T_MIN, TILE_SIZE

from . import AVAILABLE, tl, triton


if AVAILABLE:  # pragma: no cover - needs a CUDA device
    # The shared cut-offs as compile-time constants of the kernel (Triton reads only constexpr globals).
    _ALPHA_MIN = tl.constexpr(ALPHA_MIN)
    _ALPHA_MAX = tl.constexpr(ALPHA_MAX)
    _T_MIN = tl.constexpr(T_MIN)
    _POWER_MIN = tl.constexpr(POWER_MIN)
    _COLS = tl.constexpr(len(KERNEL_COLUMNS))   # row length of gaussian_render.kernel_inputs' table

    @triton.jit
    def _composite_kernel(sorted_ptr, start_ptr, count_ptr, gdata_ptr, color_ptr, alpha_ptr, depth_ptr,
                          bg_r, bg_g, bg_b, width, height, ntx,
                          TS: tl.constexpr, BATCH: tl.constexpr, WIDE: tl.constexpr):
        tile = tl.program_id(0)
        tx = tile % ntx
        ty = tile // ntx
        p = tl.arange(0, TS * TS)
        col = tx * TS + p % TS
        row = ty * TS + p // TS
        if WIDE:
            px = col.to(tl.float64) + 0.5
            py = row.to(tl.float64) + 0.5
        else:
            px = col.to(tl.float32) + 0.5
            py = row.to(tl.float32) + 0.5
        start = tl.load(start_ptr + tile)
        cnt = tl.load(count_ptr + tile)
        trans = tl.full([TS * TS], 1.0, tl.float32)
        acc_r = tl.zeros([TS * TS], tl.float32)
        acc_g = tl.zeros([TS * TS], tl.float32)
        acc_b = tl.zeros([TS * TS], tl.float32)
        acc_d = tl.zeros([TS * TS], tl.float32)
        alive = tl.full([TS * TS], 1, tl.int32)
        n_alive = tl.sum(alive, axis=0)
        i = cnt * 0
        while (i < cnt) & (n_alive > 0):
            stop = tl.minimum(i + BATCH, cnt)
            for k in range(i, stop):
                g = tl.load(sorted_ptr + start + k).to(tl.int64)
                base = gdata_ptr + g * _COLS
                u = tl.load(base + 0)
                v = tl.load(base + 1)
                ca = tl.load(base + 2)
                cb = tl.load(base + 3)
                cc = tl.load(base + 4)
                logop = tl.load(base + 5)
                cr = tl.load(base + 6)
                cg = tl.load(base + 7)
                cbl = tl.load(base + 8)
                z = tl.load(base + 9)
                if WIDE:
                    dx = px - u.to(tl.float64)
                    dy = py - v.to(tl.float64)
                    q = ca.to(tl.float64) * dx * dx + cc.to(tl.float64) * dy * dy
                    power = (logop.to(tl.float64) - 0.5 * q - cb.to(tl.float64) * dx * dy).to(tl.float32)
                else:
                    dx = px - u
                    dy = py - v
                    power = logop - 0.5 * (ca * dx * dx + cc * dy * dy) - cb * dx * dy
                # exp of the float32 exponent evaluated in float64 and rounded: the keep/skip decision at
                # the 1/255 cut then matches torch's accurate expf (tl.exp on float32 is approximate).
                a = tl.minimum(tl.exp(tl.maximum(power, _POWER_MIN).to(tl.float64)).to(tl.float32), _ALPHA_MAX)
                a = tl.where(a < _ALPHA_MIN, 0.0, a)
                t_next = trans * (1.0 - a)
                take = (alive != 0) & (t_next >= _T_MIN)
                w = tl.where(take, a * trans, 0.0)
                acc_r += w * cr
                acc_g += w * cg
                acc_b += w * cbl
                acc_d += w * z
                trans = tl.where(take, t_next, trans)
                alive = tl.where(take, alive, 0)
            i = stop
            n_alive = tl.sum(alive, axis=0)
        mask = (row < height) & (col < width)
        off = row * width + col
        npx = width * height
        tl.store(color_ptr + off, acc_r + trans * bg_r, mask=mask)
        tl.store(color_ptr + npx + off, acc_g + trans * bg_g, mask=mask)
        tl.store(color_ptr + 2 * npx + off, acc_b + trans * bg_b, mask=mask)
        tl.store(alpha_ptr + off, 1.0 - trans, mask=mask)
        tl.store(depth_ptr + off, acc_d, mask=mask)


def composite(proj, colors, width, height, bg, tile_size=TILE_SIZE, cancel=None, work_budget=None):
    """Composite the projected splats; same outputs as ``gaussian_render.composite_torch``.

    ``work_budget`` is the twin's (unused here). Returns ``NotImplemented`` for inputs the kernel does not
    handle (not CUDA, not float32, a tile size that is not a power of two in 4..32): the dispatcher then
    tries the next path.
    """
    from trellis.renderers.gaussian_render import kernel_inputs
    from trellis.core.callbacks import check

    device = colors.device
    if (not AVAILABLE or device.type != "cuda" or colors.dtype != torch.float32
            or tile_size < 4 or (tile_size & (tile_size - 1)) or tile_size * tile_size > 1024):
        return NotImplemented
    ntx, nty, sorted_g, tile_start, tile_count, table = kernel_inputs(proj, colors, width, height, tile_size)
    check(cancel)
    color = torch.empty(3, height, width, dtype=torch.float32, device=device)
    alpha = torch.empty(1, height, width, dtype=torch.float32, device=device)
    depth = torch.empty(1, height, width, dtype=torch.float32, device=device)
    if ntx * nty == 0:
        return {"color": color, "alpha": alpha, "depth": depth}
    bg = [float(b) for b in bg.tolist()]
    npix = tile_size * tile_size
    _composite_kernel[(ntx * nty,)](
        sorted_g, tile_start, tile_count, table, color, alpha, depth, bg[0], bg[1], bg[2], width, height, ntx,
        TS=tile_size, BATCH=32, WIDE=True, num_warps=max(1, min(8, npix // 32)))
    return {"color": color, "alpha": alpha, "depth": depth}
