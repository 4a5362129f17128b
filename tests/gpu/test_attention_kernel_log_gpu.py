"""On a GPU, a stage's timings name the kernel "auto" ran: cuDNN for a long half-precision sequence on Hopper or newer,
FlashAttention-2 (PyTorch's varlen) for a short one; the fast paths off keep FlashAttention-2 at every length."""
import pytest
import torch

from trellis import fastpaths
from trellis.modules.attention.functional import has_torch_varlen, varlen_attention
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
