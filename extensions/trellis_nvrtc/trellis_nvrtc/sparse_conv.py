"""The submanifold sparse conv as an implicit GEMM on tensor cores, CUDA C through NVRTC: the kernel of the
``sparse_conv3d`` pair whose twin is ``trellis.modules.sparse.conv.submanifold_conv3d_torch`` (same
arguments; results within the tolerances of tests/gpu/test_sparse_conv_gpu.py). It is what a machine
without Triton (PyTorch's Windows wheels) gets instead of the gather-GEMM-scatter twin.

The conv is one GEMM of [N, k^3 * C_in] (each row: the features of a site's k^3 neighbours, zeros where
there is none) by the weight [k^3 * C_in, C_out]; the left matrix never exists. A thread block owns a
BM x BN tile of the output and walks the k^3 offsets and C_in in steps of 32 as one flat loop:

* the offset's column of the neighbour map gives each tile row's source row (``N`` or -1: none);
* ``cp.async`` copies those rows' 32 channels (four 16-byte pieces per row; a missing neighbour or the
  tail of C_in is zero-filled) and the weight's 32 x BN slice, read straight from the reference layout
  [C_out, k, k, k, C_in] (C_in contiguous: the ``col`` operand of the MMA), into a ring of shared-memory
  stages, so the next stages' gathers are in flight while the tensor cores work on this one;
* ``ldmatrix`` + ``mma.sync.m16n8k16`` with fp32 accumulation (fp16 or bf16 inputs; the tiles are stored
  with an XOR swizzle of the 16-byte pieces so ``ldmatrix`` reads without bank conflicts);
* bias (rounded to the feature dtype first, as the twin adds it) and one rounding to the feature dtype.

No CUDA headers: PTX for the copies, the matrix loads and the MMAs. Needs compute capability 8.0 (cp.async,
bf16 MMA); on 7.5 (Turing) fp16 runs the same tiles with plain loads and two ``m16n8k8`` MMAs per step.
Anything else (fp32, float64, C_in not a multiple of 8, odd C_out, older GPUs, autograd) returns
``NotImplemented``: the dispatcher runs the next path.
"""
from __future__ import annotations

import functools

import torch

from . import HALF_C, launcher

__all__ = ["submanifold_conv3d", "implicit_gemm", "pick_tiles", "TILES"]

BK = 32
SMEM_BYTES = 48 * 1024      # static shared memory: no opt-in needed on any GPU
_HALF = {torch.float16: 0, torch.bfloat16: 1}
# (BM, BN) -> (warps along M, warps along N): the warp tiles are 64 x 32 or 32 x 32 / 32 x 64.
TILES = {(128, 128): (2, 4), (64, 128): (2, 2), (128, 64): (2, 2), (64, 64): (2, 2)}

_SOURCE = HALF_C + r"""
#define THREADS (WARPS_M * WARPS_N * 32)
#define WM (BM / WARPS_M)
#define WN (BN / WARPS_N)
#define MT (WM / 16)
#define NT (WN / 8)
#define A_PER (BM * 4 / THREADS)
#define B_PER (BN * 4 / THREADS)
#define BK 32

__device__ __forceinline__ unsigned smem_addr(const void* p) {
    unsigned long long a;
    asm("cvta.to.shared.u64 %0, %1;" : "=l"(a) : "l"(p));
    return (unsigned)a;
}
// 16 bytes global -> shared, zeros when !ok (the source is then not read)
__device__ __forceinline__ void copy16(unsigned short* dst, const unsigned short* src, bool ok) {
#if ASYNC
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" :: "r"(smem_addr(dst)), "l"(src), "r"(ok ? 16 : 0));
#else
    U4 v; v.a = v.b = v.c = v.d = 0u;
    if (ok) v = *(const U4*)src;
    *(U4*)dst = v;
#endif
}
__device__ __forceinline__ void commit() {
#if ASYNC
    asm volatile("cp.async.commit_group;\n" ::);
#endif
}
__device__ __forceinline__ void wait_stages() {
#if ASYNC
    asm volatile("cp.async.wait_group %0;\n" :: "n"(STAGES - 2));
#endif
}
__device__ __forceinline__ void ldsm4(unsigned* r, const unsigned short* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smem_addr(p)));
}
__device__ __forceinline__ void mma(float* c, const unsigned* a, const unsigned* b) {
#if K16
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." DT "." DT ".f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5}, {%6}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3]) : "r"(a[0]), "r"(a[1]), "r"(b[0]));
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5}, {%6}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3]) : "r"(a[2]), "r"(a[3]), "r"(b[1]));
#endif
}
// element offset of the 16-byte piece `c` (0..3) of tile row `r` (32 values per row), swizzled
__device__ __forceinline__ int swz(int r, int c) { return r * BK + ((c ^ ((r >> 1) & 3)) << 3); }

extern "C" __global__ void __launch_bounds__(THREADS) KNAME(
    const unsigned short* __restrict__ feats, const int* __restrict__ nbr, const unsigned short* __restrict__ w,
    const unsigned short* __restrict__ bias, unsigned short* __restrict__ out,
    int n, int c_in, int c_out, int kvol, int has_bias)
{
    __shared__ __align__(128) unsigned short As[STAGES][BM * BK];
    __shared__ __align__(128) unsigned short Bs[STAGES][BN * BK];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int n_co = (c_out + BN - 1) / BN;
    const int m0 = (blockIdx.x / n_co) * BM, n0 = (blockIdx.x % n_co) * BN;
    const int ksteps = (c_in + BK - 1) / BK;
    const int T = kvol * ksteps;

    // loader: this thread copies piece `pc` of tile rows (tid >> 2) + j * THREADS / 4
    const int pc = tid & 3, r0 = tid >> 2;
    long long a_src[A_PER];
    int lo = 0, lk = 0;                                  // offset and C_in step of the next stage to load
    const unsigned short* b_row[B_PER];
    bool b_ok[B_PER];
#pragma unroll
    for (int j = 0; j < B_PER; ++j) {
        const int co = n0 + r0 + j * (THREADS / 4);
        b_ok[j] = co < c_out;
        b_row[j] = w + (long long)(b_ok[j] ? co : 0) * kvol * c_in;
    }

    float acc[MT][NT][4];
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
        for (int k = 0; k < NT; ++k)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[i][k][e] = 0.0f;

    const int wm0 = (warp / WARPS_N) * WM, wn0 = (warp % WARPS_N) * WN;

    auto load_next = [&](int slot) {
        if (lk == 0) {                          // a new offset: this thread's rows' neighbours
#pragma unroll
            for (int j = 0; j < A_PER; ++j) {
                const int row = m0 + r0 + j * (THREADS / 4);
                int s = -1;
                if (row < n) s = nbr[(long long)row * kvol + lo];
                a_src[j] = (s >= 0 && s < n) ? (long long)s * c_in : -1;
            }
        }
        const int kc = lk * BK + pc * 8;
        const bool k_ok = kc < c_in;
#pragma unroll
        for (int j = 0; j < A_PER; ++j) {
            const bool ok = k_ok && a_src[j] >= 0;
            copy16(&As[slot][swz(r0 + j * (THREADS / 4), pc)], ok ? feats + a_src[j] + kc : feats, ok);
        }
#pragma unroll
        for (int j = 0; j < B_PER; ++j) {
            const bool ok = k_ok && b_ok[j];
            copy16(&Bs[slot][swz(r0 + j * (THREADS / 4), pc)], ok ? b_row[j] + (long long)lo * c_in + kc : w, ok);
        }
        if (++lk == ksteps) { lk = 0; ++lo; }
    };

#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
        if (s < T) load_next(s);
        commit();
    }
    for (int t = 0; t < T; ++t) {
        wait_stages();
        __syncthreads();
        const int tn = t + STAGES - 1;
        if (tn < T) load_next(tn % STAGES);
        commit();
        const unsigned short* as = As[t % STAGES];
        const unsigned short* bs = Bs[t % STAGES];
#pragma unroll
        for (int kh = 0; kh < 2; ++kh) {
            unsigned a[MT][4], b[NT][2];
#pragma unroll
            for (int i = 0; i < MT; ++i) {
                const int r = wm0 + i * 16 + (lane & 15);
                ldsm4(a[i], as + swz(r, kh * 2 + (lane >> 4)));
            }
#pragma unroll
            for (int p = 0; p < NT / 2; ++p) {
                const int m = lane >> 3;
                const int r = wn0 + p * 16 + (m >> 1) * 8 + (lane & 7);
                unsigned q[4];
                ldsm4(q, bs + swz(r, kh * 2 + (m & 1)));
                b[2 * p][0] = q[0]; b[2 * p][1] = q[1]; b[2 * p + 1][0] = q[2]; b[2 * p + 1][1] = q[3];
            }
#pragma unroll
            for (int i = 0; i < MT; ++i)
#pragma unroll
                for (int k = 0; k < NT; ++k) mma(acc[i][k], a[i], b[k]);
        }
    }

    const int g = lane >> 2, t4 = lane & 3;
#pragma unroll
    for (int k = 0; k < NT; ++k) {
        const int col = n0 + wn0 + k * 8 + t4 * 2;
        if (col >= c_out) continue;
        float b0 = 0.0f, b1 = 0.0f;
        if (has_bias) { b0 = h2f(bias[col], BF16); b1 = h2f(bias[col + 1], BF16); }
#pragma unroll
        for (int i = 0; i < MT; ++i) {
            const int row = m0 + wm0 + i * 16 + g;
            if (row < n)
                *(unsigned int*)(out + (long long)row * c_out + col) =
                    (unsigned int)f2h(acc[i][k][0] + b0, BF16) | ((unsigned int)f2h(acc[i][k][1] + b1, BF16) << 16);
            if (row + 8 < n)
                *(unsigned int*)(out + (long long)(row + 8) * c_out + col) =
                    (unsigned int)f2h(acc[i][k][2] + b0, BF16) | ((unsigned int)f2h(acc[i][k][3] + b1, BF16) << 16);
        }
    }
}
"""


@functools.lru_cache(maxsize=None)
def _source(bm: int, bn: int, bf16: bool, legacy: bool) -> tuple[str, str, int]:
    """(source, kernel name, threads) of one tile variant (built once: asked for at every call)."""
    wm, wn = TILES[(bm, bn)]
    stages = max(2, min(4, SMEM_BYTES // ((bm + bn) * BK * 2)))
    name = f"trellis_subm_conv_{bm}x{bn}_{'bf16' if bf16 else 'f16'}{'_sm75' if legacy else ''}"
    head = (f"#define BM {bm}\n#define BN {bn}\n#define WARPS_M {wm}\n#define WARPS_N {wn}\n#define STAGES {stages}\n"
            f"#define BF16 {int(bf16)}\n#define DT \"{'bf16' if bf16 else 'f16'}\"\n#define ASYNC {int(not legacy)}\n"
            f"#define K16 {int(not legacy)}\n#define KNAME {name}\n")
    return head + _SOURCE, name, wm * wn * 32


def pick_tiles(n: int, c_out: int, sms: int) -> tuple[int, int]:
    """(BM, BN) for one conv shape: BN 128 when C_out is a multiple of 128 or at most 128 (96 -> one 128-wide
    tile gathers each row once), else 64 (192: three even tiles); then the tile of 64 x 128 or 128 x 64 (8 K
    outputs, 4 warps with a 32 x 64 / 64 x 32 tile each): in a sweep of all four tiles that pair was the fastest,
    or within noise of it, on every layer of the SLat flow and the mesh decoder
    (docs/benchmarks/kernels.md#sparse-conv). ``n`` and ``sms`` are kept for rules that need them (a GPU with
    few SMs)."""
    bn = 128 if (c_out % 128 == 0 or 64 < c_out <= 128) else 64
    return (64, 128) if bn == 128 else (128, 64)


_gpus: dict = {}     # device index -> (compute capability, SM count), read once


def _gpu(index: int):
    got = _gpus.get(index)
    if got is None:
        props = torch.cuda.get_device_properties(index)
        got = _gpus[index] = ((props.major, props.minor), props.multi_processor_count)
    return got


def _legacy(index: int, turing: bool):
    """True: Turing's code path (on sm_80+ too where `turing`); False: sm_80+'s; None: no tensor-core path for this
    GPU here."""
    cap = _gpu(index)[0]
    if cap >= (8, 0):
        return turing
    return True if cap == (7, 5) else None


def implicit_gemm(feats: torch.Tensor, nbr: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                  tiles: tuple[int, int] | None = None, turing: bool = False):
    """out[i] = bias + sum_o feats[nbr[i, o]] @ W_o in ``feats``' dtype (fp32 accumulation), or
    ``NotImplemented`` for what this kernel does not take.

    ``feats`` [N, C_in] fp16/bf16 on CUDA; ``nbr`` int32 [N, k^3] (a row index, or N / -1 for none);
    ``weight`` [C_out, k, k, k, C_in]; ``bias`` [C_out] or None. ``tiles`` = (BM, BN) overrides
    ``pick_tiles`` (benchmarks, tests). ``turing`` runs Turing's code (plain loads, m16n8k8 MMAs; fp16 only) on a
    newer GPU too, so that tests/gpu checks the path a 7.5 card takes on the card it has; a 7.5 card takes it
    anyway."""
    bf = _HALF.get(feats.dtype)
    if bf is None or feats.device.type != "cuda" or feats.ndim != 2 or weight.ndim != 5:
        return NotImplemented
    n, c_in = feats.shape
    c_out, kvol = weight.shape[0], weight.shape[1] * weight.shape[2] * weight.shape[3]
    if weight.shape[-1] != c_in or nbr.shape != (n, kvol):
        raise ValueError(f"shapes do not agree: feats {tuple(feats.shape)}, neighbour map {tuple(nbr.shape)}, "
                         f"weight {tuple(weight.shape)}")
    index = feats.device.index if feats.device.index is not None else torch.cuda.current_device()
    legacy = _legacy(index, bool(turing))
    if c_in % 8 or c_in == 0 or c_out % 2 or legacy is None or (legacy and bf):
        return NotImplemented
    out = torch.empty(n, c_out, dtype=feats.dtype, device=feats.device)
    if n == 0 or c_out == 0:
        return out
    feats = feats.contiguous()
    if feats.data_ptr() % 16:
        feats = feats.clone()
    w = weight.to(feats.dtype).contiguous()
    if w.data_ptr() % 16:
        w = w.clone()
    b = bias.to(feats.dtype).contiguous() if bias is not None else None
    nbr = nbr.to(torch.int32).contiguous()
    if tiles is None:
        tiles = pick_tiles(n, c_out, _gpu(index)[1])
    bm, bn = tiles
    source, name, threads = _source(bm, bn, bool(bf), legacy)
    launch = launcher(source, name, feats.device, "ppppp" + "iiiii")
    grid = -(-n // bm) * -(-c_out // bn)
    launch(grid, threads, index, feats, nbr, w, b if b is not None else w, out,
           n, c_in, c_out, kvol, int(b is not None))
    return out


def submanifold_conv3d(x, weight: torch.Tensor, bias: torch.Tensor | None):
    """Same arguments and result as ``trellis.modules.sparse.conv.submanifold_conv3d_torch``; ``NotImplemented``
    for what the kernel does not take (see the module's doc), kernel size 1 (one GEMM already), channels where the
    twin's gathered GEMM is faster (``conv.gathered_gemm_wins``) and calls that record gradients (no backward here;
    the twin has one)."""
    from trellis.modules.sparse.conv import gathered_gemm_wins, neighbour_map

    feats = x.feats
    if (feats.device.type != "cuda" or feats.dtype not in _HALF or feats.ndim != 2 or weight.ndim != 5
            or weight.device != feats.device or weight.shape[1] == 1
            or gathered_gemm_wins(weight.shape[-1], weight.shape[0])
            or (bias is not None and bias.device != feats.device)
            or (torch.is_grad_enabled() and (feats.requires_grad or weight.requires_grad
                                             or (bias is not None and bias.requires_grad)))):
        return NotImplemented
    return implicit_gemm(feats, neighbour_map(x, weight.shape[1]), weight, bias)
