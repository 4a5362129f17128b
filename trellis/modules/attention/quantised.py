"""8-bit attention's maths in plain PyTorch: the twin an 8-bit kernel is tested against, and the yardstick of what
8-bit attention changes (an approximate path: a user's choice, never the default).

What it computes, per head (the scheme of SageAttention-style kernels: per-block INT8 Q·Kᵀ, FP8 P·V):

* K is smoothed: its mean over the sequence's tokens is subtracted (each query's scores then all move by the same
  amount, which softmax ignores; the shared offset that real checkpoints' keys carry no longer eats the int8 range).
* Q in blocks of ``BLOCK_Q`` tokens and K in blocks of ``BLOCK_K`` tokens are scaled by their block's largest
  magnitude / 127 and rounded to int8; S = (q8 · k8ᵀ) · s_q · s_k / √D. The integer products are exact in fp32
  (|q8 · k8| ≤ 127² · D < 2²⁴ for D ≤ 1024).
* P = softmax(S) in fp32, rounded to float8 e4m3 after scaling by ``E4M3_MAX`` (P ∈ [0, 1]); V per channel (over the
  sequence) scaled by its largest magnitude / ``E4M3_MAX`` and rounded to e4m3; O = (p8 · v8) · s_v / ``E4M3_MAX``,
  accumulated in fp32, returned in the input's dtype.

Layouts as ``functional``'s: dense [B, L, H, D]; packed variable length [T, H, D] with per-sequence lengths.
"""
from __future__ import annotations

import math

import torch

__all__ = ["BLOCK_Q", "BLOCK_K", "E4M3_MAX", "quantised_dense", "quantised_varlen", "int8_blocks", "e4m3"]

BLOCK_Q = 128            # query tokens sharing one int8 scale (a kernel's query tile)
BLOCK_K = 64             # key tokens sharing one int8 scale (a kernel's key tile)
E4M3_MAX = 448.0         # the largest finite float8 e4m3 value


def int8_blocks(x: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x rounded to int8 levels as float32 [B, H, L, D], scale per block [B, H, L] broadcast per token): ``x``
    [B, H, L, D] in blocks of ``block`` tokens along L, each scaled by its largest magnitude / 127."""
    b, h, n, d = x.shape
    pad = (-n) % block
    xf = torch.nn.functional.pad(x.float(), (0, 0, 0, pad)).reshape(b, h, -1, block, d)
    scale = xf.abs().amax(dim=(-1, -2), keepdim=True).clamp_min(1e-12) / 127.0
    q = torch.round(xf / scale).clamp_(-127, 127)
    per_token = scale.expand(b, h, xf.shape[2], block, 1).reshape(b, h, -1)[:, :, :n]
    return q.reshape(b, h, -1, d)[:, :, :n], per_token


def e4m3(x: torch.Tensor) -> torch.Tensor:
    """``x`` (float32, within ±E4M3_MAX) rounded to the nearest float8 e4m3 value, kept as float32."""
    return x.to(torch.float8_e4m3fn).to(torch.float32)


def _one(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """[B, H, Lq, D] x [B, H, Lk, D] -> [B, H, Lq, D] float32."""
    d = q.shape[-1]
    k = k.float() - k.float().mean(dim=2, keepdim=True)
    q8, sq = int8_blocks(q, BLOCK_Q)
    k8, sk = int8_blocks(k, BLOCK_K)
    s = (q8 @ k8.transpose(-1, -2)) * sq[..., :, None] * sk[..., None, :] / math.sqrt(d)
    p = torch.softmax(s, dim=-1)
    vf = v.float()
    sv = vf.abs().amax(dim=2, keepdim=True).clamp_min(1e-12) / E4M3_MAX
    return (e4m3(p * E4M3_MAX) @ e4m3(vf / sv)) * (sv / E4M3_MAX)


def quantised_dense(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """q [B, Lq, H, D], k/v [B, Lk, H, D] -> [B, Lq, H, D] in q's dtype, with 8-bit attention's maths."""
    out = _one(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2).to(q.dtype)


def quantised_varlen(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths_q, lengths_kv) -> torch.Tensor:
    """q [Tq, H, D], k/v [Tk, H, D] packed sequences (lengths: S ints each) -> [Tq, H, D] in q's dtype: each
    sequence's own blocks, smoothing and scales."""
    lq = [int(n) for n in (lengths_q.tolist() if torch.is_tensor(lengths_q) else lengths_q)]
    lk = [int(n) for n in (lengths_kv.tolist() if torch.is_tensor(lengths_kv) else lengths_kv)]
    out = torch.empty_like(q)
    sq = sk = 0
    for nq, nk in zip(lq, lk):
        if nq:
            out[sq:sq + nq] = quantised_dense(q[None, sq:sq + nq], k[None, sk:sk + nk], v[None, sk:sk + nk])[0]
        sq, sk = sq + nq, sk + nk
    return out
