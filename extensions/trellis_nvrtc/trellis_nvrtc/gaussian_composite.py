"""Gaussian compositing in CUDA C through NVRTC: the kernel of the ``gaussian_composite`` pair for GPUs
without Triton (PyTorch's Windows wheels, Pascal cards). Twin: ``trellis.renderers.gaussian_render.
composite_torch``; same equations (see that module's docstring) and the cut-offs of
``trellis.renderers.gaussian_constants``.

One thread block per ``TILE_SIZE``² tile, one thread per pixel. The tile's depth-sorted list
(``gaussian_render.kernel_inputs``) is walked front to back in batches of one splat per thread staged in
shared memory; a block stops as soon as all its pixels are finished. Per pixel and splat: the exponent
``log(o) - 0.5 (A dx^2 + C dy^2) - B dx dy`` in double (as the twin and the Triton kernel), rounded to
float, ``alpha = min(ALPHA_MAX, exp(max(power, POWER_MIN)))`` with exp in double, alpha < ALPHA_MIN
skipped, a splat that would bring the transmittance below T_MIN ends the pixel; float accumulation front
to back.
"""
from __future__ import annotations

import torch

from trellis.renderers.gaussian_constants import ALPHA_MAX, ALPHA_MIN, KERNEL_COLUMNS, POWER_MIN, T_MIN, TILE_SIZE

from . import compiled

TILE = TILE_SIZE

# The shared cut-offs reach the CUDA source as macros (repr keeps every double's exact value).
_CONSTANTS = "".join(f"#define {name} ({value!r})\n" for name, value in (
    ("TS", TILE_SIZE), ("COLS", len(KERNEL_COLUMNS)), ("ALPHA_MIN", ALPHA_MIN), ("ALPHA_MAX", ALPHA_MAX),
    ("T_MIN", T_MIN), ("POWER_MIN", POWER_MIN)))

_SOURCE = _CONSTANTS + r"""
extern "C" __global__ void trellis_gaussian_composite(
    const long long* __restrict__ sorted_g, const long long* __restrict__ tile_start,
    const int* __restrict__ tile_count, const float* __restrict__ gdata,
    float* __restrict__ color, float* __restrict__ alpha_out, float* __restrict__ depth_out,
    double bg_r, double bg_g, double bg_b, int width, int height, int ntx)
{
    const int BATCH = TS * TS;
    __shared__ float sh[BATCH * COLS];
    const int tile = blockIdx.x;
    const int p = threadIdx.x;
    const int col = (tile % ntx) * TS + p % TS;
    const int row = (tile / ntx) * TS + p / TS;
    const double px = col + 0.5, py = row + 0.5;
    const long long start = tile_start[tile];
    const int cnt = tile_count[tile];
    const float alpha_min = (float)ALPHA_MIN;
    float T = 1.0f, acc_r = 0.0f, acc_g = 0.0f, acc_b = 0.0f, acc_d = 0.0f;
    int alive = 1;
    for (int base = 0; base < cnt; base += BATCH) {
        if (__syncthreads_count(alive) == 0) break;
        const int k = base + p;
        if (k < cnt) {
            const long long g = sorted_g[start + k];
            for (int j = 0; j < COLS; ++j) sh[p * COLS + j] = gdata[g * COLS + j];
        }
        __syncthreads();
        const int m = min(BATCH, cnt - base);
        for (int i = 0; alive && i < m; ++i) {
            const float* d = sh + i * COLS;
            const double dx = px - (double)d[0];
            const double dy = py - (double)d[1];
            const double q = (double)d[2] * dx * dx + (double)d[4] * dy * dy;
            const float power = (float)((double)d[5] - 0.5 * q - (double)d[3] * dx * dy);
            float a = (float)exp((double)fmaxf(power, (float)POWER_MIN));
            a = fminf(a, (float)ALPHA_MAX);
            if (a < alpha_min) continue;
            const float t_next = T * (1.0f - a);
            if (t_next < (float)T_MIN) { alive = 0; break; }
            const float w = a * T;
            acc_r += w * d[6];
            acc_g += w * d[7];
            acc_b += w * d[8];
            acc_d += w * d[9];
            T = t_next;
        }
        __syncthreads();
    }
    if (row < height && col < width) {
        const int off = row * width + col;
        const int npx = width * height;
        color[off] = acc_r + T * (float)bg_r;
        color[npx + off] = acc_g + T * (float)bg_g;
        color[2 * npx + off] = acc_b + T * (float)bg_b;
        alpha_out[off] = 1.0f - T;
        depth_out[off] = acc_d;
    }
}
"""

def composite(proj, colors, width, height, bg, tile_size=TILE_SIZE, cancel=None, work_budget=None):
    """Composite the projected splats; same outputs as ``gaussian_render.composite_torch``.

    Returns ``NotImplemented`` where the kernel does not apply (not CUDA, not float32, ``tile_size`` not
    16): the dispatcher then runs the twin. ``work_budget`` is the twin's.
    """
    from trellis.renderers.gaussian_render import kernel_inputs
    from trellis.core.callbacks import check

    device = colors.device
    if device.type != "cuda" or colors.dtype != torch.float32 or tile_size != TILE:
        return NotImplemented
    kernel = compiled(_SOURCE, "trellis_gaussian_composite", device)
    ntx, nty, sorted_g, tile_start, tile_count, table = kernel_inputs(proj, colors, width, height, TILE)
    check(cancel)
    color = torch.empty(3, height, width, dtype=torch.float32, device=device)
    alpha = torch.empty(1, height, width, dtype=torch.float32, device=device)
    depth = torch.empty(1, height, width, dtype=torch.float32, device=device)
    if ntx * nty == 0:
        return {"color": color, "alpha": alpha, "depth": depth}
    bg = [float(b) for b in bg.tolist()]
    with torch.cuda.device(device):
        kernel(grid=(ntx * nty, 1, 1), block=(TILE * TILE, 1, 1),
               args=[sorted_g, tile_start, tile_count, table, color, alpha, depth,
                     bg[0], bg[1], bg[2], int(width), int(height), int(ntx)])
    return {"color": color, "alpha": alpha, "depth": depth}
