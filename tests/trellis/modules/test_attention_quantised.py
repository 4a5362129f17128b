"""8-bit attention's twin (trellis.modules.attention.quantised): its int8 blocks and e4m3 rounding are what they say,
its error against exact attention is small and bounded, the keys' shared offset (what real checkpoints' keys carry)
costs nothing thanks to the smoothing, and the packed form is each sequence's own."""
import math

import pytest
import torch

from trellis.modules.attention import dense_attention
from trellis.modules.attention.quantised import (BLOCK_K, BLOCK_Q, E4M3_MAX, e4m3, int8_blocks, quantised_dense,
                                                 quantised_varlen)


def exact(q, k, v):
    return dense_attention(q.double(), k.double(), v.double(), backend="naive")


def rel_err(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


def qkv(seed, b=1, lq=300, lk=300, h=4, d=64):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, lq, h, d, generator=g), torch.randn(b, lk, h, d, generator=g),
            torch.randn(b, lk, h, d, generator=g))


def test_int8_blocks_are_integers_scaled_by_each_blocks_largest_magnitude():
    x = torch.randn(2, 3, 200, 16, generator=torch.Generator().manual_seed(1))
    x[0, 1, 70] *= 50                                     # one loud token: only its block's scale grows
    q, scale = int8_blocks(x, 64)
    assert torch.equal(q, q.round()) and q.abs().max() <= 127
    assert scale.shape == (2, 3, 200)
    for start in range(0, 200, 64):
        blk = slice(start, min(start + 64, 200))
        assert torch.allclose(scale[:, :, blk], scale[:, :, blk][..., :1].expand_as(scale[:, :, blk]))
        assert torch.allclose(x[:, :, blk].abs().amax((-1, -2)) / 127, scale[:, :, start])
    assert float(scale[0, 1, 70]) > 10 * float(scale[0, 1, 130])
    assert float((q * scale[..., None] - x).abs().max() / scale.max()) <= 0.5 + 1e-6    # half a level at most


def test_e4m3_rounds_to_the_float8_grid():
    vals = torch.tensor([0.0, 1.0, 1.06, 1.07, 447.0, -3.3, 0.001953125])
    got = e4m3(vals)
    # e4m3: 3 mantissa bits (steps of 1/8 between 1 and 2), largest 448, smallest subnormal 2^-9
    assert got.tolist() == [0.0, 1.0, 1.0, 1.125, 448.0, -3.25, 0.001953125]
    assert E4M3_MAX == torch.finfo(torch.float8_e4m3fn).max


@pytest.mark.parametrize("d", [64, 128])
def test_the_error_against_exact_attention_is_small(d):
    q, k, v = qkv(2, d=d, lq=BLOCK_Q * 2 + 17, lk=BLOCK_K * 5 + 3)
    err = rel_err(quantised_dense(q, k, v), exact(q, k, v))
    bf16 = rel_err(dense_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), backend="naive"), exact(q, k, v))
    # e4m3 keeps 3 mantissa bits: each weight of P is off by up to 1/16, so a few per cent of the output's norm
    assert err < 0.06
    assert err > bf16 / 10                               # ... and it is an approximation, not exact maths
    assert quantised_dense(q.bfloat16(), k.bfloat16(), v.bfloat16()).dtype == torch.bfloat16


def test_a_shared_key_offset_is_smoothed_away_and_query_outliers_cost_more():
    q, k, v = qkv(3)
    plain = rel_err(quantised_dense(q, k, v), exact(q, k, v))
    shifted = k + 40.0 * torch.randn(1, 1, 1, k.shape[-1], generator=torch.Generator().manual_seed(4))
    offset = rel_err(quantised_dense(q, shifted, v), exact(q, shifted, v))
    assert offset < 1.5 * plain                          # the same keys up to an offset: as good as without it
    loud = q.clone()
    loud[..., :2] *= 30.0                                # two outlier channels in Q: the int8 range goes to them
    outliers = rel_err(quantised_dense(loud, k, v), exact(loud, k, v))
    assert math.isfinite(outliers) and outliers > plain  # measured, not hidden


def test_the_packed_form_is_each_sequences_own():
    q, k, v = qkv(5, lq=90, lk=90)
    parts_q, parts_k = [30, 0, 60], [40, 10, 40]
    pq, pk, pv = q[0, :90], k[0, :90], v[0, :90]
    out = quantised_varlen(pq, pk, pv, parts_q, parts_k)
    sq = sk = 0
    for nq, nk in zip(parts_q, parts_k):
        if nq:
            one = quantised_dense(pq[None, sq:sq + nq], pk[None, sk:sk + nk], pv[None, sk:sk + nk])[0]
            assert torch.equal(out[sq:sq + nq], one)
        sq, sk = sq + nq, sk + nk
    assert torch.equal(quantised_varlen(pq, pk, pv, torch.tensor(parts_q), torch.tensor(parts_k)), out)


def test_the_precision_switch_routes_both_kinds_and_is_the_processs_one_choice():
    import threading

    from trellis.modules.attention import attention_precision, varlen_attention
    from trellis.modules.attention import kernel_log

    q, k, v = qkv(6, lq=40, lk=40)
    with kernel_log.recording() as log, attention_precision("8bit"):
        assert torch.equal(dense_attention(q, k, v), quantised_dense(q, k, v))
        assert torch.equal(varlen_attention(q[0], k[0], v[0], [15, 25], [20, 20]),
                           quantised_varlen(q[0], k[0], v[0], [15, 25], [20, 20]))
    assert {name: e["calls"] for name, e in log.items()} == {"8bit_twin": 2}
    assert not torch.equal(dense_attention(q, k, v), quantised_dense(q, k, v))      # exact again after the block
    with pytest.raises(ValueError, match="exact' or '8bit"):
        with attention_precision("int4"):
            pass
    held, release = threading.Event(), threading.Event()

    def other_run():
        with attention_precision("8bit"):
            held.set()
            release.wait(10)
    t = threading.Thread(target=other_run)
    t.start()
    held.wait(10)
    try:
        with pytest.raises(RuntimeError, match="must wait"):
            with attention_precision("exact"):
                pass
        with attention_precision("8bit"):                   # the same choice may join
            assert torch.equal(dense_attention(q, k, v), quantised_dense(q, k, v))
    finally:
        release.set()
        t.join()
