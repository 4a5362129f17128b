"""Triton kernel for the coverage + depth-test pass of `trellis.renderers.mesh_render.rasterize` (CUDA
only): the fast kernel of the pair whose PyTorch twin is ``mesh_render.raster_keys_torch`` (same
arguments, bit-identical keys). Chosen by ``trellis.fastpaths``.

The triangle set-up (``mesh_setup``: integer edge
equations anchored at the first candidate pixel, candidate box, float depth plane) is shared and the
candidates of all triangles are covered by ONE launch:

* work item = (triangle, tile of ``BLOCK`` consecutive candidates of its box in row-major order),
  built on the device from the per-triangle candidate counts (so a large triangle is spread over
  many programs and a tiny one costs one);
* per candidate (dj, di) inside the box: the three int64 edge functions ``A*dj + B*di + E0`` must
  all be > 0 (the exact fill rule of the set-up);
* depth key: ``1 / max(g0 + gx*dj + gy*di, 1e-30)`` evaluated in float64 from the float32 plane
  (the products are exact in float64, so fused multiply-adds cannot change the result) and rounded
  to float32; packed as (float bits << 32) | face index and merged with an int64 atomic min.

The keys are bit-identical to the PyTorch path's (tests/gpu/test_fast_paths_gpu.py and
tests/gpu/test_kernel_table_gpu.py on the GPU, and benchmarks/mesh_render_gpu.py).
"""
from __future__ import annotations

import torch

from . import AVAILABLE, tl, triton

BLOCK = 64


if AVAILABLE:  # pragma: no cover - needs a CUDA device
    @triton.jit
    def _raster_kernel(item_tri_ptr, item_tile_ptr, coefs_ptr, box_ptr, plane_ptr, keys_ptr, width,
                       BLOCK: tl.constexpr):
        item = tl.program_id(0)
        t = tl.load(item_tri_ptr + item).to(tl.int64)
        tile = tl.load(item_tile_ptr + item).to(tl.int64)
        j0 = tl.load(box_ptr + t * 4 + 0)
        i0 = tl.load(box_ptr + t * 4 + 1)
        bw = tl.load(box_ptr + t * 4 + 2)
        bh = tl.load(box_ptr + t * 4 + 3)
        lin = tile * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
        inside = lin < bw * bh
        dj = lin % bw
        di = lin // bw
        for k in tl.static_range(3):
            a = tl.load(coefs_ptr + t * 9 + k * 3 + 0)
            b = tl.load(coefs_ptr + t * 9 + k * 3 + 1)
            c = tl.load(coefs_ptr + t * 9 + k * 3 + 2)
            inside = inside & ((a * dj + b * di + c) > 0)
        g0 = tl.load(plane_ptr + t * 3 + 0).to(tl.float64)
        gx = tl.load(plane_ptr + t * 3 + 1).to(tl.float64)
        gy = tl.load(plane_ptr + t * 3 + 2).to(tl.float64)
        invw = g0 + gx * dj.to(tl.float64)
        invw = invw + gy * di.to(tl.float64)
        invw = tl.maximum(invw, 1e-30)
        depth = (1.0 / invw).to(tl.float32)  # float64 division is IEEE-rounded (div.rn.f64)
        key = (depth.to(tl.int32, bitcast=True).to(tl.int64) << 32) | t
        pix = (i0 + di) * width + (j0 + dj)
        tl.atomic_min(keys_ptr + pix, key, mask=inside, sem="relaxed")


def raster_keys(coefs: torch.Tensor, box: torch.Tensor, count: torch.Tensor, plane: torch.Tensor,
                keys: torch.Tensor, width: int, cancel=None, budget=None):
    """Merge the depth keys of every candidate pixel into ``keys`` (flat int64, in place).

    coefs [F,3,3] int64, box [F,4] int64 (j0, i0, bw, bh), count [F] int64 candidates (0 for
    skipped triangles), plane [F,3] float32 — as returned by ``mesh_render.triangle_setup_torch`` (or its kernel).
    ``cancel`` and ``budget`` are the twin's (one launch needs neither). Returns None, or
    ``NotImplemented`` off CUDA.
    """
    if not AVAILABLE or keys.device.type != "cuda":
        return NotImplemented
    from trellis.renderers.mesh_render import candidate_tiles

    items = candidate_tiles(count, BLOCK)
    if items is None:
        return None
    item_tri, item_tile = items
    total = item_tri.shape[0]
    _raster_kernel[(total,)](item_tri, item_tile, coefs.contiguous(), box.contiguous(), plane.contiguous(),
                             keys, width, BLOCK=BLOCK, num_warps=2)
