"""The 8-bit attention kernel (trellis_triton.attention_8bit) against its PyTorch twin
(trellis.modules.attention.quantised.attention_8bit_torch), on the GPU (tests/gpu: skipped without CUDA).

Both start from the same quantised bits (``quantise`` is shared); they differ only where the kernel's fast exp and
its fp32 sums in another order move a probability across an e4m3 rounding boundary. Tolerance, stated once: relative
RMS 2e-3 between the two, at least 10x below the 8-bit maths' own distance from exact attention (3-4 %: see
docs/benchmarks/attention_8bit.md).
"""
import pytest
import torch

from trellis import fastpaths
from trellis.modules.attention import attention_precision, dense_attention, kernel_log, varlen_attention
from trellis.modules.attention.quantised import attention_8bit_torch, quantise

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def rel_rms(a, b):
    a, b = a.double(), b.double()
    return ((a - b).pow(2).mean().sqrt() / b.pow(2).mean().sqrt()).item()


def packed(seed, lengths_q, lengths_kv, heads, dim, dtype=torch.bfloat16, peaked=1.0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    q = torch.randn(sum(lengths_q), heads, dim, device="cuda", generator=g) * peaked
    k = torch.randn(sum(lengths_kv), heads, dim, device="cuda", generator=g) + 3.0    # a shared key offset
    v = torch.randn(sum(lengths_kv), heads, dim, device="cuda", generator=g)
    return q.to(dtype), k.to(dtype), v.to(dtype)


def kernel():
    return fastpaths.KERNELS["attention_8bit"][0].load()


@pytest.mark.parametrize("heads,dim,lengths_q,lengths_kv,peaked", [
    (12, 128, (4096,), (4096,), 1.0),                  # TRELLIS.2 self-attention
    (12, 128, (1000, 0, 777), (1029, 5, 1029), 3.0),    # cross-attention onto the image tokens, ragged, one empty
    (16, 64, (4096, 4096), (4096, 4096), 3.0),          # v1's heads, a CFG pair
    (16, 64, (33, 64, 129), (65, 1, 200), 1.0),         # short windows, a single key
])
def test_kernel_equals_twin(heads, dim, lengths_q, lengths_kv, peaked):
    q, k, v = packed(1, lengths_q, lengths_kv, heads, dim, peaked=peaked)
    args = quantise(q, k, v, lengths_q, lengths_kv) + (lengths_q, lengths_kv, q.dtype)
    fast = kernel()(*args)
    assert fast is not NotImplemented and fast.dtype == q.dtype and fast.shape == q.shape
    twin = attention_8bit_torch(*args)
    assert torch.isfinite(fast).all()
    err = rel_rms(fast, twin)
    exact = varlen_attention(q.float(), k.float(), v.float(), list(lengths_q), list(lengths_kv), backend="sdpa")
    own = rel_rms(twin, exact)
    assert err < 2e-3 and err < own / 10, (err, own)
    start = 0
    for nq, nk in zip(lengths_q, lengths_kv):                 # a sequence without keys: zeros in both
        if nk == 0:
            assert not fast[start:start + nq].any()
        start += nq


def test_the_precision_switch_runs_the_kernel_and_logs_it():
    q, k, v = packed(2, (2048,), (2048,), 12, 128)
    qd, kd, vd = (t.view(1, 2048, 12, 128) for t in (q, k, v))
    with kernel_log.recording() as log, attention_precision("8bit"):
        out = dense_attention(qd, kd, vd)
    assert {name: e["calls"] for name, e in log.items()} == {"8bit_triton": 1}
    fastpaths.set_enabled(False)
    try:
        with attention_precision("8bit"):
            twin = dense_attention(qd, kd, vd)
    finally:
        fastpaths.set_enabled(None)
    assert rel_rms(out, twin) < 2e-3
