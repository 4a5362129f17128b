"""A VRAM budget on a real CUDA device (trellis.core.device.set_memory_budget): an allocation past it is an
out-of-memory error, every free-memory reading sees it, lifting it gives the device back, and a job's peak window
keeps the peaks of the stages that reset torch's counters. The whole job beside another process:
benchmarks/vram_budget_gpu.py."""
import pytest
import torch

from trellis.core.device import (free_device_memory, memory_budget, obtainable_device_memory, peak_memory,
                                 set_memory_budget, start_peak_window)
from trellis.export.cleanup.visibility import default_pixel_budget, pixel_budget_for
from trellis.pipelines.memory import StageTracker, pick_preset

GiB = 2 ** 30
MiB = 2 ** 20


@pytest.fixture
def device():
    dev = torch.device("cuda", torch.cuda.current_device())
    torch.cuda.synchronize(dev)
    torch.cuda.empty_cache()
    yield dev
    set_memory_budget(dev, None)
    torch.cuda.empty_cache()


def test_an_allocation_past_the_budget_is_an_out_of_memory_error(device):
    if free_device_memory(device) < 3 * GiB:
        pytest.skip("needs 3 GiB free")
    held = torch.cuda.memory_reserved(device)
    set_memory_budget(device, held + GiB)
    assert memory_budget(device) == held + GiB
    idle = held - torch.cuda.memory_allocated(device)                  # cached, unused: obtainable too
    assert free_device_memory(device) <= GiB and obtainable_device_memory(device) <= GiB + idle
    assert pick_preset(device).offload == "model"               # a 1 GiB card offloads
    assert default_pixel_budget(device) == pixel_budget_for(free_device_memory(device))
    inside = torch.empty(GiB // 2, dtype=torch.uint8, device=device)
    with pytest.raises(torch.OutOfMemoryError):
        torch.empty(GiB, dtype=torch.uint8, device=device)
    assert torch.cuda.memory_reserved(device) <= held + GiB
    del inside
    set_memory_budget(device, None)
    assert memory_budget(device) is None and free_device_memory(device) > 2 * GiB
    torch.empty(2 * GiB, dtype=torch.uint8, device=device)      # lifted: the device is the process's again


def test_the_peak_window_keeps_the_peak_of_an_earlier_stage(device):
    start_peak_window(device)
    base = torch.cuda.memory_allocated(device)
    tracker = StageTracker(device)
    with tracker.stage("large"):
        x = torch.empty(256 * MiB, dtype=torch.uint8, device=device)
        del x
    with tracker.stage("small"):
        y = torch.empty(MiB, dtype=torch.uint8, device=device)
        del y
    assert tracker.stats[1].peak_allocated_bytes < base + 256 * MiB       # the second stage's own peak
    peaks = peak_memory(device)
    assert peaks["peak_allocated"] >= base + 256 * MiB                    # the window's keeps the first's
    assert peaks["peak_reserved"] >= peaks["peak_allocated"]
