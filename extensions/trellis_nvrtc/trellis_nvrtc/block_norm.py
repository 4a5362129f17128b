"""The flow blocks' norms in CUDA C through NVRTC: the kernels of the ``norm_modulate`` and ``head_rms_norm``
pairs. Twins: ``trellis.modules.transformer.norm_modulate_torch`` and ``head_rms_norm_torch``.

In eager mode a DiT block spends ~30 small PyTorch kernels on its norms: the residual sums, three LayerNorms
(one affine, done in fp32 with casts), the adaLN modulation with its ``1 + scale``, and q/k RMS norms of ~6
kernels each. These two kernels do each group in one pass over the rows and round where the twins round
(the residual sum, the LayerNorm's output, ``1 + scale`` and the modulated output to the activation dtype),
so the results differ from the twins only by the order of the fp32 sums (tests/gpu/).

``norm_modulate``: one warp per row of C channels (C a multiple of 8, at most 2048: 8 x 16-byte chunks per
lane kept in registers); fp32 mean and variance (two passes over the registers), ``rsqrtf`` as PyTorch's
LayerNorm. ``head_rms_norm``: one warp per (row, q|k, head) of D <= 256 values: ``x / max(sqrt(sum x^2),
1e-12) * gamma * scale`` with IEEE division, as ``F.normalize``. fp16 and bf16 activations (fp32 and others:
``NotImplemented``, the twin runs); no CUDA headers are needed (half conversions by PTX ``cvt``, bfloat16 by
bit arithmetic with round-to-nearest-even).
"""
from __future__ import annotations

import torch

from . import HALF_C, launcher

WARPS = 4            # rows (units) per thread block: one warp each
MAX_CHANNELS = 2048  # 32 lanes x 8 chunks x 8 values
MAX_HEAD_DIM = 256   # 32 lanes x 8 values
_HALF = {torch.float16: 0, torch.bfloat16: 1}
_PARAM_KIND = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}

_COMMON = HALF_C + r"""
__device__ __forceinline__ float rnd(float f, int bf) { return h2f(f2h(f, bf), bf); }
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ void unpack8(U4 u, float* f, int bf) {
    f[0] = h2f((unsigned short)(u.a & 0xffffu), bf); f[1] = h2f((unsigned short)(u.a >> 16), bf);
    f[2] = h2f((unsigned short)(u.b & 0xffffu), bf); f[3] = h2f((unsigned short)(u.b >> 16), bf);
    f[4] = h2f((unsigned short)(u.c & 0xffffu), bf); f[5] = h2f((unsigned short)(u.c >> 16), bf);
    f[6] = h2f((unsigned short)(u.d & 0xffffu), bf); f[7] = h2f((unsigned short)(u.d >> 16), bf);
}
__device__ __forceinline__ U4 pack8(const float* f, int bf) {
    U4 u;
    u.a = (unsigned int)f2h(f[0], bf) | ((unsigned int)f2h(f[1], bf) << 16);
    u.b = (unsigned int)f2h(f[2], bf) | ((unsigned int)f2h(f[3], bf) << 16);
    u.c = (unsigned int)f2h(f[4], bf) | ((unsigned int)f2h(f[5], bf) << 16);
    u.d = (unsigned int)f2h(f[6], bf) | ((unsigned int)f2h(f[7], bf) << 16);
    return u;
}
__device__ __forceinline__ float param(const void* p, long long i, int kind) {   // 0 fp32, 1 fp16, 2 bf16
    if (kind == 0) return ((const float*)p)[i];
    return h2f(((const unsigned short*)p)[i], kind == 2);
}
"""

_NORM_SOURCE = _COMMON + r"""
// flags: 1 y (residual), 2 gate (x + gate * y), 4 affine (weight, bias), 8 modulation (shift, scale), 16 bf16
extern "C" __global__ void trellis_norm_modulate(
    const unsigned short* __restrict__ x, const unsigned short* __restrict__ y,
    const unsigned short* __restrict__ gate, const void* __restrict__ weight, const void* __restrict__ bias,
    const unsigned short* __restrict__ shift, const unsigned short* __restrict__ scale,
    unsigned short* __restrict__ x_out, unsigned short* __restrict__ h_out,
    int rows, int C, int rows_per_item, int mod_stride, int flags, int param_kind, double eps)
{
    const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= rows) return;
    const int bf = (flags >> 4) & 1;
    const int n8 = C >> 3;
    const long long off = (long long)row * C;
    const long long moff = (long long)(row / rows_per_item) * mod_stride;
    float v[64];
    float sum = 0.0f;
#pragma unroll
    for (int k = 0; k < 8; ++k) {
        const int c8 = k * 32 + lane;
        if (c8 < n8) {
            float a[8];
            unpack8(*(const U4*)(x + off + c8 * 8), a, bf);
            if (flags & 1) {
                float b[8];
                unpack8(*(const U4*)(y + off + c8 * 8), b, bf);
                if (flags & 2) {
                    float g[8];
                    unpack8(*(const U4*)(gate + moff + c8 * 8), g, bf);
#pragma unroll
                    for (int j = 0; j < 8; ++j) a[j] = rnd(fmaf(g[j], b[j], a[j]), bf);
                } else {
#pragma unroll
                    for (int j = 0; j < 8; ++j) a[j] = rnd(a[j] + b[j], bf);
                }
                *(U4*)(x_out + off + c8 * 8) = pack8(a, bf);
            }
#pragma unroll
            for (int j = 0; j < 8; ++j) { v[k * 8 + j] = a[j]; sum += a[j]; }
        }
    }
    const float mean = warp_sum(sum) / (float)C;
    float sq = 0.0f;
#pragma unroll
    for (int k = 0; k < 8; ++k) {
        if (k * 32 + lane < n8) {
#pragma unroll
            for (int j = 0; j < 8; ++j) { const float d = v[k * 8 + j] - mean; sq += d * d; }
        }
    }
    const float rstd = rsqrtf(warp_sum(sq) / (float)C + (float)eps);
#pragma unroll
    for (int k = 0; k < 8; ++k) {
        const int c8 = k * 32 + lane;
        if (c8 < n8) {
            float o[8];
#pragma unroll
            for (int j = 0; j < 8; ++j) {
                float h = (v[k * 8 + j] - mean) * rstd;
                if (flags & 4) {
                    const int c = c8 * 8 + j;
                    h = fmaf(h, param(weight, c, param_kind), param(bias, c, param_kind));
                }
                o[j] = rnd(h, bf);
            }
            if (flags & 8) {
                float sh[8], sc[8];
                unpack8(*(const U4*)(shift + moff + c8 * 8), sh, bf);
                unpack8(*(const U4*)(scale + moff + c8 * 8), sc, bf);
#pragma unroll
                for (int j = 0; j < 8; ++j) o[j] = fmaf(o[j], rnd(1.0f + sc[j], bf), sh[j]);
            }
            *(U4*)(h_out + off + c8 * 8) = pack8(o, bf);
        }
    }
}
"""

_RMS_SOURCE = _COMMON + r"""
// one warp per (row, part, head); part 0 reads q, part 1 k (same rows and row stride)
extern "C" __global__ void trellis_head_rms_norm(
    const unsigned short* __restrict__ q, const unsigned short* __restrict__ k,
    const void* __restrict__ gamma_q, const void* __restrict__ gamma_k,
    unsigned short* __restrict__ q_out, unsigned short* __restrict__ k_out,
    int rows, int heads, int D, int row_stride, int parts, int bf, int param_kind, double scale)
{
    const long long unit = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (unit >= (long long)rows * parts * heads) return;
    const int h = (int)(unit % heads);
    const long long rp = unit / heads;
    const int part = (int)(rp % parts);
    const long long row = rp / parts;
    const unsigned short* src = (part ? k : q) + row * row_stride + (long long)h * D;
    unsigned short* dst = (part ? k_out : q_out) + (row * heads + h) * D;
    const void* g = part ? gamma_k : gamma_q;
    float v[8];
    float ss = 0.0f;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        const int d = i * 32 + lane;
        v[i] = 0.0f;
        if (d < D) { v[i] = h2f(src[d], bf); ss += v[i] * v[i]; }
    }
    const float n = fmaxf(sqrtf(warp_sum(ss)), 1e-12f);
    const float s = (float)scale;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        const int d = i * 32 + lane;
        if (d < D) {
            float o = v[i] / n;
            o = o * param(g, (long long)h * D + d, param_kind);
            o = o * s;
            dst[d] = f2h(o, bf);
        }
    }
}
"""


def _rows(t: torch.Tensor, inner: int):
    """(rows, row stride) of ``t`` seen as rows of its last ``inner`` dims (those with unit strides inside a row,
    checked by the caller), or None when its leading dims do not collapse to one stride."""
    lead = t.dim() - inner
    if lead <= 0:
        return 1, 0
    rows, stride = t.shape[lead - 1], t.stride(lead - 1)
    for i in range(lead - 2, -1, -1):
        if t.shape[i] > 1 and t.stride(i) != t.shape[i + 1] * t.stride(i + 1):
            return None
        rows *= t.shape[i]
    return rows, stride


def _mod_layout(m: torch.Tensor, x: torch.Tensor):
    """(rows of x per modulation row, modulation row stride) of a modulation tensor that broadcasts over
    x [..., L, C]: [B, 1, C] per item (x [B, L, C]) or x's own shape per row; None for other layouts."""
    if m.dtype != x.dtype or m.stride(-1) != 1 or m.data_ptr() % 16:
        return None
    if m.shape == x.shape:
        got = _rows(m, 1)
        return None if got is None else (1, got[1])
    if m.dim() == 3 and x.dim() == 3 and m.shape[1] == 1 and m.shape[0] == x.shape[0] and m.shape[2] == x.shape[2]:
        return x.shape[1], m.stride(0)
    return None


def norm_modulate(x: torch.Tensor, y, gate, weight, bias, eps: float, shift, scale):
    """The twin's ``(x + gate * y, modulate(LayerNorm32(...)))`` in one kernel; ``NotImplemented`` for inputs it
    does not take (not CUDA, not fp16/bf16, not contiguous, C not a multiple of 8 or above 2048, other
    modulation layouts)."""
    bf = _HALF.get(x.dtype)
    if bf is None or x.device.type != "cuda" or x.dim() < 2:
        return NotImplemented
    C = x.shape[-1]
    if C % 8 or C > MAX_CHANNELS or x.numel() == 0 or not x.is_contiguous() or x.data_ptr() % 16:
        return NotImplemented
    if (shift is None) != (scale is None) or (gate is not None and y is None) or (weight is None) != (bias is None):
        return NotImplemented
    flags = 16 * bf
    if y is not None:
        if y.shape != x.shape or y.dtype != x.dtype or not y.is_contiguous() or y.data_ptr() % 16:
            return NotImplemented
        flags |= 1
    per, stride = 1, C
    mods = [m for m in (gate, shift) if m is not None]
    if shift is not None:
        mods.append(scale)
    if mods:
        layouts = {_mod_layout(m, x) for m in mods}
        if len(layouts) != 1 or None in layouts:
            return NotImplemented
        per, stride = layouts.pop()
        if stride % 8:
            return NotImplemented
    param_kind = 0
    if weight is not None:
        param_kind = _PARAM_KIND.get(weight.dtype)
        if param_kind is None or bias.dtype != weight.dtype or weight.numel() != C or bias.numel() != C \
                or not weight.is_contiguous() or not bias.is_contiguous():
            return NotImplemented
        flags |= 4
    if gate is not None:
        flags |= 2
    if shift is not None:
        flags |= 8
    rows = x.numel() // C
    x_out = torch.empty_like(x) if y is not None else x
    h_out = torch.empty_like(x)
    launch = launcher(_NORM_SOURCE, "trellis_norm_modulate", x.device, "ppppppppp" + "iiiiii" + "d")
    launch((rows + WARPS - 1) // WARPS, 32 * WARPS, x.device.index,
           x, x if y is None else y, x if gate is None else gate, x if weight is None else weight,
           x if bias is None else bias, x if shift is None else shift, x if scale is None else scale,
           x_out, h_out, rows, C, per, stride, flags, param_kind, float(eps))
    return x_out, h_out


def head_rms_norm(q: torch.Tensor, k: torch.Tensor, gamma_q: torch.Tensor, gamma_k: torch.Tensor, scale: float):
    """The twin's two MultiHeadRMSNorms in one kernel (two launches when q and k have different rows);
    ``NotImplemented`` for inputs it does not take (not CUDA, not fp16/bf16, head size above 256, rows that are
    not one stride apart)."""
    bf = _HALF.get(q.dtype)
    if bf is None or q.device.type != "cuda" or k.dtype != q.dtype or q.dim() < 2 or k.shape[-2:] != q.shape[-2:]:
        return NotImplemented
    H, D = q.shape[-2:]
    if D > MAX_HEAD_DIM or q.numel() == 0 or k.numel() == 0:
        return NotImplemented
    kind = _PARAM_KIND.get(gamma_q.dtype)
    if kind is None or gamma_k.dtype != gamma_q.dtype or gamma_q.shape != (H, D) or gamma_k.shape != (H, D) \
            or not gamma_q.is_contiguous() or not gamma_k.is_contiguous():
        return NotImplemented
    layout = []
    for t in (q, k):
        got = _rows(t, 2) if t.stride(-1) == 1 and t.stride(-2) == D else None
        if got is None:
            return NotImplemented
        layout.append(got)
    q_out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    k_out = torch.empty(k.shape, dtype=k.dtype, device=k.device)
    launch = launcher(_RMS_SOURCE, "trellis_head_rms_norm", q.device, "pppppp" + "iiiiiii" + "d")
    index = q.device.index
    (q_rows, q_stride), (k_rows, k_stride) = layout
    if q_rows == k_rows and q_stride == k_stride:
        launch((q_rows * 2 * H + WARPS - 1) // WARPS, 32 * WARPS, index,
               q, k, gamma_q, gamma_k, q_out, k_out, q_rows, H, D, q_stride, 2, bf, kind, float(scale))
    else:
        for t, g, out, rows, stride in ((q, gamma_q, q_out, q_rows, q_stride), (k, gamma_k, k_out, k_rows, k_stride)):
            launch((rows * H + WARPS - 1) // WARPS, 32 * WARPS, index,
                   t, t, g, g, out, out, rows, H, D, stride, 1, bf, kind, float(scale))
    return q_out, k_out
