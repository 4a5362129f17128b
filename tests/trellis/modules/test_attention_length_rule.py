"""The attention dispatcher's one rule by length: "auto" asks for cuDNN first from TUNING.cudnn_min_tokens query tokens
(long sequences, where its per-call gain outweighs its plans), FlashAttention-2 below, and never off CUDA (the
CPU's SDPA, unchanged). tests/gpu/test_trellis2_speed_gpu.py compares the two kernels' results on the GPU."""
import torch

from trellis.modules.attention import functional as fn
from trellis.modules.attention import varlen_attention
from trellis.tuning import TUNING, tuned


def test_the_rule_is_one_threshold_on_the_query_length():
    threshold = TUNING.cudnn_min_tokens
    assert not fn.cudnn_in_auto(0) and not fn.cudnn_in_auto(4096)           # v1's flows, TRELLIS.2's structure flow
    assert not fn.cudnn_in_auto(threshold - 1) and fn.cudnn_in_auto(threshold)
    assert fn.cudnn_in_auto(49152)                                           # the cascade's cap
    with tuned(cudnn_min_tokens=1000):                                       # another machine's crossover
        assert fn.cudnn_in_auto(1000) and not fn.cudnn_in_auto(999)
    assert TUNING.cudnn_min_tokens == threshold and not fn.cudnn_in_auto(1000)


def test_long_sequences_on_the_cpu_keep_the_sdpa_path():
    """Off CUDA the rule never applies: "auto" at any length is the same SDPA call as before, bit for bit."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2 * 40, 2, 8, generator=g) for _ in range(3))
    dense = torch.randn(1, 40, 2, 8, generator=g)
    with tuned(cudnn_min_tokens=8):
        assert fn.resolve_varlen_backend("auto", q, 40) == "sdpa"
        assert not fn._cudnn_wanted("auto", q, 40)
        assert torch.equal(varlen_attention(q, k, v, [40, 40], [40, 40], backend="auto"),
                           varlen_attention(q, k, v, [40, 40], [40, 40], backend="sdpa"))
        assert torch.equal(fn.dense_attention(dense, dense, dense, backend="auto"),
                           fn.dense_attention(dense, dense, dense, backend="sdpa"))
