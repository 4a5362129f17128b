"""Triton kernel for the triangle set-up of `trellis.renderers.mesh_render.rasterize` (CUDA only): the fast kernel
of the ``mesh_setup`` pair whose PyTorch twin is ``mesh_render.triangle_setup_torch`` (same arguments, bit-identical
outputs). Chosen by ``trellis.fastpaths``.

One thread per triangle does what the twin does with ~100 element-wise launches over all triangles: the corners'
pixel coordinates (float64) snapped to the 1/256-pixel grid (round half to even), the three integer edge equations
with the fill rule's tie terms, the candidate box anchored at its first pixel centre, and the inverse-depth plane
from the unsnapped corners. The plane's float64 products and sums are written as PTX ``mul.rn`` / ``add.rn`` /
``sub.rn`` (an instruction with an explicit rounding mode is never fused into an FMA), so every rounding happens
where the twin's separate launches round; the divisions are IEEE (``div.rn.f64``) as in PyTorch.
"""
from __future__ import annotations

import torch

from . import AVAILABLE, tl, triton

# Triangles per program. The constants in the kernel are mesh_render's: SUBPIXEL_BITS = 8 (1/256 pixel, pixel centres
# at +128) and GUARD = 2**29.
BLOCK = 128


if AVAILABLE:  # pragma: no cover - needs a CUDA device
    @triton.jit
    def _mul(a, b):
        return tl.inline_asm_elementwise("mul.rn.f64 $0, $1, $2;", "=d,d,d", [a, b], dtype=tl.float64,
                                         is_pure=True, pack=1)

    @triton.jit
    def _add(a, b):
        return tl.inline_asm_elementwise("add.rn.f64 $0, $1, $2;", "=d,d,d", [a, b], dtype=tl.float64,
                                         is_pure=True, pack=1)

    @triton.jit
    def _sub(a, b):
        return tl.inline_asm_elementwise("sub.rn.f64 $0, $1, $2;", "=d,d,d", [a, b], dtype=tl.float64,
                                         is_pure=True, pack=1)

    @triton.jit
    def _rint(a):
        return tl.inline_asm_elementwise("cvt.rni.f64.f64 $0, $1;", "=d,d", [a], dtype=tl.float64,
                                         is_pure=True, pack=1)

    @triton.jit
    def _corner(clip_ptr, faces_ptr, t, c: tl.constexpr, m, half_w, half_h, NDC_Y_UP: tl.constexpr):
        vi = tl.load(faces_ptr + t * 3 + c, mask=m, other=0)
        cx = tl.load(clip_ptr + vi * 4 + 0, mask=m, other=0.0)
        cy = tl.load(clip_ptr + vi * 4 + 1, mask=m, other=0.0)
        cw = tl.load(clip_ptr + vi * 4 + 3, mask=m, other=1.0)
        # (no product here feeds a sum, so nothing can be fused: plain operators round as the twin's launches)
        x = (cx / cw + 1.0) * half_w
        if NDC_Y_UP:
            y = (1.0 - cy / cw) * half_h
        else:
            y = (cy / cw + 1.0) * half_h
        ok = (cw > 0) & (_sub(x, x) == 0.0) & (_sub(y, y) == 0.0)           # finite: x - x is 0, else NaN
        ok = ok & (tl.abs(x) * 256.0 < 536870912.0) & (tl.abs(y) * 256.0 < 536870912.0)     # GUARD = 2**29
        fx = tl.where(ok, _rint(x * 256.0), 0.0).to(tl.int64)
        fy = tl.where(ok, _rint(y * 256.0), 0.0).to(tl.int64)
        return x, y, cw, fx, fy, ok

    @triton.jit
    def _edge(ax, ay, bx, by, s, j0, i0, valid, coefs_ptr, t, k: tl.constexpr, m):
        dx = bx - ax
        dy = by - ay
        owner = (dy > 0) | ((dy == 0) & (dx > 0))
        tie = (owner == (s > 0)).to(tl.int64)
        a = -s * dy
        b = s * dx
        c = s * (dy * ax - dx * ay) + tie
        ca = a * 256
        cb = b * 256
        cc = c + (a + b) * 128
        e0 = ca * j0 + cb * i0 + cc
        tl.store(coefs_ptr + t * 9 + k * 3 + 0, ca, mask=m)
        tl.store(coefs_ptr + t * 9 + k * 3 + 1, cb, mask=m)
        tl.store(coefs_ptr + t * 9 + k * 3 + 2, tl.where(valid, e0, 0), mask=m)

    @triton.jit
    def _plane_term(xa, ya, xb, yb, wk, farea, ox, oy, g0, gx, gy):
        dx = _sub(xb, xa)
        dy = _sub(yb, ya)
        scale = 1.0 / _mul(farea, wk)
        g0 = _add(g0, _mul(_sub(_mul(dx, _sub(oy, ya)), _mul(dy, _sub(ox, xa))), scale))
        gx = _add(gx, _mul(-dy, scale))
        gy = _add(gy, _mul(dx, scale))
        return g0, gx, gy

    @triton.jit
    def _setup_kernel(clip_ptr, faces_ptr, coefs_ptr, box_ptr, count_ptr, plane_ptr, n, height, width,
                      NDC_Y_UP: tl.constexpr, BLOCK: tl.constexpr):
        t = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
        m = t < n
        half_w = width.to(tl.float64) * 0.5            # exact, in float64 as the twin's width * 0.5
        half_h = height.to(tl.float64) * 0.5
        x0, y0, w0, fx0, fy0, ok0 = _corner(clip_ptr, faces_ptr, t, 0, m, half_w, half_h, NDC_Y_UP)
        x1, y1, w1, fx1, fy1, ok1 = _corner(clip_ptr, faces_ptr, t, 1, m, half_w, half_h, NDC_Y_UP)
        x2, y2, w2, fx2, fy2, ok2 = _corner(clip_ptr, faces_ptr, t, 2, m, half_w, half_h, NDC_Y_UP)
        area = (fx1 - fx0) * (fy2 - fy0) - (fy1 - fy0) * (fx2 - fx0)
        valid = ok0 & ok1 & ok2 & (area != 0)
        s = tl.where(area > 0, 1, -1).to(tl.int64)

        lox = tl.minimum(tl.minimum(fx0, fx1), fx2)
        loy = tl.minimum(tl.minimum(fy0, fy1), fy2)
        hix = tl.maximum(tl.maximum(fx0, fx1), fx2)
        hiy = tl.maximum(tl.maximum(fy0, fy1), fy2)
        j0 = tl.maximum(-((128 - lox) >> 8), 0)          # floor division by 256 of a signed value
        j1 = tl.minimum((hix - 128) >> 8, width - 1)
        i0 = tl.maximum(-((128 - loy) >> 8), 0)
        i1 = tl.minimum((hiy - 128) >> 8, height - 1)
        bw = tl.maximum(j1 - j0 + 1, 0)
        bh = tl.maximum(i1 - i0 + 1, 0)
        tl.store(box_ptr + t * 4 + 0, j0, mask=m)
        tl.store(box_ptr + t * 4 + 1, i0, mask=m)
        tl.store(box_ptr + t * 4 + 2, bw, mask=m)
        tl.store(box_ptr + t * 4 + 3, bh, mask=m)
        tl.store(count_ptr + t, tl.where(valid, bw * bh, 0), mask=m)

        # edge k runs from corner k+1 to corner k+2
        _edge(fx1, fy1, fx2, fy2, s, j0, i0, valid, coefs_ptr, t, 0, m)
        _edge(fx2, fy2, fx0, fy0, s, j0, i0, valid, coefs_ptr, t, 1, m)
        _edge(fx0, fy0, fx1, fy1, s, j0, i0, valid, coefs_ptr, t, 2, m)

        farea = _sub(_mul(_sub(x1, x0), _sub(y2, y0)), _mul(_sub(y1, y0), _sub(x2, x0)))
        farea = tl.where(farea == 0.0, 1.0, farea)
        ox = j0.to(tl.float64) + 0.5
        oy = i0.to(tl.float64) + 0.5
        g0 = tl.zeros([BLOCK], dtype=tl.float64)
        gx = tl.zeros([BLOCK], dtype=tl.float64)
        gy = tl.zeros([BLOCK], dtype=tl.float64)
        g0, gx, gy = _plane_term(x1, y1, x2, y2, w0, farea, ox, oy, g0, gx, gy)
        g0, gx, gy = _plane_term(x2, y2, x0, y0, w1, farea, ox, oy, g0, gx, gy)
        g0, gx, gy = _plane_term(x0, y0, x1, y1, w2, farea, ox, oy, g0, gx, gy)
        tl.store(plane_ptr + t * 3 + 0, g0.to(tl.float32), mask=m)
        tl.store(plane_ptr + t * 3 + 1, gx.to(tl.float32), mask=m)
        tl.store(plane_ptr + t * 3 + 2, gy.to(tl.float32), mask=m)


def triangle_setup(vertices_clip: torch.Tensor, faces: torch.Tensor, height: int, width: int, ndc_y_up: bool):
    """The twin's (coefs [F,3,3] int64, box [F,4] int64, count [F] int64, plane [F,3] float32) in one launch;
    ``NotImplemented`` off CUDA."""
    if not AVAILABLE or vertices_clip.device.type != "cuda":
        return NotImplemented
    from trellis.renderers.mesh_render import triangle_setup_buffers

    clip, f, (coefs, box, count, plane) = triangle_setup_buffers(vertices_clip, faces)
    n = f.shape[0]
    if n:
        _setup_kernel[(triton.cdiv(n, BLOCK),)](clip, f, coefs, box, count, plane, n, int(height), int(width),
                                                NDC_Y_UP=bool(ndc_y_up), BLOCK=BLOCK, num_warps=4)
    return coefs, box, count, plane
