"""The rasteriser's coverage + depth-test pass in CUDA C through NVRTC: the kernel of the ``mesh_raster``
pair for GPUs without Triton. Twin: ``trellis.renderers.mesh_render.raster_keys_torch``; keys
bit-identical (tests/gpu/).

Work items = (triangle, tile of 64 consecutive candidates of its box, row-major), one thread block of 64
threads each (``mesh_render.candidate_tiles``). Per candidate: the three int64 edge functions
``A*dj + B*di + E0`` must all be > 0; the depth key ``1 / max(g0 + gx*dj + gy*di, 1e-30)`` is evaluated in
double from the float32 plane (the products are exact, so contraction into FMAs cannot change it),
rounded to float, packed as (float bits << 32) | face and merged with a 64-bit atomic min (keys are
non-negative, so the unsigned comparison orders them as the signed one).
"""
from __future__ import annotations

import torch

from . import compiled

BLOCK = 64

_SOURCE = r"""
extern "C" __global__ void trellis_raster_keys(
    const int* __restrict__ item_tri, const int* __restrict__ item_tile,
    const long long* __restrict__ coefs, const long long* __restrict__ box,
    const float* __restrict__ plane, unsigned long long* keys, int width)
{
    const long long t = item_tri[blockIdx.x];
    const long long lin = (long long)item_tile[blockIdx.x] * 64 + threadIdx.x;
    const long long j0 = box[t * 4 + 0], i0 = box[t * 4 + 1], bw = box[t * 4 + 2], bh = box[t * 4 + 3];
    if (lin >= bw * bh) return;
    const long long dj = lin % bw, di = lin / bw;
    for (int k = 0; k < 3; ++k) {
        const long long* c = coefs + t * 9 + k * 3;
        if (c[0] * dj + c[1] * di + c[2] <= 0) return;
    }
    const double g0 = (double)plane[t * 3 + 0], gx = (double)plane[t * 3 + 1], gy = (double)plane[t * 3 + 2];
    double invw = g0 + gx * (double)dj;
    invw = invw + gy * (double)di;
    invw = fmax(invw, 1e-30);
    const float depth = (float)(1.0 / invw);
    const unsigned long long key =
        ((unsigned long long)(unsigned int)__float_as_int(depth) << 32) | (unsigned long long)t;
    atomicMin(keys + (i0 + di) * width + (j0 + dj), key);
}
"""

def raster_keys(coefs: torch.Tensor, box: torch.Tensor, count: torch.Tensor, plane: torch.Tensor,
                keys: torch.Tensor, width: int, cancel=None, budget=None):
    """Merge the depth keys of every candidate pixel into ``keys`` (flat int64, in place); the twin's
    arguments (``cancel``/``budget`` unused: one launch). ``NotImplemented`` off CUDA."""
    from trellis.renderers.mesh_render import candidate_tiles

    if keys.device.type != "cuda":
        return NotImplemented
    kernel = compiled(_SOURCE, "trellis_raster_keys", keys.device)
    items = candidate_tiles(count, BLOCK)
    if items is None:
        return None
    item_tri, item_tile = items
    with torch.cuda.device(keys.device):
        kernel(grid=(item_tri.shape[0], 1, 1), block=(BLOCK, 1, 1),
               args=[item_tri.contiguous(), item_tile.contiguous(), coefs.to(torch.int64).contiguous(),
                     box.to(torch.int64).contiguous(), plane.to(torch.float32).contiguous(), keys, int(width)])
    return None
