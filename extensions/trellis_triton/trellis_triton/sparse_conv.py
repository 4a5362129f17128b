"""Triton implicit-GEMM submanifold convolution for `trellis.modules.sparse.conv` (CUDA only): the fast
kernel of the pair whose PyTorch twin is ``conv.submanifold_conv3d_torch`` (same arguments, same result
within the tolerances of tests/gpu/test_sparse_conv_gpu.py). Chosen by ``trellis.fastpaths``.

The conv is one GEMM of [N, k^3 * C_in] (each row: the features of a site's k^3 neighbours, zeros where
there is none) by the weight [k^3 * C_in, C_out]. The twin builds that left matrix in memory, chunk by
chunk; here it never exists. One program owns a BLOCK_N x BLOCK_CO tile of the output and walks the
k^3 offsets and C_in in BLOCK_K steps as one flat loop (so Triton pipelines the loads across offsets,
which matters when C_in is only 2-3 steps):

* the offset's column of the neighbour map gives the tile's source rows (``N`` or -1: none);
* the A tile is those rows' BLOCK_K channels, gathered (a missing neighbour loads zeros);
* the B tile is read straight from the reference's weight layout [C_out, k, k, k, C_in] by strides;
* ``acc += A @ B`` with fp32 accumulation (tensor cores for fp16/bf16; fp32 inputs use TF32 only when
  ``torch.backends.cuda.matmul.allow_tf32`` lets the twin's matmul do the same);
* bias (rounded to the feature dtype first, as the twin adds it) and one store in the feature dtype.

Each gathered row is C_in contiguous values, so the gathers are coalesced per row; rows of one tile are
neighbours in the sparse tensor's order (subdivision keeps a parent's children together), so the rows
they fetch stay in L2 for the tile's other offsets and the other programs of its output columns.

Block sizes come from ``pick_blocks`` (a rule per (N, C_in, C_out), sized for the shared memory of the
GPU) unless ``BLOCKS`` holds measured ones: ``benchmarks/sparse_conv_gpu.py --tune`` prints them.
"""
from __future__ import annotations

import os

import torch

from . import AVAILABLE, tl, triton

__all__ = ["submanifold_conv3d", "implicit_gemm", "pick_blocks", "BLOCKS", "AVAILABLE"]

# (C_in, C_out, dtype) -> dict(BLOCK_N=, BLOCK_CO=, BLOCK_K=, num_warps=, num_stages=): measured choices
# that override pick_blocks (left empty until a GPU run of benchmarks/sparse_conv_gpu.py --tune says so).
BLOCKS: dict = {}
_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_fallback_blocks: dict = {}     # shapes whose first choice did not fit the GPU's shared memory


if AVAILABLE:  # pragma: no cover - needs a CUDA device or the interpreter
    @triton.jit
    def _subm_conv_kernel(feats_ptr, nbr_ptr, w_ptr, bias_ptr, out_ptr,
                          n_rows, c_in, c_out, w_stride_co, w_stride_o, w_stride_ci,
                          KVOL: tl.constexpr, HAS_BIAS: tl.constexpr, EVEN_K: tl.constexpr,
                          BLOCK_N: tl.constexpr, BLOCK_CO: tl.constexpr, BLOCK_K: tl.constexpr,
                          PRECISION: tl.constexpr, UPCAST: tl.constexpr):
        # 1-D grid, output-column blocks fastest: the programs that share a row tile run together and
        # find its gathered rows in L2.
        pid = tl.program_id(0)
        n_co = tl.cdiv(c_out, BLOCK_CO)
        pid_n = pid // n_co
        pid_co = pid - pid_n * n_co
        rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        row_ok = rows < n_rows
        cos = pid_co * BLOCK_CO + tl.arange(0, BLOCK_CO)
        co_ok = cos < c_out
        ks = tl.arange(0, BLOCK_K)
        nbr_rows = nbr_ptr + rows.to(tl.int64) * KVOL
        w_cols = w_ptr + cos.to(tl.int64)[None, :] * w_stride_co
        acc = tl.zeros((BLOCK_N, BLOCK_CO), dtype=tl.float32)
        k_steps = tl.cdiv(c_in, BLOCK_K)
        for t in range(0, KVOL * k_steps):
            o = t // k_steps
            kk = (t - o * k_steps) * BLOCK_K + ks
            src = tl.load(nbr_rows + o, mask=row_ok, other=-1)
            has = (src >= 0) & (src < n_rows)
            a_ptrs = feats_ptr + src.to(tl.int64)[:, None] * c_in + kk[None, :]
            b_ptrs = w_cols + o * w_stride_o + kk[:, None] * w_stride_ci
            if EVEN_K:
                a = tl.load(a_ptrs, mask=has[:, None], other=0.0)
                b = tl.load(b_ptrs, mask=co_ok[None, :], other=0.0)
            else:
                k_ok = kk < c_in
                a = tl.load(a_ptrs, mask=has[:, None] & k_ok[None, :], other=0.0)
                b = tl.load(b_ptrs, mask=k_ok[:, None] & co_ok[None, :], other=0.0)
            b = b.to(a.dtype)            # the weight in the features' dtype, as the twin casts it
            if UPCAST:                   # the interpreter's bf16 dot is wrong; bf16 products are exact in fp32
                acc = tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
            else:
                acc = tl.dot(a, b, acc, input_precision=PRECISION)
        out_ty = out_ptr.dtype.element_ty
        if HAS_BIAS:
            bias = tl.load(bias_ptr + cos, mask=co_ok, other=0.0)
            acc += bias.to(out_ty).to(tl.float32)[None, :]
        out_ptrs = out_ptr + rows.to(tl.int64)[:, None] * c_out + cos[None, :]
        tl.store(out_ptrs, acc.to(out_ty), mask=row_ok[:, None] & co_ok[None, :])


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _pow2_at_least(v: int, lo: int) -> int:
    p = lo
    while p < v:
        p *= 2
    return p


def _gpu_limits(device: torch.device) -> tuple[int, int]:
    """(shared memory per SM in bytes, SM count); modest defaults off the GPU (the interpreter)."""
    if device.type != "cuda":
        return 96 * 1024, 8
    props = torch.cuda.get_device_properties(device)
    smem = getattr(props, "shared_memory_per_multiprocessor", 0) or 96 * 1024
    return smem, props.multi_processor_count


def pick_blocks(n: int, c_in: int, c_out: int, dtype: torch.dtype, device: torch.device) -> dict:
    """Tile sizes for one conv shape: a rule, unless ``BLOCKS`` holds a measured choice.

    * BLOCK_CO: the whole of C_out up to 128 (one program per row tile gathers each row once; 96 -> 128
      wastes a quarter of the MMA but halves the gathers), 64 for C_out in (128, 256) such as 192
      (three even column blocks), else 128.
    * BLOCK_K: 64 when C_in is a multiple of 64, else 32 (96 = 3 x 32 without a masked tail); 16 for tiny
      C_in (tl.dot's minimum), 32 for fp32 (twice the bytes per element).
    * BLOCK_N: 128, or 64 when that leaves fewer than two programs per SM (the flow's 32^3 level).
    * num_stages: as many as fit in 3/4 of the SM's shared memory, 2 to 4.
    """
    key = (c_in, c_out, dtype)
    if key in _fallback_blocks:
        return dict(_fallback_blocks[key])
    if key in BLOCKS:
        return dict(BLOCKS[key])
    smem, sms = _gpu_limits(device)
    esize = torch.empty((), dtype=dtype).element_size()
    block_co = _pow2_at_least(c_out, 16) if c_out <= 128 else (64 if c_out < 256 else 128)
    if c_in < 32:
        block_k = _pow2_at_least(c_in, 16)
    elif c_in % 64 == 0 and esize <= 2:
        block_k = 64
    else:
        block_k = 32
    block_n = 128
    if triton.cdiv(n, block_n) * triton.cdiv(c_out, block_co) < 2 * sms:
        block_n = 64
    per_stage = (block_n * block_k + block_k * block_co) * esize
    stages = max(2, min(4, int(smem * 0.75) // per_stage))
    warps = 8 if block_n * block_co >= 128 * 128 else 4
    return dict(BLOCK_N=block_n, BLOCK_CO=block_co, BLOCK_K=block_k, num_warps=warps, num_stages=stages)


_SAFE_BLOCKS = dict(BLOCK_N=64, BLOCK_CO=64, BLOCK_K=32, num_warps=4, num_stages=2)


def implicit_gemm(feats: torch.Tensor, nbr: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                  blocks: dict | None = None) -> torch.Tensor:
    """out[i] = bias + sum_o feats[nbr[i, o]] @ W_o, in ``feats``' dtype (fp32 accumulation).

    ``feats`` [N, C_in]; ``nbr`` int32 [N, k^3] (a row index, or N / -1 for none: the twin's
    ``neighbour_map``); ``weight`` [C_out, k, k, k, C_in] (any strides); ``bias`` [C_out] or None.
    CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1`` (how the kernel is tested without a GPU).
    ``blocks`` overrides ``pick_blocks`` (benchmarks).
    """
    n, c_in = feats.shape
    c_out, kvol = weight.shape[0], weight.shape[1] * weight.shape[2] * weight.shape[3]
    if weight.shape[-1] != c_in or nbr.shape != (n, kvol):
        raise ValueError(f"shapes do not agree: feats {tuple(feats.shape)}, neighbour map {tuple(nbr.shape)}, "
                         f"weight {tuple(weight.shape)}")
    if feats.device.type != "cuda" and not _interpreting():
        raise ValueError("implicit_gemm runs on CUDA tensors (CPU tensors only under TRITON_INTERPRET=1)")
    out = torch.empty(n, c_out, dtype=feats.dtype, device=feats.device)
    if n == 0 or c_out == 0:
        return out
    if c_in == 0:
        return out.copy_(bias.to(feats.dtype).expand(n, c_out)) if bias is not None else out.zero_()
    feats = feats.contiguous()
    nbr = nbr.to(torch.int32).contiguous()
    w = weight.reshape(c_out, kvol, c_in)          # a view of the reference layout; strides passed on
    interpreting = feats.device.type != "cuda"
    precision = "tf32" if (feats.dtype == torch.float32 and not interpreting
                           and torch.backends.cuda.matmul.allow_tf32) else "ieee"
    cfg = dict(blocks or pick_blocks(n, c_in, c_out, feats.dtype, feats.device))
    grid_for = lambda c: (triton.cdiv(n, c["BLOCK_N"]) * triton.cdiv(c_out, c["BLOCK_CO"]),)  # noqa: E731

    def launch(c):
        _subm_conv_kernel[grid_for(c)](
            feats, nbr, w, bias if bias is not None else w, out,
            n, c_in, c_out, w.stride(0), w.stride(1), w.stride(2),
            KVOL=kvol, HAS_BIAS=bias is not None, EVEN_K=c_in % c["BLOCK_K"] == 0,
            BLOCK_N=c["BLOCK_N"], BLOCK_CO=c["BLOCK_CO"], BLOCK_K=c["BLOCK_K"], PRECISION=precision,
            UPCAST=interpreting and feats.dtype == torch.bfloat16,
            num_warps=c["num_warps"], num_stages=c["num_stages"])

    try:
        launch(cfg)
    except triton.runtime.errors.OutOfResources:
        # Too much shared memory for this GPU (a consumer card with ~100 KB per SM): small tiles, remembered.
        if blocks is not None:
            raise
        safe = dict(_SAFE_BLOCKS, BLOCK_K=min(cfg["BLOCK_K"], 32))
        _fallback_blocks[(c_in, c_out, feats.dtype)] = safe
        launch(safe)
    return out


def submanifold_conv3d(x, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Same arguments and result as ``trellis.modules.sparse.conv.submanifold_conv3d_torch``.

    Returns ``NotImplemented`` for what the kernel does not handle, so the dispatcher runs the next path:
    no Triton, tensors not on CUDA, float64 or mixed devices, kernel size 1 (the twin's matmul with the
    reference's kernel-1 weight quirk is already one GEMM), channels where the twin's gathered GEMM is faster
    (``conv.gathered_gemm_wins``), or a call that records gradients (the kernel has no backward; the twin does).
    """
    from trellis.modules.sparse.conv import gathered_gemm_wins, neighbour_map

    feats = x.feats
    if (not AVAILABLE or feats.device.type != "cuda" or feats.dtype not in _DTYPES or feats.ndim != 2
            or weight.ndim != 5 or weight.device != feats.device or weight.dtype not in _DTYPES
            or (bias is not None and (bias.device != feats.device or bias.dtype not in _DTYPES))
            or weight.shape[1] == 1 or gathered_gemm_wins(weight.shape[-1], weight.shape[0])
            or (torch.is_grad_enabled() and (feats.requires_grad or weight.requires_grad
                                             or (bias is not None and bias.requires_grad)))):
        return NotImplemented
    return implicit_gemm(feats, neighbour_map(x, weight.shape[1]), weight, bias)
