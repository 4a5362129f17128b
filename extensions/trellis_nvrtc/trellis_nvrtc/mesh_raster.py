"""The rasteriser's coverage + depth-test pass in CUDA C through NVRTC: the kernel of the ``mesh_raster``
pair for GPUs without Triton. Twin: ``trellis.renderers.mesh_render.raster_keys_torch``; keys
bit-identical (tests/gpu/).

Scanline spans, as the twin: one warp per work item (triangle, tile of ``ROWS`` rows of its box;
``mesh_render.candidate_tiles`` over the rows). Each lane takes one row and finds the row's covered span
[lo, hi] exactly: every int64 edge function ``A*dj + B*di + E0`` is > 0 on a half-line of dj whose end is
an integer floor division. A warp prefix sum of the span lengths then numbers the row tile's covered pixels,
and the lanes walk them 32 at a time, each finding its row by a binary search over the prefix (shuffles). Only
covered pixels get a depth key: ``1 / max(g0 + gx*dj + gy*di, 1e-30)`` in double from the float32 plane (the
products are exact, so contraction into FMAs cannot change it), rounded to float, packed as
(float bits << 32) | face and merged with a 64-bit atomic min (keys are non-negative, so the unsigned comparison
orders them as the signed one). Against a lane per candidate of the box (most of a small or thin triangle's box
is outside it), the hidden-face removal's views take about half the time (docs/benchmarks/kernels.md#visibility).
"""
from __future__ import annotations

import torch

from . import compiled

ROWS = 32                  # rows per work item: one per lane of a warp (fixed: the kernel is written for 32)
WARPS = 4                  # work items per thread block

_SOURCE = r"""
__device__ __forceinline__ long long floor_div(long long n, long long d)    // d > 0
{
    const long long q = n / d;
    return (n % d != 0 && n < 0) ? q - 1 : q;
}

extern "C" __global__ void trellis_raster_spans(
    const int* __restrict__ item_tri, const int* __restrict__ item_tile, int n_items,
    const long long* __restrict__ coefs, const long long* __restrict__ box,
    const float* __restrict__ plane, unsigned long long* keys, int width)
{
    const unsigned full = 0xffffffffu;
    const int lane = threadIdx.x & 31;
    const int item = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (item >= n_items) return;                       // the whole warp: no shuffle below misses a lane
    const long long t = item_tri[item];
    const long long row0 = (long long)item_tile[item] * 32;
    const long long j0 = box[t * 4 + 0], i0 = box[t * 4 + 1], bw = box[t * 4 + 2], bh = box[t * 4 + 3];
    // this lane's row: its covered span [lo, hi] (empty when hi < lo)
    const long long di = row0 + lane;
    long long lo = 0, hi = bw - 1;
    if (di < bh) {
        for (int k = 0; k < 3; ++k) {
            const long long a = coefs[t * 9 + k * 3 + 0];
            const long long e = coefs[t * 9 + k * 3 + 1] * di + coefs[t * 9 + k * 3 + 2];
            if (a > 0) lo = max(lo, floor_div(-e, a) + 1);           // A*dj + E > 0  <=>  dj >= floor(-E/A) + 1
            else if (a < 0) hi = min(hi, -1 - floor_div(-e, -a));    //                <=>  dj <= ceil(E/|A|) - 1
            else if (e <= 0) hi = -1;                                // A = 0: all or nothing
        }
    } else {
        hi = -1;
    }
    const int len = hi >= lo ? (int)(hi - lo + 1) : 0;
    int incl = len;                                    // inclusive prefix sum of the span lengths
    for (int off = 1; off < 32; off <<= 1) {
        const int v = __shfl_up_sync(full, incl, off);
        if (lane >= off) incl += v;
    }
    const int excl = incl - len;
    const int total = __shfl_sync(full, incl, 31);
    const double g0 = (double)plane[t * 3 + 0], gx = (double)plane[t * 3 + 1], gy = (double)plane[t * 3 + 2];
    for (int base = 0; base < total; base += 32) {
        const int f = base + lane;                     // the f-th covered pixel of the tile: row r, the last
        int r = 0;                                     // row whose span starts at or before f
        for (int step = 16; step > 0; step >>= 1) {
            if (__shfl_sync(full, excl, r + step) <= f) r += step;
        }
        const long long lo_r = __shfl_sync(full, lo, r);
        const int start_r = __shfl_sync(full, excl, r);
        if (f < total) {
            const long long dj = lo_r + (f - start_r), dr = row0 + r;
            double invw = g0 + gx * (double)dj;
            invw = invw + gy * (double)dr;
            invw = fmax(invw, 1e-30);
            const float depth = (float)(1.0 / invw);
            const unsigned long long key =
                ((unsigned long long)(unsigned int)__float_as_int(depth) << 32) | (unsigned long long)t;
            atomicMin(keys + (i0 + dr) * width + (j0 + dj), key);
        }
    }
}
"""


def raster_keys(coefs: torch.Tensor, box: torch.Tensor, count: torch.Tensor, plane: torch.Tensor,
                keys: torch.Tensor, width: int, cancel=None, budget=None):
    """Merge the depth keys of every candidate pixel into ``keys`` (flat int64, in place); the twin's
    arguments (``cancel``/``budget`` unused: one launch). ``NotImplemented`` off CUDA."""
    from trellis.renderers.mesh_render import candidate_tiles

    if keys.device.type != "cuda":
        return NotImplemented
    kernel = compiled(_SOURCE, "trellis_raster_spans", keys.device)
    box = box.to(torch.int64).contiguous()
    items = candidate_tiles(torch.where(count > 0, box[:, 3], torch.zeros_like(count)), ROWS)
    if items is None:
        return None
    item_tri, item_tile = items
    n = int(item_tri.shape[0])
    with torch.cuda.device(keys.device):
        kernel(grid=(-(-n // WARPS), 1, 1), block=(32 * WARPS, 1, 1),
               args=[item_tri.contiguous(), item_tile.contiguous(), n, coefs.to(torch.int64).contiguous(), box,
                     plane.to(torch.float32).contiguous(), keys, int(width)])
    return None
