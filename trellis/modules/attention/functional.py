"""Softmax attention, dense and variable-length, behind one interface per kind.

Layouts follow flash-attn: dense tensors are [B, L, H, D]; packed variable-length tensors are
[T, H, D] with sequence boundaries given as per-sequence lengths. Scale is always 1/sqrt(D), no
mask, no dropout (spec §3.4). The "naive" implementation is the plain definition in fp32 and is the
yardstick every other backend is tested against.

fp16/bf16 inputs: the GPU kernels accumulate in fp32 and return the input dtype. On the CPU we do
the maths in fp32 and cast back, which gives the same numbers within rounding and avoids the slow
half-precision CPU kernels.
"""
from __future__ import annotations

import contextlib
import inspect
import math
import threading
import warnings
from functools import lru_cache

import torch
import torch.nn.functional as F

from ... import fastpaths
from ...core import backends
from ...tuning import TUNING
from . import kernel_log
from .quantised import quantised_dense, quantised_varlen


# ----------------------------------------------------------------------------------- availability

@lru_cache(maxsize=None)
def _optional(module: str):
    try:
        return __import__(module, fromlist=["_"])
    except Exception:  # not installed, or installed against another torch build
        return None


def has_torch_varlen() -> bool:
    return _torch_varlen_fn() is not None


@lru_cache(maxsize=None)
def _torch_varlen_fn():
    try:
        from torch.nn.attention.varlen import varlen_attn
        return varlen_attn
    except Exception:
        return None


def _warn_fallback(name: str, why: str) -> None:
    warnings.warn(f"attention backend {name!r} {why}; using the built-in PyTorch path instead.",
                  RuntimeWarning, stacklevel=3)


# -------------------------------------------------------------------------------------- 8-bit maths

# "exact" or "8bit": the attention's arithmetic, process-wide while ``attention_precision`` holds it (a module
# global: torch.compile guards on it, so compiled code never keeps the other choice).
PRECISION = {"mode": "exact"}
_PRECISION_LOCK = threading.Lock()
_PRECISION_USERS = [0]


@contextlib.contextmanager
def attention_precision(mode: str):
    """Attention in ``mode`` ("exact", or "8bit": ``quantised``'s maths, an approximation) within the block. Two
    blocks at once must ask for the same mode (RuntimeError otherwise): the choice is the process's. A kept CUDA
    graph replays the kernels it captured: whoever compares the modes runs without kept graphs."""
    if mode not in ("exact", "8bit"):
        raise ValueError(f"attention precision {mode!r}: 'exact' or '8bit'")
    with _PRECISION_LOCK:
        if _PRECISION_USERS[0] and PRECISION["mode"] != mode:
            raise RuntimeError(f"attention runs {PRECISION['mode']} for another run now; {mode} must wait")
        _PRECISION_USERS[0] += 1
        PRECISION["mode"] = mode
    try:
        yield
    finally:
        with _PRECISION_LOCK:
            _PRECISION_USERS[0] -= 1
            if _PRECISION_USERS[0] == 0:
                PRECISION["mode"] = "exact"


def _eight_bit_name(path: str) -> str:
    """The kernel log's name for the 8-bit path that answered (a ``fastpaths`` path): "8bit_triton" or "8bit_twin"."""
    return "8bit_twin" if path == "pytorch" else f"8bit_{path}"


def _eight_bit_logged(kind: str, run, *args) -> torch.Tensor:
    """``run(*args)`` (an 8-bit call), noted in the kernel log under the path that answered it: the dispatcher's first
    choice may decline the inputs (the Triton kernel: heads narrower than 32) or fail, and the next path answers."""
    if torch.compiler.is_compiling():       # nothing is noted there (kernel_log.note): trace the call alone
        return run(*args)
    with fastpaths.paths_taken() as taken:
        out = run(*args)
    kernel_log.note(_eight_bit_name(taken.get("attention_8bit", "pytorch")), kind)
    return out


def attention_mode() -> str:
    """The attention's arithmetic now: "exact", or "8bit" while an ``attention_precision("8bit")`` block runs."""
    return PRECISION["mode"]


# ------------------------------------------------------------------------------------------- dense

def _math_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.promote_types(t.dtype, torch.float32)


def _cpu_upcast(t: torch.Tensor) -> bool:
    return t.device.type == "cpu" and t.dtype in (torch.float16, torch.bfloat16)


def _naive_dense(q, k, v):
    d = q.shape[-1]
    qf, kf, vf = (t.to(_math_dtype(q)).transpose(1, 2) for t in (q, k, v))   # [B, H, L, D]
    w = torch.softmax(qf @ kf.transpose(-1, -2) / math.sqrt(d), dim=-1)
    return (w @ vf).transpose(1, 2).to(q.dtype)


def _sdpa_dense(q, k, v):
    upcast = _cpu_upcast(q)
    qt, kt, vt = ((t.float() if upcast else t).transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(qt, kt, vt)
    return out.transpose(1, 2).to(q.dtype)


# cuDNN's fused attention kernel ships inside PyTorch's CUDA wheels (Windows too) and runs the flows' attention
# shapes faster per call than the FlashAttention-2 kernel that SDPA and varlen_attn pick (results differ by fp16
# rounding), but v1's whole chain was slower with it: at its lengths (a few thousand tokens) the per-call gain does
# not survive fresh buffers and a CFG batch that changes between steps (docs/benchmarks/kernels.md#attention). A
# call's work grows with the square of its length and a plan's cost does not, so from TUNING.cudnn_min_tokens query
# tokens (TRELLIS.2's 1024 flows: up to 49 152 a sequence) the gain outweighs the plans and "auto" runs cuDNN first,
# on Hopper and newer (_CUDNN_AUTO_CAPABILITY). Its twin is the FlashAttention-2 path ("auto" below the threshold,
# and at every length with TRELLIS_FAST_PATHS=off); benchmarks/trellis2_pipeline_gpu.py --attention-sweep measures
# both sides. ATTN_BACKEND / SPARSE_ATTN_BACKEND = cudnn asks for cuDNN first at any length on any GPU that has it.
_CUDNN_AUTO_CAPABILITY = (9, 0)


def cudnn_in_auto(tokens: int) -> bool:
    """The dispatcher's rule (pure): whether "auto" asks for cuDNN first for a call whose longest query sequence has
    `tokens` tokens, on a GPU that has it (Hopper or newer) and with the fast paths on."""
    return tokens >= TUNING.cudnn_min_tokens


def _find_sdpa_priority():
    """(sdpa_kernel, backends in priority order) when this PyTorch can put cuDNN first, else None."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
        if "set_priority" not in inspect.signature(sdpa_kernel).parameters:
            return None
        return sdpa_kernel, [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION,
                             SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    except (ImportError, AttributeError):
        return None


_SDPA_PRIORITY = _find_sdpa_priority()     # at import: torch.compile traces the callers


def _sdpa_priority():
    return _SDPA_PRIORITY


@lru_cache(maxsize=None)
def _cudnn_capability_ok(device: torch.device, auto: bool) -> bool:
    if _sdpa_priority() is None or not torch.backends.cudnn.is_available():
        return False
    need = _CUDNN_AUTO_CAPABILITY if auto else (8, 0)
    return torch.cuda.get_device_capability(device) >= need


def _cudnn_wanted(name: str, q: torch.Tensor, tokens: int = 0) -> bool:
    """Whether backend `name` ("auto" or "cudnn") runs this half-precision CUDA call through cuDNN first; `tokens`:
    the call's longest query sequence (cudnn_in_auto)."""
    if name not in ("auto", "cudnn") or not (q.is_cuda and q.dtype in (torch.float16, torch.bfloat16)):
        return False
    if name == "auto" and not (cudnn_in_auto(tokens) and fastpaths.enabled()):
        return False
    if torch.compiler.is_compiling():
        # Not inside torch.compile (the compiled flow blocks): there the priority context, and the cuDNN operator
        # called directly, recompile and run slower than FlashAttention-2 (docs/benchmarks/kernels.md#attention),
        # so compiled code keeps the kernels it was measured with.
        return False
    return _cudnn_capability_ok(q.device, name == "auto")


def _sdpa_cudnn_first(qt, kt, vt):
    """SDPA on [B, H, L, D] tensors with cuDNN first (SDPA falls back to the next kernel where cuDNN cannot
    run these inputs)."""
    sdpa_kernel, order = _sdpa_priority()
    with sdpa_kernel(order, set_priority=True):
        return F.scaled_dot_product_attention(qt, kt, vt)


def dense_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str | None = None) -> torch.Tensor:
    """q [B, Lq, H, D], k/v [B, Lk, H, D] -> [B, Lq, H, D]."""
    if PRECISION["mode"] == "8bit":
        return _eight_bit_logged("dense", quantised_dense, q, k, v)
    name = backend or backends.get("dense")
    if name == "naive":
        kernel_log.note("naive", "dense")
        return _naive_dense(q, k, v)
    if name in ("auto", "cudnn") and _cudnn_wanted(name, q, q.shape[1]):   # "auto": long sequences only (above)
        kernel_log.note("cudnn", "dense")
        return _sdpa_cudnn_first(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)
    if name == "flash_attn" and q.is_cuda and q.dtype in (torch.float16, torch.bfloat16):
        fa = _optional("flash_attn")
        if fa is not None:
            kernel_log.note("flash_attn", "dense")
            return fa.flash_attn_func(q, k, v)
        _warn_fallback(name, "is not installed")
    if name == "xformers" and q.is_cuda:
        xops = _optional("xformers.ops")
        if xops is not None:
            kernel_log.note("xformers", "dense")
            return xops.memory_efficient_attention(q, k, v)
        _warn_fallback(name, "is not installed")
    kernel_log.note("sdpa", "dense")
    return _sdpa_dense(q, k, v)


# ---------------------------------------------------------------------------------- variable length

def _cumulative(lengths: torch.Tensor) -> torch.Tensor:
    return F.pad(torch.cumsum(lengths, 0), (1, 0)).to(torch.int32)


class SeqLens:
    """Sequence lengths of a packed batch with what the kernels need, computed once.

    `lengths` int64 and `cu` int32 (cumulative, S + 1 entries) live on the device; `max` is a Python
    int. Building one costs a device->host sync; callers cache it (per sparse tensor, per window
    partition) so that the attention calls themselves never sync.
    """

    def __init__(self, lengths, device):
        host = None if isinstance(lengths, torch.Tensor) else [int(v) for v in lengths]
        lengths = torch.as_tensor(lengths if host is None else host, dtype=torch.int64, device=device)
        self.lengths = lengths
        self.cu = _cumulative(lengths)
        # Lengths given as Python numbers need no device -> host copy (no sync; torch.compile traces it
        # without a graph break: the flows' cross-attention builds one inside a compiled block).
        self.host = lengths.tolist() if host is None else host
        # (not max(..., default=0): torch 2.11's Dynamo cannot fold the keyword and breaks the graph there)
        self.max = max(self.host) if self.host else 0

    @staticmethod
    @lru_cache(maxsize=64)
    def uniform(count: int, length: int, device: torch.device) -> "SeqLens":
        return SeqLens([length] * count, device)


def _as_seqlens(lengths, device) -> SeqLens:
    if isinstance(lengths, SeqLens):
        return lengths
    return SeqLens(lengths, device)


def _naive_varlen(q, k, v, lq: SeqLens, lk: SeqLens):
    out = torch.empty_like(q)
    sq, sk = 0, 0
    for nq, nk in zip(lq.lengths.tolist(), lk.lengths.tolist()):
        if nq:
            out[sq:sq + nq] = _naive_dense(q[None, sq:sq + nq], k[None, sk:sk + nk], v[None, sk:sk + nk])[0]
        sq, sk = sq + nq, sk + nk
    return out


def _gather_padded(x: torch.Tensor, starts: torch.Tensor, lengths: torch.Tensor, max_len: int):
    """Rows start_s .. start_s+len_s-1 of packed x [T, H, D] as a zero-padded [S, max_len, H, D] tensor.

    Returns the padded tensor, the validity mask [S, max_len] and the packed row index of each
    valid entry (in mask order).
    """
    pos = torch.arange(max_len, device=x.device)
    valid = pos[None, :] < lengths[:, None]
    rows = (starts[:, None] + pos[None, :])[valid]
    padded = x.new_zeros(lengths.numel(), max_len, *x.shape[1:])
    padded[valid] = x[rows]
    return padded, valid, rows


# Upper bound on the score tensor of one padded SDPA call, in elements.
_PADDED_SCORE_BUDGET = 1 << 27


# Up to this many sequences, attend to each one separately with no padding and no mask (the flows'
# one sequence per batch item); beyond, batch padded groups (the decoders' thousands of windows).
_UNPADDED_MAX_SEQUENCES = 8


def _sdpa_each(q, k, v, sq: SeqLens, sk: SeqLens):
    out = torch.empty_like(q)
    a = b = 0
    for nq, nk in zip(sq.host, sk.host):
        if nq:
            out[a:a + nq] = _sdpa_dense(q[None, a:a + nq], k[None, b:b + nk], v[None, b:b + nk])[0]
        a, b = a + nq, b + nk
    return out


def _sdpa_varlen(q, k, v, sq: SeqLens, sk: SeqLens):
    """Variable-length SDPA on every device. A few sequences: one SDPA call each. More: padded SDPA,
    sequences of similar length batched, keys beyond a sequence's end masked, in groups so that the
    padded score tensor stays bounded (the decoders have thousands of short windows, the flow has a few
    long sequences)."""
    if len(sq.host) <= _UNPADDED_MAX_SEQUENCES:
        return _sdpa_each(q, k, v, sq, sk)
    out = torch.empty_like(q)
    upcast = _cpu_upcast(q)
    lq, lk = sq.lengths, sk.lengths
    start_q, start_k = sq.cu[:-1].long(), sk.cu[:-1].long()
    order = torch.argsort(lk, descending=True)
    lk_sorted = lk[order].tolist()
    lq_max = sq.max
    heads, i = q.shape[1], 0
    while i < order.numel():
        per_seq = heads * max(lq_max, 1) * max(lk_sorted[i], 1)
        j = min(order.numel(), i + max(1, _PADDED_SCORE_BUDGET // per_seq))
        g = order[i:j]
        if int(lq[g].max()) > 0:
            pq, valid_q, rows_q = _gather_padded(q, start_q[g], lq[g], int(lq[g].max()))
            pk, valid_k, _ = _gather_padded(k, start_k[g], lk[g], lk_sorted[i])
            pv, _, _ = _gather_padded(v, start_k[g], lk[g], lk_sorted[i])
            if upcast:
                pq, pk, pv = pq.float(), pk.float(), pv.float()
            res = F.scaled_dot_product_attention(pq.transpose(1, 2), pk.transpose(1, 2), pv.transpose(1, 2),
                                                 attn_mask=valid_k[:, None, None, :])
            out[rows_q] = res.transpose(1, 2)[valid_q].to(q.dtype)
        i = j
    return out


def _uniform(s: SeqLens) -> bool:
    return len(s.host) > 0 and s.host[0] > 0 and s.host.count(s.host[0]) == len(s.host)


def _cudnn_uniform(q, k, v, sq: SeqLens, sk: SeqLens):
    """Packed sequences that all have one length (a flow's CFG pair on one structure; the cross-attention's
    condition tokens) are a dense batch: [B * L, H, D] viewed as [B, H, L, D], no copy, for SDPA with cuDNN first;
    its output is packed again (no copy where it is [B, L, H, D] in memory)."""
    b, nq, nk = len(sq.host), sq.host[0], sk.host[0]
    qt = q.view(b, nq, *q.shape[1:]).transpose(1, 2)
    kt = k.view(len(sk.host), nk, *k.shape[1:]).transpose(1, 2)
    vt = v.view(len(sk.host), nk, *v.shape[1:]).transpose(1, 2)
    return _sdpa_cudnn_first(qt, kt, vt).transpose(1, 2).reshape(q.shape[0], *q.shape[1:-1], v.shape[-1])


def _torch_varlen(q, k, v, sq: SeqLens, sk: SeqLens):
    op = _flash_forward_op()
    if op is not None and q.shape[-1] % 8 == 0 and q.shape[-1] <= 256:
        return op(q, k, v, sq.cu, sk.cu, sq.max, sk.max, 0.0, False, False)[0]
    return _torch_varlen_fn()(q, k, v, sq.cu, sk.cu, sq.max, sk.max)


@lru_cache(maxsize=None)
def _flash_forward_op():
    """The ATen FlashAttention-2 operator that ``varlen_attn`` calls (packed [T, H, D] tensors, cumulative lengths),
    or None. Called directly: ``varlen_attn`` is a Python custom operator and SDPA's batched operator on
    [B, H, L, D] views adds views and checks, each about twice this one call's host time, and the SLat flow's eager
    steps wait on the host (48 attention calls per forward; docs/benchmarks/pipeline.md#host-time). The same
    kernel: bit-equal to both (tests/gpu)."""
    return getattr(torch.ops.aten, "_flash_attention_forward", None)


def _flash_varlen(fa, q, k, v, sq: SeqLens, sk: SeqLens):
    return fa.flash_attn_varlen_func(q, k, v, sq.cu, sk.cu, sq.max, sk.max)


def _xformers_varlen(xops, q, k, v, sq: SeqLens, sk: SeqLens):
    bias = xops.fmha.BlockDiagonalMask.from_seqlens(sq.lengths.tolist(), sk.lengths.tolist())
    return xops.memory_efficient_attention(q[None], k[None], v[None], attn_bias=bias)[0]


@lru_cache(maxsize=None)
def _flash_capable(device: torch.device) -> bool:
    # FlashAttention-2 kernels (behind torch's varlen_attn and flash-attn) need Ampere (sm_80) or newer.
    return torch.cuda.get_device_capability(device)[0] >= 8


def resolve_varlen_backend(name: str, q: torch.Tensor, tokens: int = 0) -> str:
    """The backend that will actually run for this call (after availability checks); `tokens`: its longest query
    sequence (the "auto" rule, cudnn_in_auto)."""
    gpu_half = q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and _flash_capable(q.device)
    if name in ("auto", "cudnn") and _cudnn_wanted(name, q, tokens):
        return "cudnn"
    if name in ("auto", "cudnn"):
        return "torch_varlen" if gpu_half and has_torch_varlen() else "sdpa"
    if name == "torch_varlen" and not (gpu_half and has_torch_varlen()):
        return "sdpa"
    if name == "flash_attn":
        if not gpu_half:
            return "sdpa"
        if _optional("flash_attn") is None:
            _warn_fallback(name, "is not installed")
            return resolve_varlen_backend("auto", q, tokens)
    if name == "xformers":
        if not q.is_cuda:
            return "sdpa"
        if _optional("xformers.ops") is None:
            _warn_fallback(name, "is not installed")
            return resolve_varlen_backend("auto", q, tokens)
    return name


def varlen_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths_q, lengths_kv,
                     backend: str | None = None) -> torch.Tensor:
    """Attention within each of S independent sequences packed along dim 0.

    q [Tq, H, D], k/v [Tk, H, D]; lengths_q / lengths_kv: S lengths (list, tensor or SeqLens), summing
    to Tq / Tk. Sequence s of q attends to sequence s of k/v only. Returns [Tq, H, D].
    """
    if q.shape[0] == 0:
        return q.clone()
    lq, lk = _as_seqlens(lengths_q, q.device), _as_seqlens(lengths_kv, q.device)
    if PRECISION["mode"] == "8bit":
        return _eight_bit_logged("varlen", quantised_varlen, q, k, v, lq.host, lk.host)
    name = resolve_varlen_backend(backend or backends.get("varlen"), q, lq.max)
    if name == "cudnn":
        if _uniform(lq) and _uniform(lk):
            kernel_log.note("cudnn", "varlen")
            return _cudnn_uniform(q, k, v, lq, lk)
        name = "torch_varlen" if has_torch_varlen() else "sdpa"     # sequences of different lengths
    kernel_log.note(name, "varlen")
    if name == "naive":
        return _naive_varlen(q, k, v, lq, lk)
    if name == "torch_varlen":
        return _torch_varlen(q, k, v, lq, lk)
    if name == "flash_attn":
        return _flash_varlen(_optional("flash_attn"), q, k, v, lq, lk)
    if name == "xformers":
        return _xformers_varlen(_optional("xformers.ops"), q, k, v, lq, lk)
    return _sdpa_varlen(q, k, v, lq, lk)
