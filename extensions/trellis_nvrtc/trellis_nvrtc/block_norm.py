"""The flow blocks' norms in CUDA C through NVRTC: the kernels of the ``norm_modulate`` and ``head_rms_norm``
pairs. Twins: ``trellis.modules.transformer.norm_modulate_torch`` and ``head_rms_norm_torch``.

In eager mode a DiT block spends ~30 small PyTorch kernels on its norms: the residual sums, three LayerNorms
(one affine, done in fp32 with casts), the adaLN modulation with its ``1 + scale``, and q/k RMS norms of ~6
kernels each. These two kernels do each group in one pass over the rows and round where the twins round
(the residual sum, the LayerNorm's output, ``1 + scale`` and the modulated output to the activation dtype),
so the results differ from the twins only by the order of the fp32 sums (tests/gpu/).

``norm_modulate``: one warp per row of C channels (C a multiple of 8, at most 2048), specialised at compile time
for C, the inputs present and the dtypes (one small NVRTC compile per combination, kept on disk like the others):
every 16-byte load of the row is issued before any arithmetic, so a warp keeps its whole row in flight; fp32 mean
and variance (two passes over the registers), ``rsqrtf`` as PyTorch's LayerNorm. ``head_rms_norm``: one warp per
(row, q|k) of H heads x D values (D / 8 a power of two up to 32: 16-byte loads, the D / 8 lanes of a head reduce
among themselves); other head sizes up to 256 take a generic kernel with one warp per (row, q|k, head).
``x / max(sqrt(sum x^2), 1e-12) * gamma * scale`` with IEEE division, as ``F.normalize``. fp16 and bf16
activations (fp32 and others: ``NotImplemented``, the twin runs); no CUDA headers are needed (half conversions by
PTX ``cvt``, bfloat16 by bit arithmetic with round-to-nearest-even).
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
// values 8 * c8 .. 8 * c8 + 7 of a parameter vector of dtype kind, in 16-byte loads (p 16-byte aligned)
__device__ __forceinline__ void param8(const void* p, int c8, float* f, int kind) {
    if (kind == 0) {
        const U4 a = ((const U4*)p)[2 * c8], b = ((const U4*)p)[2 * c8 + 1];
        f[0] = __uint_as_float(a.a); f[1] = __uint_as_float(a.b); f[2] = __uint_as_float(a.c);
        f[3] = __uint_as_float(a.d); f[4] = __uint_as_float(b.a); f[5] = __uint_as_float(b.b);
        f[6] = __uint_as_float(b.c); f[7] = __uint_as_float(b.d);
    } else {
        unpack8(((const U4*)p)[c8], f, kind == 2);
    }
}
"""

# Compile-time constants of a variant: C_ channels, FLAGS_ (below), PK_ the LayerNorm parameters' dtype (0 fp32, 1 fp16,
# 2 bf16), WARPS_ rows per thread block. The compiler drops the absent inputs' code and unrolls over the row.
_NORM_TEMPLATE = r"""
// flags: 1 y (residual), 2 gate (x + gate * y), 4 affine (weight, bias), 8 modulation (shift, scale), 16 bf16
#define BF_ ((FLAGS_ >> 4) & 1)
#define NCH (C_ / 8)
#define KPL ((NCH + 31) / 32)
extern "C" __global__ void __launch_bounds__(WARPS_ * 32) KERNEL_NAME(
    const unsigned short* __restrict__ x, const unsigned short* __restrict__ y,
    const unsigned short* __restrict__ gate, const void* __restrict__ weight, const void* __restrict__ bias,
    const unsigned short* __restrict__ shift, const unsigned short* __restrict__ scale,
    unsigned short* __restrict__ x_out, unsigned short* __restrict__ h_out,
    int rows, int rows_per_item, int mod_stride, double eps)
{
    const int row = blockIdx.x * WARPS_ + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= rows) return;
    const long long off = (long long)row * C_;
    const long long moff = (long long)(row / rows_per_item) * mod_stride;
    U4 xa[KPL], ya[KPL], ga[KPL];
#pragma unroll
    for (int k = 0; k < KPL; ++k) {          // every load of the row first: the whole row in flight at once
        const int c8 = k * 32 + lane;
        if (c8 < NCH) {
            xa[k] = ((const U4*)(x + off))[c8];
            if (FLAGS_ & 1) ya[k] = ((const U4*)(y + off))[c8];
            if (FLAGS_ & 2) ga[k] = ((const U4*)(gate + moff))[c8];
        }
    }
    float v[KPL * 8];
    float sum = 0.0f;
#pragma unroll
    for (int k = 0; k < KPL; ++k) {
        const int c8 = k * 32 + lane;
        if (c8 < NCH) {
            float a[8];
            unpack8(xa[k], a, BF_);
            if (FLAGS_ & 1) {
                float b[8];
                unpack8(ya[k], b, BF_);
                if (FLAGS_ & 2) {
                    float g[8];
                    unpack8(ga[k], g, BF_);
#pragma unroll
                    for (int j = 0; j < 8; ++j) a[j] = rnd(fmaf(g[j], b[j], a[j]), BF_);
                } else {
#pragma unroll
                    for (int j = 0; j < 8; ++j) a[j] = rnd(a[j] + b[j], BF_);
                }
                ((U4*)(x_out + off))[c8] = pack8(a, BF_);
            }
#pragma unroll
            for (int j = 0; j < 8; ++j) { v[k * 8 + j] = a[j]; sum += a[j]; }
        }
    }
    const float mean = warp_sum(sum) / (float)C_;
    float sq = 0.0f;
#pragma unroll
    for (int k = 0; k < KPL; ++k) {
        if (k * 32 + lane < NCH) {
#pragma unroll
            for (int j = 0; j < 8; ++j) { const float d = v[k * 8 + j] - mean; sq += d * d; }
        }
    }
    const float rstd = rsqrtf(warp_sum(sq) / (float)C_ + (float)eps);
#pragma unroll
    for (int k = 0; k < KPL; ++k) {
        const int c8 = k * 32 + lane;
        if (c8 < NCH) {
            float o[8], w[8], b[8];
            if (FLAGS_ & 4) { param8(weight, c8, w, PK_); param8(bias, c8, b, PK_); }
#pragma unroll
            for (int j = 0; j < 8; ++j) {
                float h = (v[k * 8 + j] - mean) * rstd;
                if (FLAGS_ & 4) h = fmaf(h, w[j], b[j]);
                o[j] = rnd(h, BF_);
            }
            if (FLAGS_ & 8) {
                float sh[8], sc[8];
                unpack8(((const U4*)(shift + moff))[c8], sh, BF_);
                unpack8(((const U4*)(scale + moff))[c8], sc, BF_);
#pragma unroll
                for (int j = 0; j < 8; ++j) o[j] = fmaf(o[j], rnd(1.0f + sc[j], BF_), sh[j]);
            }
            ((U4*)(h_out + off))[c8] = pack8(o, BF_);
        }
    }
}
"""

# Compile-time constants: H_ heads of D_ values (D_ / 8 a power of two up to 32), PK_ the gains' dtype, BF_ bfloat16
# activations, WARPS_ units per thread block. One warp per (row, q|k); the D_ / 8 lanes holding one head's 16-byte
# chunks reduce its sum of squares among themselves.
_RMS_TEMPLATE = r"""
#define C_ (H_ * D_)
#define NCH (C_ / 8)
#define KPL ((NCH + 31) / 32)
#define LH (D_ / 8)
extern "C" __global__ void __launch_bounds__(WARPS_ * 32) KERNEL_NAME(
    const unsigned short* __restrict__ q, const unsigned short* __restrict__ k,
    const void* __restrict__ gamma_q, const void* __restrict__ gamma_k,
    unsigned short* __restrict__ q_out, unsigned short* __restrict__ k_out,
    int rows, int q_stride, int k_stride, int parts, double scale)
{
    const long long unit = (long long)blockIdx.x * WARPS_ + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (unit >= (long long)rows * parts) return;
    const int part = (int)(unit % parts);
    const long long row = unit / parts;
    const unsigned short* src = part ? k + row * k_stride : q + row * q_stride;
    unsigned short* dst = (part ? k_out : q_out) + row * C_;
    const void* g = part ? gamma_k : gamma_q;
    U4 va[KPL];
#pragma unroll
    for (int i = 0; i < KPL; ++i) {
        const int c8 = i * 32 + lane;
        if (c8 < NCH) va[i] = ((const U4*)src)[c8];
    }
    const float s = (float)scale;
#pragma unroll
    for (int i = 0; i < KPL; ++i) {
        const int c8 = i * 32 + lane;
        float f[8];
        float ss = 0.0f;
        if (c8 < NCH) {
            unpack8(va[i], f, BF_);
#pragma unroll
            for (int j = 0; j < 8; ++j) ss += f[j] * f[j];
        }
#pragma unroll
        for (int o = 1; o < LH; o <<= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
        const float n = fmaxf(sqrtf(ss), 1e-12f);
        if (c8 < NCH) {
            float gg[8];
            param8(g, c8, gg, PK_);
            float o[8];
#pragma unroll
            for (int j = 0; j < 8; ++j) o[j] = f[j] / n * gg[j] * s;
            ((U4*)dst)[c8] = pack8(o, BF_);
        }
    }
}
"""


def _specialised(template: str, base: str, **constants) -> tuple[str, str]:
    """(source, kernel name) of one compile-time variant of ``template``: the constants as ``#define``s ahead of
    the shared helpers, and a kernel name that spells them (the launchers are kept per name)."""
    name = base + "".join(f"_{k.rstrip('_').lower()}{v}" for k, v in constants.items())
    defines = "".join(f"#define {k} {v}\n" for k, v in constants.items())
    return f"#define KERNEL_NAME {name}\n{defines}{_COMMON}{template}", name


def norm_source(C: int, flags: int, param_kind: int) -> tuple[str, str]:
    """(source, name) of the ``norm_modulate`` kernel for ``C`` channels, ``flags`` and parameter dtype."""
    return _specialised(_NORM_TEMPLATE, "trellis_norm_modulate", C_=C, FLAGS_=flags, PK_=param_kind, WARPS_=WARPS)


def rms_source(heads: int, D: int, bf: int, param_kind: int) -> tuple[str, str]:
    """(source, name) of the vectorised ``head_rms_norm`` kernel for ``heads`` x ``D`` (``D / 8`` a power of two
    up to 32)."""
    return _specialised(_RMS_TEMPLATE, "trellis_head_rms_norm", H_=heads, D_=D, BF_=bf, PK_=param_kind, WARPS_=WARPS)


_variants: dict = {}


def _variant_launcher(make, key: tuple, device, signature: str):
    """The launcher of the variant ``make(*key)`` on ``device``, looked up by ``key`` without building its source
    (a flow pass calls these ~100 times: no string work per call)."""
    got = _variants.get((make, key, device.index))
    if got is None:
        source, name = make(*key)
        got = _variants.setdefault((make, key, device.index), launcher(source, name, device, signature))
    return got


# The generic head_rms_norm kernel, for head sizes the vectorised one does not take: one warp per (row, part, head);
# part 0 reads q, part 1 k (same rows and row stride).
_RMS_SOURCE = _COMMON + r"""
extern "C" __global__ void trellis_head_rms_norm_generic(
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
                or not weight.is_contiguous() or not bias.is_contiguous() \
                or weight.data_ptr() % 16 or bias.data_ptr() % 16:       # read 16 bytes at a time
            return NotImplemented
        flags |= 4
    if gate is not None:
        flags |= 2
    if shift is not None:
        flags |= 8
    rows = x.numel() // C
    x_out = torch.empty_like(x) if y is not None else x
    h_out = torch.empty_like(x)
    launch = _variant_launcher(norm_source, (C, flags, param_kind), x.device, "ppppppppp" + "iii" + "d")
    launch((rows + WARPS - 1) // WARPS, 32 * WARPS, x.device.index,
           x, x if y is None else y, x if gate is None else gate, x if weight is None else weight,
           x if bias is None else bias, x if shift is None else shift, x if scale is None else scale,
           x_out, h_out, rows, per, stride, float(eps))
    return x_out, h_out


def head_rms_norm(q: torch.Tensor, k: torch.Tensor, gamma_q: torch.Tensor, gamma_k: torch.Tensor, scale: float):
    """The twin's two MultiHeadRMSNorms in one kernel (two launches when q and k have different rows; the generic
    kernel for head sizes whose D / 8 is not a power of two, or rows not 16-byte aligned);
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
    index = q.device.index
    (q_rows, q_stride), (k_rows, k_stride) = layout
    lanes = D // 8
    if D % 8 == 0 and lanes & (lanes - 1) == 0 and q_stride % 8 == 0 and k_stride % 8 == 0 \
            and all(t.data_ptr() % 16 == 0 for t in (q, k, gamma_q, gamma_k)):
        launch = _variant_launcher(rms_source, (H, D, bf, kind), q.device, "pppppp" + "iiii" + "d")
        if q_rows == k_rows:
            launch((q_rows * 2 + WARPS - 1) // WARPS, 32 * WARPS, index,
                   q, k, gamma_q, gamma_k, q_out, k_out, q_rows, q_stride, k_stride, 2, float(scale))
        else:
            for t, g, out, rows, stride in ((q, gamma_q, q_out, q_rows, q_stride),
                                            (k, gamma_k, k_out, k_rows, k_stride)):
                launch((rows + WARPS - 1) // WARPS, 32 * WARPS, index,
                       t, t, g, g, out, out, rows, stride, stride, 1, float(scale))
        return q_out, k_out
    launch = launcher(_RMS_SOURCE, "trellis_head_rms_norm_generic", q.device, "pppppp" + "iiiiiii" + "d")
    if q_rows == k_rows and q_stride == k_stride:
        launch((q_rows * 2 * H + WARPS - 1) // WARPS, 32 * WARPS, index,
               q, k, gamma_q, gamma_k, q_out, k_out, q_rows, H, D, q_stride, 2, bf, kind, float(scale))
    else:
        for t, g, out, rows, stride in ((q, gamma_q, q_out, q_rows, q_stride), (k, gamma_k, k_out, k_rows, k_stride)):
            launch((rows * H + WARPS - 1) // WARPS, 32 * WARPS, index,
                   t, t, g, g, out, out, rows, H, D, stride, 1, bf, kind, float(scale))
    return q_out, k_out


# Compile-time constants: C_ channels, BF_ bfloat16, plus the shared helpers. One thread per 16-byte chunk of x.
_RESIDUAL_TEMPLATE = r"""
#define NCH (C_ / 8)
extern "C" __global__ void __launch_bounds__(256) KERNEL_NAME(
    const unsigned short* __restrict__ x, const unsigned short* __restrict__ gate,
    const unsigned short* __restrict__ y, unsigned short* __restrict__ out,
    long long chunks, int rows_per_item, int mod_stride)
{
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= chunks) return;
    const long long row = i / NCH;
    const int c8 = (int)(i - row * NCH);
    const U4 xa = ((const U4*)x)[i], ya = ((const U4*)y)[i];
    const U4 ga = ((const U4*)(gate + (row / rows_per_item) * mod_stride))[c8];
    float a[8], b[8], g[8];
    unpack8(xa, a, BF_);
    unpack8(ya, b, BF_);
    unpack8(ga, g, BF_);
#pragma unroll
    for (int j = 0; j < 8; ++j) a[j] = fmaf(g[j], b[j], a[j]);
    ((U4*)out)[i] = pack8(a, BF_);
}
"""


def residual_source(C: int, bf: int) -> tuple[str, str]:
    """(source, name) of the ``gated_residual`` kernel for ``C`` channels."""
    return _specialised(_RESIDUAL_TEMPLATE, "trellis_gated_residual", C_=C, BF_=bf)


def gated_residual(x: torch.Tensor, gate: torch.Tensor, y: torch.Tensor):
    """The twin's ``x + gate * y`` (``trellis.modules.transformer.gated_residual``: ``gate`` [B, 1, C] per item or
    x's shape per row) in one vectorised pass, rounded once; ``NotImplemented`` for inputs it does not take (not
    CUDA, not fp16/bf16, not contiguous, C not a multiple of 8, other gate layouts)."""
    bf = _HALF.get(x.dtype)
    if bf is None or x.device.type != "cuda" or x.dim() < 2 or x.numel() == 0:
        return NotImplemented
    C = x.shape[-1]
    if C % 8 or not x.is_contiguous() or x.data_ptr() % 16:
        return NotImplemented
    if y.shape != x.shape or y.dtype != x.dtype or not y.is_contiguous() or y.data_ptr() % 16:
        return NotImplemented
    layout = _mod_layout(gate, x)
    if layout is None or layout[1] % 8:
        return NotImplemented
    per, stride = layout
    out = torch.empty_like(x)
    chunks = x.numel() // 8
    launch = _variant_launcher(residual_source, (C, bf), x.device, "pppp" + "l" + "ii")
    launch((chunks + 255) // 256, 256, x.device.index, x, gate, y, out, chunks, per, stride)
    return out
