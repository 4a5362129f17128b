"""The rasteriser's triangle set-up in CUDA C through NVRTC: the kernel of the ``mesh_setup`` pair for GPUs without
Triton. Twin: ``trellis.renderers.mesh_render.triangle_setup_torch``; outputs bit-identical (tests/gpu/).

One thread per triangle: the corners' float64 pixel coordinates snapped to the 1/256-pixel grid (``rint``: half to
even), the integer edge equations with the fill rule's tie terms, the candidate box at its first pixel centre, and
the inverse-depth plane from the unsnapped corners. The plane's products and sums are ``__dmul_rn`` / ``__dadd_rn``
/ ``__dsub_rn``, which the compiler never fuses into FMAs, so each rounds where the twin's launches round.
"""
from __future__ import annotations

import torch

from . import compiled

BLOCK = 128

_SOURCE = r"""
struct Corner { double x, y, w; long long fx, fy; bool ok; };

__device__ __forceinline__ Corner corner(const double* clip, long long v, double half_w, double half_h, int ndc_y_up) {
    Corner c;
    const double cx = clip[v * 4 + 0], cy = clip[v * 4 + 1], cw = clip[v * 4 + 3];
    c.x = (cx / cw + 1.0) * half_w;
    c.y = ndc_y_up ? (1.0 - cy / cw) * half_h : (cy / cw + 1.0) * half_h;
    c.w = cw;
    c.ok = cw > 0.0 && __dsub_rn(c.x, c.x) == 0.0 && __dsub_rn(c.y, c.y) == 0.0
           && fabs(c.x) * 256.0 < 536870912.0 && fabs(c.y) * 256.0 < 536870912.0;
    c.fx = c.ok ? (long long)rint(c.x * 256.0) : 0;
    c.fy = c.ok ? (long long)rint(c.y * 256.0) : 0;
    return c;
}

__device__ __forceinline__ void edge(const Corner& a, const Corner& b, long long s, long long j0, long long i0,
                                     bool valid, long long* out) {
    const long long dx = b.fx - a.fx, dy = b.fy - a.fy;
    const bool owner = dy > 0 || (dy == 0 && dx > 0);
    const long long tie = (owner == (s > 0)) ? 1 : 0;
    const long long A = -s * dy, B = s * dx;
    const long long C = s * (dy * a.fx - dx * a.fy) + tie;
    const long long ca = A * 256, cb = B * 256, cc = C + (A + B) * 128;
    out[0] = ca;
    out[1] = cb;
    out[2] = valid ? ca * j0 + cb * i0 + cc : 0;
}

__device__ __forceinline__ void plane_term(const Corner& a, const Corner& b, double wk, double farea, double ox,
                                           double oy, double& g0, double& gx, double& gy) {
    const double dx = __dsub_rn(b.x, a.x), dy = __dsub_rn(b.y, a.y);
    const double scale = 1.0 / __dmul_rn(farea, wk);
    const double t = __dsub_rn(__dmul_rn(dx, __dsub_rn(oy, a.y)), __dmul_rn(dy, __dsub_rn(ox, a.x)));
    g0 = __dadd_rn(g0, __dmul_rn(t, scale));
    gx = __dadd_rn(gx, __dmul_rn(-dy, scale));
    gy = __dadd_rn(gy, __dmul_rn(dx, scale));
}

extern "C" __global__ void trellis_triangle_setup(
    const double* __restrict__ clip, const long long* __restrict__ faces, long long* coefs, long long* box,
    long long* count, float* plane, int n, int height, int width, int ndc_y_up)
{
    const long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= n) return;
    const double half_w = (double)width * 0.5, half_h = (double)height * 0.5;
    const Corner c0 = corner(clip, faces[t * 3 + 0], half_w, half_h, ndc_y_up);
    const Corner c1 = corner(clip, faces[t * 3 + 1], half_w, half_h, ndc_y_up);
    const Corner c2 = corner(clip, faces[t * 3 + 2], half_w, half_h, ndc_y_up);
    const long long area = (c1.fx - c0.fx) * (c2.fy - c0.fy) - (c1.fy - c0.fy) * (c2.fx - c0.fx);
    const bool valid = c0.ok && c1.ok && c2.ok && area != 0;
    const long long s = area > 0 ? 1 : -1;

    const long long lox = min(min(c0.fx, c1.fx), c2.fx), loy = min(min(c0.fy, c1.fy), c2.fy);
    const long long hix = max(max(c0.fx, c1.fx), c2.fx), hiy = max(max(c0.fy, c1.fy), c2.fy);
    const long long j0 = max(-((128 - lox) >> 8), 0LL);        // floor division by 256 of a signed value
    const long long j1 = min((hix - 128) >> 8, (long long)width - 1);
    const long long i0 = max(-((128 - loy) >> 8), 0LL);
    const long long i1 = min((hiy - 128) >> 8, (long long)height - 1);
    const long long bw = max(j1 - j0 + 1, 0LL), bh = max(i1 - i0 + 1, 0LL);
    box[t * 4 + 0] = j0;
    box[t * 4 + 1] = i0;
    box[t * 4 + 2] = bw;
    box[t * 4 + 3] = bh;
    count[t] = valid ? bw * bh : 0;

    edge(c1, c2, s, j0, i0, valid, coefs + t * 9 + 0);        // edge k runs from corner k+1 to corner k+2
    edge(c2, c0, s, j0, i0, valid, coefs + t * 9 + 3);
    edge(c0, c1, s, j0, i0, valid, coefs + t * 9 + 6);

    double farea = __dsub_rn(__dmul_rn(__dsub_rn(c1.x, c0.x), __dsub_rn(c2.y, c0.y)),
                             __dmul_rn(__dsub_rn(c1.y, c0.y), __dsub_rn(c2.x, c0.x)));
    if (farea == 0.0) farea = 1.0;
    const double ox = (double)j0 + 0.5, oy = (double)i0 + 0.5;
    double g0 = 0.0, gx = 0.0, gy = 0.0;
    plane_term(c1, c2, c0.w, farea, ox, oy, g0, gx, gy);
    plane_term(c2, c0, c1.w, farea, ox, oy, g0, gx, gy);
    plane_term(c0, c1, c2.w, farea, ox, oy, g0, gx, gy);
    plane[t * 3 + 0] = (float)g0;
    plane[t * 3 + 1] = (float)gx;
    plane[t * 3 + 2] = (float)gy;
}
"""


def triangle_setup(vertices_clip: torch.Tensor, faces: torch.Tensor, height: int, width: int, ndc_y_up: bool):
    """The twin's (coefs [F,3,3] int64, box [F,4] int64, count [F] int64, plane [F,3] float32) in one launch;
    ``NotImplemented`` off CUDA."""
    if vertices_clip.device.type != "cuda":
        return NotImplemented
    from trellis.renderers.mesh_render import triangle_setup_buffers

    clip, f, (coefs, box, count, plane) = triangle_setup_buffers(vertices_clip, faces)
    n = f.shape[0]
    if n:
        kernel = compiled(_SOURCE, "trellis_triangle_setup", clip.device)
        with torch.cuda.device(clip.device):
            kernel(grid=((n + BLOCK - 1) // BLOCK, 1, 1), block=(BLOCK, 1, 1),
                   args=[clip, f, coefs, box, count, plane, int(n), int(height), int(width), int(bool(ndc_y_up))])
    return coefs, box, count, plane
