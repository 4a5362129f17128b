"""On a GPU, a stage's timings name the kernel "auto" ran: cuDNN for a long half-precision sequence on Hopper or newer,
FlashAttention-2 (PyTorch's varlen) for a short one; the fast paths off keep FlashAttention-2 at every length. Under
8-bit attention the log names the path that answered: the Triton kernel, or the twin for heads it declines."""
import pytest
import torch

from trellis import fastpaths
from trellis.modules.attention import attention_precision, kernel_log
from trellis.modules.attention.functional import dense_attention, has_torch_varlen, varlen_attention
from trellis.pipelines.memory import StageTracker
from trellis.tuning import TUNING


def kernels_of(tokens: int) -> dict:
    x = torch.randn(tokens, 4, 64, device="cuda", dtype=torch.float16)
    tracker = StageTracker(torch.device("cuda"))
    with tracker.stage("flow"):
        varlen_attention(x, x, x, [tokens], [tokens])
    return tracker.as_dicts()[0]["attention"]


def test_the_stage_names_the_kernel_auto_ran():
    if torch.cuda.get_device_capability() < (9, 0) or not has_torch_varlen():
        pytest.skip("the cuDNN rule applies on Hopper or newer with PyTorch's varlen attention")
    short = "torch_varlen"
    assert kernels_of(1024) == {short: {"calls": 1, "why": "auto"}}
    assert kernels_of(TUNING.cudnn_min_tokens) == {"cudnn": {"calls": 1, "why": "auto"}}
    fastpaths.set_enabled(False)
    try:
        assert kernels_of(TUNING.cudnn_min_tokens) == {short: {"calls": 1, "why": "auto"}}
    finally:
        fastpaths.set_enabled(True)


def test_8bit_calls_name_the_path_that_answered():
    """The dispatcher's first choice is the Triton kernel; it declines heads narrower than 32 (the tiny pipelines'
    16), and the twin that answers them is what the log names."""
    if fastpaths.path_of("attention_8bit", "cuda") != "triton" or torch.cuda.get_device_capability() < (8, 0):
        pytest.skip("the 8-bit Triton kernel runs on sm_80 or newer with Triton")

    def noted(head_dim: int) -> dict:
        q = torch.randn(1, 256, 4, head_dim, device="cuda", dtype=torch.float16)
        with kernel_log.recording() as log, attention_precision("8bit"):
            dense_attention(q, q, q)
            varlen_attention(q[0], q[0], q[0], [100, 156], [100, 156])
        return {name: e["calls"] for name, e in log.items()}

    assert noted(16) == {"8bit_twin": 2}
    assert noted(64) == {"8bit_triton": 2}
    assert fastpaths.path_of("attention_8bit", "cuda") == "triton"      # declining switched nothing off
