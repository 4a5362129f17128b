"""8-bit attention's maths: the shared quantisation, and the PyTorch twin of the kernel that computes the rest (an
approximate path: a user's choice, never the default).

What it computes, per head of each packed sequence (the scheme of SageAttention-style kernels: per-block INT8 Q·Kᵀ,
FP8 P·V), in two parts:

``quantise`` (shared by the twin and the kernel, so both start from the same bits):

* K is smoothed: its mean over the sequence's tokens is subtracted (each query's scores then all move by the same
  amount, which softmax ignores; the shared offset that real checkpoints' keys carry no longer eats the int8 range).
* Q in blocks of ``BLOCK_Q`` tokens and K in blocks of ``BLOCK_K`` tokens (from each sequence's start) are scaled by
  their block's largest magnitude / 127 and rounded to int8; the query scales carry the softmax's 1/√D.
* V per channel (over the sequence) is scaled by its largest magnitude / ``E4M3_MAX`` and rounded to float8 e4m3.

``attention_8bit_torch`` (the twin; ``trellis_triton.attention_8bit`` the kernel), walking the keys in blocks of
``BLOCK_K`` as a one-pass kernel does:

* S = (q8 · k8ᵀ) · s_q · s_k, the integer products exact (|q8 · k8| ≤ 127² · D < 2²⁴ for D ≤ 1024);
* m_j = the running row maximum after key block j; P_j = exp(S_j − m_j) ∈ (0, 1], rounded to e4m3 after scaling by
  ``E4M3_MAX`` (p8);
* O = Σ_j e^(m_j − m_last) (p8_j · v8_j) / Σ_j e^(m_j − m_last) Σ p8_j, times V's channel scale: the weights
  are the rounded ones, so they sum to one (a constant V comes back as itself, to float32 rounding).

Layouts as ``functional``'s: dense [B, L, H, D]; packed variable length [T, H, D] with per-sequence lengths.
"""
from __future__ import annotations

import math

import torch

from trellis import fastpaths

__all__ = ["BLOCK_Q", "BLOCK_K", "E4M3_MAX", "quantise", "attention_8bit_torch", "quantised_dense",
           "quantised_varlen", "e4m3", "block_lengths"]

BLOCK_Q = 128            # query tokens sharing one int8 scale (the kernel's query tile)
BLOCK_K = 64             # key tokens sharing one int8 scale (the kernel's key tile, and the running max's step)
E4M3_MAX = 448.0         # the largest finite float8 e4m3 value
# The twin's score matrices per step (bytes): heads are taken a few at a time below this.
TWIN_CHUNK_BYTES = 256 << 20
FEW_SEQUENCES = 8        # up to this many sequences are quantised one by one, more in one segmented pass


def e4m3(x: torch.Tensor) -> torch.Tensor:
    """``x`` (float32, within ±E4M3_MAX) rounded to the nearest float8 e4m3 value, kept as float32."""
    return x.to(torch.float8_e4m3fn).to(torch.float32)


def block_lengths(lengths: tuple, block: int) -> list:
    """Each sequence cut into blocks of ``block`` tokens from its start: the blocks' lengths, in order."""
    out = []
    for n in lengths:
        out += [block] * (n // block) + ([n % block] if n % block else [])
    return out


def _int8_blocks(x: torch.Tensor, lengths: tuple, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x [T, H, D] float32 -> (int8 [T, H, D], scale per block [NB, H] float32)."""
    q8 = torch.empty(x.shape, dtype=torch.int8, device=x.device)
    if len(lengths) > FEW_SEQUENCES:                    # many short sequences (windows): one segmented pass
        blens = block_lengths(lengths, block)
        blen_t = torch.tensor(blens, device=x.device)
        scale = torch.segment_reduce(x.abs().amax(-1), "max", lengths=blen_t, axis=0).clamp_min(1e-12) / 127.0
        per_token = scale.repeat_interleave(blen_t, dim=0, output_size=x.shape[0])
        q8.copy_(torch.round(x / per_token[..., None]).clamp_(-127, 127))
        return q8, scale
    scales, start = [], 0
    for n in lengths:                                   # a few long sequences: each as whole blocks, padded
        nb = -(-n // block)
        if nb:
            xs = torch.nn.functional.pad(x[start:start + n], (0, 0, 0, 0, 0, nb * block - n))
            xs = xs.view(nb, block, *x.shape[1:])
            scale = xs.abs().amax(dim=(1, 3)).clamp_min(1e-12) / 127.0
            q8[start:start + n] = torch.round(xs / scale[:, None, :, None]).clamp_(-127, 127).flatten(0, 1)[:n]
            scales.append(scale)
        start += n
    return q8, (torch.cat(scales) if scales else x.new_zeros(0, x.shape[1]))


def _keys_and_values(k: torch.Tensor, v: torch.Tensor, lengths: tuple):
    """k, v [T, H, D] -> (k smoothed, float32 [T, H, D]; v8 [T, H, D] e4m3; sv [S, H, D]): each sequence's own mean
    key subtracted and its values scaled per channel by their largest magnitude / E4M3_MAX (deterministic sums)."""
    kf = k.to(torch.float32, copy=True)
    vf = v.float()
    if len(lengths) > FEW_SEQUENCES:
        lk_t = torch.tensor(lengths, device=k.device)
        sums = torch.segment_reduce(kf, "sum", lengths=lk_t, axis=0)
        means = sums / lk_t.clamp_min(1)[:, None, None]
        kf -= means.repeat_interleave(lk_t, dim=0, output_size=k.shape[0])
        sv = torch.segment_reduce(vf.abs(), "max", lengths=lk_t, axis=0).clamp_min(1e-12) / E4M3_MAX
        return kf, (vf / sv.repeat_interleave(lk_t, dim=0, output_size=v.shape[0])).to(torch.float8_e4m3fn), sv
    v8 = torch.empty(v.shape, dtype=torch.float8_e4m3fn, device=v.device)
    svs, start = [], 0
    for n in lengths:
        if n:
            kf[start:start + n] -= kf[start:start + n].mean(0)
            sv = vf[start:start + n].abs().amax(0).clamp_min(1e-12) / E4M3_MAX
            v8[start:start + n] = (vf[start:start + n] / sv).to(torch.float8_e4m3fn)
        else:
            sv = vf.new_full(v.shape[1:], 1e-12 / E4M3_MAX)
        svs.append(sv)
        start += n
    return kf, v8, (torch.stack(svs) if svs else vf.new_zeros((0,) + tuple(v.shape[1:])))


def quantise(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths_q: tuple, lengths_kv: tuple):
    """Packed q [Tq, H, D], k/v [Tk, H, D] -> (q8 [Tq, H, D] int8, sq [NBq, H] float32 with 1/√D in it,
    k8 [Tk, H, D] int8, sk [NBk, H] float32, v8 [Tk, H, D] float8_e4m3fn, sv [S, H, D] float32)."""
    kf, v8, sv = _keys_and_values(k, v, lengths_kv)
    q8, sq = _int8_blocks(q.float(), lengths_q, BLOCK_Q)
    k8, sk = _int8_blocks(kf, lengths_kv, BLOCK_K)
    return q8, sq / math.sqrt(q.shape[-1]), k8, sk, v8, sv


def _per_token(scale: torch.Tensor, n: int, block: int) -> torch.Tensor:
    """[NB_s, H] block scales of one sequence -> [H, n] per token."""
    return scale.repeat_interleave(block, dim=0)[:n].transpose(0, 1)


def _twin_heads(qf, kf, vf, sq, sk, sv):
    """One sequence, some heads: qf [h, nq, D], kf/vf [h, nk, D] (values of the 8-bit grids, float32), sq [h, nq],
    sk [h, nk], sv [h, D] -> [h, nq, D] float32."""
    h, nq, _ = qf.shape
    nk = kf.shape[1]
    nb = -(-nk // BLOCK_K)
    s = (qf @ kf.transpose(-1, -2)) * sq[..., None] * sk[:, None, :]
    s = torch.nn.functional.pad(s, (0, nb * BLOCK_K - nk), value=-math.inf).view(h, nq, nb, BLOCK_K)
    m = torch.cummax(s.amax(-1), dim=-1).values                      # running row maximum after each key block
    p8 = e4m3(torch.exp(s - m[..., None]) * E4M3_MAX)
    w = torch.exp(m - m[..., -1:])                                   # each block's rescale to the last maximum
    denom = (p8.sum(-1) * w).sum(-1)
    acc = (p8 * w[..., None]).view(h, nq, nb * BLOCK_K)[..., :nk] @ vf
    return acc / denom[..., None] * sv[:, None, :]


def attention_8bit_torch(q8, sq, k8, sk, v8, sv, lengths_q: tuple, lengths_kv: tuple, out_dtype: torch.dtype):
    """The twin: ``quantise``'s tensors -> O [Tq, H, D] in ``out_dtype`` (a sequence with no keys: zeros)."""
    tq, heads, d = q8.shape
    out = torch.zeros(tq, heads, d, dtype=out_dtype, device=q8.device)
    q0 = k0 = qb = kb = 0
    for seq, (nq, nk) in enumerate(zip(lengths_q, lengths_kv)):
        nbq, nbk = -(-nq // BLOCK_Q), -(-nk // BLOCK_K)
        if nq and nk:
            qf = q8[q0:q0 + nq].float().transpose(0, 1)
            kf = k8[k0:k0 + nk].float().transpose(0, 1)
            vf = v8[k0:k0 + nk].float().transpose(0, 1)
            sqt = _per_token(sq[qb:qb + nbq], nq, BLOCK_Q)
            skt = _per_token(sk[kb:kb + nbk], nk, BLOCK_K)
            step = max(1, TWIN_CHUNK_BYTES // max(1, nq * nbk * BLOCK_K * 4 * 3))
            for h0 in range(0, heads, step):
                hs = slice(h0, h0 + step)
                o = _twin_heads(qf[hs], kf[hs], vf[hs], sqt[hs], skt[hs], sv[seq, hs])
                out[q0:q0 + nq, hs] = o.transpose(0, 1).to(out_dtype)
        q0, k0, qb, kb = q0 + nq, k0 + nk, qb + nbq, kb + nbk
    return out


def _host_lengths(lengths) -> tuple:
    return tuple(int(n) for n in (lengths.tolist() if torch.is_tensor(lengths) else lengths))


def quantised_varlen(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths_q, lengths_kv) -> torch.Tensor:
    """q [Tq, H, D], k/v [Tk, H, D] packed sequences (lengths: S ints each) -> [Tq, H, D] in q's dtype: each
    sequence's own blocks, smoothing and scales; the kernel where one runs, else the twin."""
    lq, lk = _host_lengths(lengths_q), _host_lengths(lengths_kv)
    args = quantise(q, k, v, lq, lk) + (lq, lk, q.dtype)
    return fastpaths.dispatch("attention_8bit", q.device, attention_8bit_torch, *args)


def quantised_dense(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """q [B, Lq, H, D], k/v [B, Lk, H, D] -> [B, Lq, H, D] in q's dtype, with 8-bit attention's maths."""
    b, lq, h, d = q.shape
    lk = k.shape[1]
    out = quantised_varlen(q.reshape(b * lq, h, d), k.reshape(b * lk, h, d), v.reshape(b * lk, h, d),
                           (lq,) * b, (lk,) * b)
    return out.view(b, lq, h, d)
