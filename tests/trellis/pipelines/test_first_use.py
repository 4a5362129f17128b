"""trellis.pipelines.first_use: the libraries a first sampling call brings up, brought up without the model. On the
CPU here (every step runs its PyTorch path); tests/gpu/test_first_use_gpu.py runs it on CUDA, fast paths on and off."""
import pytest
import torch

from trellis.pipelines import first_use


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_every_step_runs_and_draws_no_random_numbers(dtype):
    before = torch.random.get_rng_state()
    done = first_use.warm_libraries("cpu", dtype)
    assert list(done) == [name for name, _ in first_use.STEPS]
    assert all(isinstance(s, float) and s >= 0 for s in done.values()), done
    # A graph capture or a seeded job may run in another thread meanwhile: no generator is touched.
    assert torch.equal(torch.random.get_rng_state(), before)


def test_a_failing_step_is_reported_and_the_others_still_run(monkeypatch):
    def broken(device, dtype, shapes):
        raise RuntimeError("no such kernel")
    monkeypatch.setattr(first_use, "STEPS", (("broken", broken), *first_use.STEPS[1:]))
    done = first_use.warm_libraries("cpu", torch.float32)
    assert done["broken"] == "failed: RuntimeError: no such kernel"
    assert [k for k, v in done.items() if isinstance(v, float)] == [name for name, _ in first_use.STEPS[1:]]


def test_cancel_stops_it_between_steps():
    asked = []

    def cancel():
        asked.append(1)
        return len(asked) > 2
    done = first_use.warm_libraries("cpu", torch.float32, cancel=cancel)
    assert list(done) == [name for name, _ in first_use.STEPS[:2]]
