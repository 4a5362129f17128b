"""trellis.pipelines.first_use on CUDA: every step runs (the fast paths on and off, fp16 and bf16) and draws nothing
from the GPU's default generator."""
import pytest
import torch

from trellis.pipelines import first_use


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_every_step_runs_on_cuda(fast_on, fast, dtype):
    before = torch.cuda.get_rng_state()
    done = fast_on(fast, first_use.warm_libraries, "cuda", dtype)
    assert list(done) == [name for name, _ in first_use.STEPS]
    assert all(isinstance(s, float) for s in done.values()), done
    assert torch.equal(torch.cuda.get_rng_state(), before)
