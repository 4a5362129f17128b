"""Triton 8-bit attention for ``trellis.modules.attention.quantised`` (CUDA only): the kernel of the pair whose
PyTorch twin is ``quantised.attention_8bit_torch`` (same arguments; the maths are written out there). Chosen by
``trellis.fastpaths``.

One program per (query tile of ``BLOCK_Q`` tokens, sequence x head) walks the sequence's keys in tiles of
``BLOCK_K``: S from an int8 x int8 -> int32 product, the online softmax's running maximum per key tile, P rounded to
the float8 e4m3 grid by its bits and P·V multiplied as float16 (every e4m3 value is a float16 value, so the products
are exact; measured faster than fp8 tensor cores, whose operand layouts cost more than they save here:
docs/benchmarks/attention_8bit.md). Tiles equal the quantisation's blocks, so each tile has one query
scale and one key scale. Ampere and later (int8 tensor cores).
"""
from __future__ import annotations

import functools

import torch

from trellis.modules.attention.quantised import BLOCK_K, BLOCK_Q, E4M3_MAX, block_lengths

from . import AVAILABLE, tl, triton

MIN_CAPABILITY = (8, 0)      # int8 tensor cores


if AVAILABLE:  # pragma: no cover - needs a CUDA device
    from triton.language.extra import libdevice

    _E4M3_MAX = tl.constexpr(E4M3_MAX)

    @triton.jit
    def _round_e4m3(x):
        """x (float32, 0 <= x <= 448) to the nearest e4m3 value (ties to even), as float32, by its bits."""
        bits = x.to(tl.int32, bitcast=True)
        lsb = (bits >> 20) & 1
        normal = ((bits + 0x7FFFF + lsb) & ~0xFFFFF).to(tl.float32, bitcast=True)
        sub = libdevice.rint(x * 512.0) * (1.0 / 512.0)      # below 2^-6: steps of 2^-9
        return tl.where(x < 0.015625, sub, normal)

    @triton.jit
    def _attention_8bit_kernel(q8_ptr, k8_ptr, v_ptr, sq_ptr, sk_ptr, sv_ptr, o_ptr,
                               cu_q_ptr, cu_k_ptr, qb_ptr, kb_ptr, heads,
                               sqt, sqh, skt, skh, svt, svh, svd, sot, soh,
                               D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr):
        seq = tl.program_id(0) // heads
        head = tl.program_id(0) % heads
        tile = tl.program_id(1)
        q0 = tl.load(cu_q_ptr + seq)
        nq = tl.load(cu_q_ptr + seq + 1) - q0
        if tile * BM >= nq:
            return
        k0 = tl.load(cu_k_ptr + seq)
        nk = tl.load(cu_k_ptr + seq + 1) - k0
        rows = tile * BM + tl.arange(0, BM)
        cols = tl.arange(0, BN)
        dims = tl.arange(0, D)
        row_ok = rows < nq
        q = tl.load(q8_ptr + (q0 + rows)[:, None] * sqt + head * sqh + dims[None, :], mask=row_ok[:, None], other=0)
        s_q = tl.load(sq_ptr + (tl.load(qb_ptr + seq) + tile) * heads + head)
        kb = tl.load(kb_ptr + seq)
        m_i = tl.full([BM], float("-inf"), tl.float32)
        l_i = tl.zeros([BM], tl.float32)
        acc = tl.zeros([BM, D], tl.float32)
        for start in range(0, nk, BN):
            keys = start + cols
            key_ok = keys < nk
            k = tl.load(k8_ptr + (k0 + keys)[None, :] * skt + head * skh + dims[:, None], mask=key_ok[None, :],
                        other=0)
            s_k = tl.load(sk_ptr + (kb + start // BN) * heads + head)
            s = tl.dot(q, k).to(tl.float32) * s_q * s_k
            s = tl.where(key_ok[None, :], s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            p = tl.exp(s - m_new[:, None]) * _E4M3_MAX
            alpha = tl.exp(m_i - m_new)
            v = tl.load(v_ptr + (k0 + keys)[:, None] * svt + head * svh + dims[None, :] * svd,
                        mask=key_ok[:, None], other=0.0)
            pr = _round_e4m3(p)
            l_i = l_i * alpha + tl.sum(pr, 1)
            acc = acc * alpha[:, None] + tl.dot(pr.to(tl.float16), v)
            m_i = m_new
        scale = tl.load(sv_ptr + seq * heads * D + head * D + dims)
        out = tl.where(l_i[:, None] > 0, acc / l_i[:, None], 0.0) * scale[None, :]     # no keys: zeros
        tl.store(o_ptr + (q0 + rows)[:, None] * sot + head * soh + dims[None, :], out.to(o_ptr.dtype.element_ty),
                 mask=row_ok[:, None])


@functools.lru_cache(maxsize=256)
def _tables(lengths_q: tuple, lengths_kv: tuple, device: torch.device):
    """(cu_q, cu_k, first query block, first key block) per sequence, int32 on ``device`` (kept per lengths)."""
    def starts(lengths):
        out = [0]
        for n in lengths:
            out.append(out[-1] + n)
        return out
    qb = starts([len(block_lengths((n,), BLOCK_Q)) for n in lengths_q])[:-1]
    kb = starts([len(block_lengths((n,), BLOCK_K)) for n in lengths_kv])[:-1]
    return tuple(torch.tensor(t, dtype=torch.int32, device=device)
                 for t in (starts(lengths_q), starts(lengths_kv), qb, kb))


def attention_8bit(q8, sq, k8, sk, v8, sv, lengths_q: tuple, lengths_kv: tuple, out_dtype: torch.dtype):
    """Same arguments and result as ``quantised.attention_8bit_torch`` (within the tolerances of tests/gpu/)."""
    if not AVAILABLE or not q8.is_cuda:
        return NotImplemented
    tq, heads, d = q8.shape
    cap = torch.cuda.get_device_capability(q8.device)
    # int8 tensor-core products take at least 32 along the head dimension
    if cap < MIN_CAPABILITY or d not in (32, 64, 128, 256) or tq == 0 or not lengths_q:
        return NotImplemented
    v = v8.to(torch.float16)                     # exact: every e4m3 value is a float16 value
    q8, k8 = (t if t.stride(-1) == 1 else t.contiguous() for t in (q8, k8))
    out = torch.zeros(tq, heads, d, dtype=out_dtype, device=q8.device)
    cu_q, cu_k, qb, kb = _tables(tuple(lengths_q), tuple(lengths_kv), q8.device)
    grid = (len(lengths_q) * heads, -(-max(lengths_q) // BLOCK_Q))
    _attention_8bit_kernel[grid](q8, k8, v, sq.contiguous(), sk.contiguous(), sv.contiguous(), out,
                                 cu_q, cu_k, qb, kb, heads,
                                 q8.stride(0), q8.stride(1), k8.stride(0), k8.stride(1), v.stride(0), v.stride(1),
                                 v.stride(2), out.stride(0), out.stride(1),
                                 D=d, BM=BLOCK_Q, BN=BLOCK_K, num_warps=4, num_stages=3)   # the sweep's best
    return out
