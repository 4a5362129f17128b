"""8-bit attention's twin (trellis.modules.attention.quantised): its int8 blocks and e4m3 rounding are what they say,
its error against exact attention is small and bounded, the keys' shared offset (what real checkpoints' keys carry)
costs nothing thanks to the smoothing, and the packed form is each sequence's own."""
import math

import pytest
import torch

from trellis.modules.attention import dense_attention
from trellis.modules.attention.quantised import (BLOCK_K, BLOCK_Q, E4M3_MAX, attention_8bit_torch, block_lengths,
                                                 e4m3, quantise, quantised_dense, quantised_varlen)


def exact(q, k, v):
    return dense_attention(q.double(), k.double(), v.double(), backend="naive")


def rel_err(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


def qkv(seed, b=1, lq=300, lk=300, h=4, d=64):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, lq, h, d, generator=g), torch.randn(b, lk, h, d, generator=g),
            torch.randn(b, lk, h, d, generator=g))


def test_quantise_makes_int8_blocks_from_each_sequences_start_and_smooths_the_keys():
    g = torch.Generator().manual_seed(1)
    lengths = (200, 70)
    x = torch.randn(270, 3, 16, generator=g)
    x[70, 1] *= 50                                     # one loud token: only its block's scale grows
    k = x + 5.0                                        # a shared offset on every key
    q8, sq, k8, sk, v8, sv = quantise(x, k, x, lengths, lengths)
    assert q8.dtype == k8.dtype == torch.int8 and v8.dtype == torch.float8_e4m3fn
    assert sq.shape == (len(block_lengths(lengths, BLOCK_Q)), 3) == (3, 3)       # 200 -> 128 + 72, 70 -> 70
    assert sk.shape == (len(block_lengths(lengths, BLOCK_K)), 3) == (6, 3)       # 64 x 3 + 8, 64 + 6
    starts = [0, 128, 200]
    for i, (a, n) in enumerate(zip(starts, (128, 72, 70))):
        blk = x[a:a + n]
        assert torch.allclose(sq[i] * math.sqrt(16), blk.abs().amax((0, 2)) / 127)
        rebuilt = q8[a:a + n].float() * (sq[i] * math.sqrt(16))[None, :, None]
        assert float((rebuilt - blk).abs().max() / sq[i].max()) <= 0.5 * math.sqrt(16) + 1e-4   # half a level
    assert float(sq[0, 1]) > 10 * float(sq[1, 1])
    smoothed = torch.cat([k[:200] - k[:200].mean(0), k[200:] - k[200:].mean(0)])
    assert torch.allclose(sk[0], smoothed[:64].abs().amax((0, 2)) / 127)
    assert torch.allclose(sv[1], x[200:].abs().amax(0) / E4M3_MAX)
    assert torch.equal(v8.float(), e4m3(torch.cat([x[:200] / sv[0], x[200:] / sv[1]])))


def online_reference(q8, sq, k8, sk, v8, sv, nq, nk):
    """One sequence, walked key block by key block with a running maximum, as a one-pass kernel does."""
    heads, d = q8.shape[1], q8.shape[2]
    out = torch.zeros(nq, heads, d, dtype=torch.float64)
    for h in range(heads):
        for r in range(nq):
            m, l, acc = -math.inf, 0.0, torch.zeros(d, dtype=torch.float64)
            for j, start in enumerate(range(0, nk, BLOCK_K)):
                keys = slice(start, min(start + BLOCK_K, nk))
                s = (k8[keys, h].double() @ q8[r, h].double()) * float(sq[r // BLOCK_Q, h]) * float(sk[j, h])
                m_new = max(m, float(s.max()))
                p8 = e4m3((torch.exp(s - m_new) * E4M3_MAX).float()).double()
                alpha = math.exp(m - m_new)
                l = l * alpha + float(p8.sum())
                acc = acc * alpha + p8 @ v8[keys, h].double()
                m = m_new
            out[r, h] = acc / l * sv[0, h].double()
    return out


def test_the_twin_walks_the_keys_as_a_one_pass_kernel_does():
    q, k, v = qkv(8, lq=BLOCK_Q + 9, lk=BLOCK_K * 3 + 5, h=2, d=16)
    q = q * 3                                          # peaked scores: the running maximum changes between blocks
    n_q, n_k = q.shape[1], k.shape[1]
    parts = quantise(q[0], k[0], v[0], (n_q,), (n_k,))
    twin = attention_8bit_torch(*parts, (n_q,), (n_k,), torch.float32)
    ref = online_reference(*parts, n_q, n_k)
    assert float((twin.double() - ref).abs().max()) < 1e-4 * float(ref.abs().max())


def test_the_weights_sum_to_one_and_a_sequence_without_keys_gives_zeros():
    q, k, _ = qkv(9, lq=70, lk=150)
    v = torch.full_like(k, -2.5)
    assert torch.allclose(quantised_dense(q, k, v), v[:, :70], rtol=1e-6, atol=0)   # a constant V: itself
    out = quantised_varlen(q[0], k[0, :40], k[0, :40], [30, 40], [40, 0])
    assert torch.equal(out[30:], torch.zeros_like(out[30:])) and bool(out[:30].abs().sum() > 0)


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


def test_many_sequences_are_quantised_in_one_pass_as_a_few_are_one_by_one(monkeypatch):
    import trellis.modules.attention.quantised as quantised

    g = torch.Generator().manual_seed(10)
    lengths = (130, 0, 300, 65)
    q, k, v = (torch.randn(sum(lengths), 3, 32, generator=g) for _ in range(3))
    few = quantise(q, k, v, lengths, lengths)
    monkeypatch.setattr(quantised, "FEW_SEQUENCES", 0)
    many = quantise(q, k, v, lengths, lengths)
    for name, a, b in zip(("q8", "sq", "k8", "sk", "v8", "sv"), few, many):
        assert a.dtype == b.dtype and a.shape == b.shape, name
        # the mean key's sums run in another order: a key level may move by one where it sat on a rounding tie
        bound = 1.0 if name == "k8" else 1e-6 * float(a.float().abs().max())
        assert float((a.float() - b.float()).abs().max()) <= bound
