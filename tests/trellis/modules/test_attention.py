"""Attention backends against the plain definition; shifted windows against brute-force masked attention."""
import math
import os
import subprocess
import sys

import pytest
import torch

from trellis.core import backends
from trellis.modules.attention import dense_attention, varlen_attention
from trellis.modules.sparse import SparseMultiHeadAttention, SparseTensor, window_partition


def brute_force(q, k, v, allowed):
    """q/k/v [T, H, D]; allowed [Tq, Tk] bool. fp64 reference."""
    s = torch.einsum("qhd,khd->hqk", q.double(), k.double()) / math.sqrt(q.shape[-1])
    s = s.masked_fill(~allowed[None], float("-inf"))
    return torch.einsum("hqk,khd->qhd", torch.softmax(s, -1), v.double())


@pytest.mark.parametrize("backend", ["naive", "sdpa", "auto", "torch_varlen", "cudnn", "flash_attn", "xformers"])
def test_varlen_backends_match_definition(backend):
    g = torch.Generator().manual_seed(0)
    lq, lk = [5, 1, 17, 3, 64], [7, 2, 17, 1, 30]
    q = torch.randn(sum(lq), 4, 16, generator=g)
    k = torch.randn(sum(lk), 4, 16, generator=g)
    v = torch.randn(sum(lk), 4, 16, generator=g)
    seq_q = torch.repeat_interleave(torch.arange(len(lq)), torch.tensor(lq))
    seq_k = torch.repeat_interleave(torch.arange(len(lk)), torch.tensor(lk))
    ref = brute_force(q, k, v, seq_q[:, None] == seq_k[None, :])
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # optional kernels absent here: built-in fallback
        out = varlen_attention(q, k, v, lq, lk, backend=backend)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)


def test_varlen_sdpa_groups_many_sequences(monkeypatch):
    """Force the padded path to split the sequences into many groups; result unchanged."""
    import trellis.modules.attention.functional as fn
    g = torch.Generator().manual_seed(1)
    lens = torch.randint(1, 40, (60,), generator=g).tolist()
    q = torch.randn(sum(lens), 2, 8, generator=g)
    ref = varlen_attention(q, q, q, lens, lens, backend="naive")
    monkeypatch.setattr(fn, "_PADDED_SCORE_BUDGET", 2 * 40 * 40 * 3)
    out = varlen_attention(q, q, q, lens, lens, backend="sdpa")
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_varlen_half_precision_on_cpu():
    g = torch.Generator().manual_seed(2)
    q = torch.randn(30, 2, 8, generator=g)
    ref = varlen_attention(q, q, q, [10, 20], [10, 20], backend="naive")
    out = varlen_attention(q.half(), q.half(), q.half(), [10, 20], [10, 20], backend="sdpa")
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.float(), ref, atol=3e-3, rtol=3e-3)


@pytest.mark.parametrize("backend", ["naive", "sdpa", "auto"])
def test_dense_backends_match_definition(backend):
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, n, 3, 8, generator=g) for n in (9, 13, 13))
    allowed = torch.ones(9, 13, dtype=torch.bool)
    out = dense_attention(q, k, v, backend=backend)
    for b in range(2):
        torch.testing.assert_close(out[b].double(), brute_force(q[b], k[b], v[b], allowed), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shift", [0, 4])
def test_swin_attention_equals_masked_attention(shift):
    """Rows attend exactly to the rows of the same batch item in the same shifted 8^3 window."""
    g = torch.Generator().manual_seed(4)
    coords = []
    for b in range(2):
        occ = (torch.rand(20, 20, 20, generator=g) < 0.08).nonzero().int()
        occ = occ[torch.randperm(len(occ), generator=g)]
        coords.append(torch.cat([torch.full((len(occ), 1), b, dtype=torch.int32), occ], 1))
    coords = torch.cat(coords)
    x = SparseTensor(torch.randn(len(coords), 24, generator=g), coords)
    attn = SparseMultiHeadAttention(24, 3, attn_mode="swin", window_size=8, shift=shift).double()
    out = attn(x.replace(x.feats.double())).feats
    q, k, v = attn.qkv(x.feats.double())
    win = torch.div(coords[:, 1:].long() + shift, 8, rounding_mode="floor")
    same = (coords[:, None, 0] == coords[None, :, 0]) & (win[:, None] == win[None, :]).all(-1)
    ref = attn.out(brute_force(q, k, v, same).to(q.dtype))
    torch.testing.assert_close(out, ref, atol=1e-9, rtol=1e-9)
    order, lengths = window_partition(x, 8, shift)
    assert lengths.lengths.sum().item() == len(coords) and lengths.max <= 512 and lengths.cu[-1] == len(coords)


def test_full_and_cross_sparse_attention_stay_within_batch_item():
    g = torch.Generator().manual_seed(5)
    coords = torch.tensor([[0, 0, 0, 0], [0, 1, 0, 0], [1, 0, 0, 0], [1, 0, 3, 0], [1, 2, 2, 2]], dtype=torch.int32)
    x = SparseTensor(torch.randn(5, 12, generator=g).double(), coords)
    full = SparseMultiHeadAttention(12, 2, attn_mode="full", qk_rms_norm=True).double()
    q, k, v = full.qkv(x.feats)
    same = coords[:, None, 0] == coords[None, :, 0]
    torch.testing.assert_close(full(x).feats, full.out(brute_force(q, k, v, same).to(q.dtype)))
    ctx = torch.randn(2, 7, 10, generator=g).double()
    cross = SparseMultiHeadAttention(12, 2, ctx_channels=10, cross=True).double()
    q, k, v = cross.qkv(x.feats, ctx)
    allowed = coords[:, 0, None].long() == torch.arange(2).repeat_interleave(7)[None]
    ref = cross.out(brute_force(q, k.flatten(0, 1), v.flatten(0, 1), allowed).to(q.dtype))
    torch.testing.assert_close(cross(x, ctx).feats, ref)


def test_backend_names_and_aliases():
    assert backends.normalise("ATTN_BACKEND", "flash-attn", backends.DENSE_BACKENDS) == "flash_attn"
    assert backends.normalise("ATTN_BACKEND", None, backends.DENSE_BACKENDS) == "auto"
    with pytest.raises(ValueError, match="ATTN_BACKEND='flashattention2' is not a known value"):
        backends.normalise("ATTN_BACKEND", "flashattention2", backends.DENSE_BACKENDS)


def _import_with_env(**env):
    full = {**os.environ, **env}
    code = ("from trellis.core import backends as c; "
            "print(c.get('dense'), c.get('varlen'), c.get('sparse_conv'), c.get('spconv_algo'))")
    return subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True)


def test_environment_variables_are_honoured_and_refused_clearly():
    ok = _import_with_env(ATTN_BACKEND="flash-attn", SPARSE_BACKEND="spconv", SPCONV_ALGO="native")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.split() == ["flash_attn", "flash_attn", "spconv", "native"]   # sparse falls back to dense
    ok = _import_with_env(ATTN_BACKEND="sdpa", SPARSE_ATTN_BACKEND="xformers")
    assert ok.stdout.split()[:2] == ["sdpa", "xformers"]
    bad = _import_with_env(SPARSE_BACKEND="torchsparse2")
    assert bad.returncode != 0 and "SPARSE_BACKEND='torchsparse2' is not a known value" in bad.stderr


def test_seqlens_from_python_lengths_trace_without_a_graph_break():
    """The flows' compiled cross-attention builds a SeqLens from Python lengths inside the compiled block:
    Dynamo must trace it in one graph (torch 2.11 broke the graph at max(..., default=0))."""
    import torch._dynamo

    from trellis.modules.attention.functional import SeqLens

    def f(x):
        s = SeqLens([3, 4], x.device)
        return x * s.max + s.cu.sum()

    torch._dynamo.reset()
    explained = torch._dynamo.explain(f)(torch.ones(3))
    assert explained.graph_break_count == 0, explained.break_reasons
    assert torch.equal(f(torch.ones(3)), torch.full((3,), 4.0 + 10))
    assert SeqLens([], "cpu").max == 0
