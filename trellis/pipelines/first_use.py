"""What a process's first sampling call pays once, brought up without the model, so that it can happen beside the
model load instead of inside the first job: the lazily imported variable-length attention module and its kernels,
dense attention, cuBLAS / cuBLASLt (the GELU epilogue too), cuDNN's convolutions, and the sparse conv's fast path
(Triton's per-process cache key, its kernel launcher; or the NVRTC kernels). Inputs of the job's shapes filled with
constants (no generator is touched: other threads may draw from it), results thrown away
(docs/benchmarks/app.md#launch-to-first-glb).
"""
from __future__ import annotations

import time
from typing import Callable, NamedTuple, Optional

import torch
import torch.nn.functional as F

from ..modules.attention import dense_attention, varlen_attention
from ..modules.sparse import SparseTensor
from ..modules.sparse.conv import submanifold_conv3d
from ..modules.transformer import eager_fast_path, linear_gelu_torch

__all__ = ["Shapes", "IMAGE_LARGE", "TINY", "FULL_SHAPES_FREE_BYTES", "STEPS", "warm_libraries"]


class Shapes(NamedTuple):
    channels: int
    heads: int
    head_dim: int
    tokens: int
    context: int
    image: int


# TRELLIS-image-large's hot calls, so that cuBLAS, cuDNN and the attention kernels pick (and load) the kernels the job
# will use: 1024 channels, 16 heads of 64, stage 1's 16^3 tokens (a CFG pair), DINOv2's 1374 tokens of 14 px patches of
# a 518 px image. Other models' shapes differ a little; what is shared (libraries, handles, imports) is warmed all the
# same. TINY: where no kernel is loaded (a CPU), only the code path.
IMAGE_LARGE = Shapes(channels=1024, heads=16, head_dim=64, tokens=4096, context=1374, image=518)
TINY = Shapes(channels=64, heads=2, head_dim=32, tokens=32, context=16, image=28)
# IMAGE_LARGE's steps hold up to ~0.2 GiB at once: a GPU with less than this free gets TINY (the model load beside it
# comes first).
FULL_SHAPES_FREE_BYTES = 2 << 30


def _attention(device: torch.device, dtype: torch.dtype, s: Shapes) -> None:
    q = torch.ones(2, s.tokens, s.heads, s.head_dim, device=device, dtype=dtype)
    kv = torch.ones(2, s.context, s.heads, s.head_dim, device=device, dtype=dtype)
    dense_attention(q, q, q)
    dense_attention(q, kv, kv)
    packed = q.view(-1, s.heads, s.head_dim)
    varlen_attention(packed, packed, packed, [s.tokens, s.tokens], [s.tokens, s.tokens])


def _linear(device: torch.device, dtype: torch.dtype, s: Shapes) -> None:
    c = s.channels
    x = torch.ones(2 * s.tokens, c, device=device, dtype=dtype)
    square = torch.full((c, c), 1 / c, device=device, dtype=dtype)
    wide = torch.full((4 * c, c), 1 / c, device=device, dtype=dtype)
    F.linear(x, square, torch.zeros(c, device=device, dtype=dtype))
    hidden = eager_fast_path("linear_gelu", linear_gelu_torch, x, wide, torch.zeros(4 * c, device=device, dtype=dtype))
    F.linear(hidden, wide.t(), None)


def _convolution(device: torch.device, dtype: torch.dtype, s: Shapes) -> None:
    F.conv2d(torch.ones(1, 3, s.image, s.image, device=device, dtype=dtype),
             torch.ones(s.channels, 3, 14, 14, device=device, dtype=dtype), stride=14)
    F.conv3d(torch.ones(1, 64, 16, 16, 16, device=device, dtype=dtype),
             torch.ones(64, 64, 3, 3, 3, device=device, dtype=dtype), padding=1)


def _sparse_conv(device: torch.device, dtype: torch.dtype, s: Shapes) -> None:
    grid = torch.stack(torch.meshgrid(*[torch.arange(4, device=device)] * 3, indexing="ij"), -1).reshape(-1, 3)
    coords = torch.cat([torch.zeros(len(grid), 1, dtype=grid.dtype, device=device), grid], 1).int()
    x = SparseTensor(torch.ones(len(grid), 64, device=device, dtype=dtype), coords)
    submanifold_conv3d(x, torch.ones(64, 3, 3, 3, 64, device=device, dtype=dtype) / 1728,
                       torch.zeros(64, device=device, dtype=dtype))


# The sparse conv first: most of its time (Triton's per-process cache key, a hash of its files) leaves the interpreter
# lock to the load.
STEPS = (("sparse_conv", _sparse_conv), ("attention", _attention), ("linear", _linear),
         ("convolution", _convolution))


def warm_libraries(device, dtype: torch.dtype = torch.float16, cancel: Optional[Callable[[], bool]] = None,
                   shapes: Optional[Shapes] = None) -> dict:
    """Run each of ``STEPS`` once on `device` in `dtype` at `shapes` (by default IMAGE_LARGE on a CUDA device with
    FULL_SHAPES_FREE_BYTES free, TINY elsewhere), stopping early when ``cancel()``; returns the seconds of each step
    done (a step that failed: its error's text instead). Never raises: the first job then does it."""
    device = torch.device(device)
    if shapes is None:
        roomy = device.type == "cuda" and torch.cuda.mem_get_info(device)[0] >= FULL_SHAPES_FREE_BYTES
        shapes = IMAGE_LARGE if roomy else TINY
    done: dict = {}
    with torch.no_grad():
        for name, step in STEPS:
            if cancel is not None and cancel():
                break
            t = time.perf_counter()
            try:
                step(device, dtype, shapes)
                if device.type == "cuda":
                    torch.cuda.current_stream(device).synchronize()
                done[name] = round(time.perf_counter() - t, 4)
            except Exception as err:          # what fails here fails again, and is reported, in the job
                done[name] = f"failed: {type(err).__name__}: {err}"
    return done
