"""A VRAM budget (trellis.core.device.set_memory_budget) as pure functions: budget -> usable memory, budget ->
precision and offload (memory.budget_policy), usable memory -> the export's sizes (pixel budget, views held on the
device, FlexiCubes blocks, compositing groups); and the budget's bookkeeping on a stand-in for torch.cuda's
allocator counters (this box has no GPU: tests/gpu and benchmarks/vram_budget_gpu.py run it on one)."""
import pytest
import torch

from trellis.core import device as dev
from trellis.core.device import usable_memory
from trellis.export.cleanup.visibility import _BYTES_PER_ATLAS_PIXEL, pixel_budget_for
from trellis.export.schedule import DEVICE_VIEW_MARGIN, views_fit_on_device
from trellis.pipelines.memory import CFG_BATCH_MIN_BYTES, RESIDENT_BUDGET_BYTES, budget_policy, pick_preset
from trellis.renderers.gaussian_render import work_budget_for
from trellis.representations.mesh import flexicubes as fc

GiB = 2 ** 30
CUDA = torch.device("cuda", 0)          # only named: nothing here touches a GPU


def test_usable_memory_is_the_budget_less_what_is_held_within_what_is_free():
    assert usable_memory(70 * GiB, 5 * GiB, None) == 70 * GiB                  # no budget: the free memory
    assert usable_memory(70 * GiB, GiB, 3 * GiB) == 2 * GiB                    # the budget, less what is held
    assert usable_memory(GiB, 0, 3 * GiB) == GiB                               # another program holds the rest
    assert usable_memory(70 * GiB, 4 * GiB, 3 * GiB) == 0                      # held past the budget: nothing


@pytest.mark.parametrize("gib, offload", [(2.5, "model"), (3, "model"), (9.9, "model"), (10, "none"), (40, "none")])
def test_a_budget_picks_offload_as_a_card_of_its_size_would(gib, offload):
    budget = int(gib * GiB)
    policy = budget_policy(CUDA, budget, capability=(8, 9))
    assert (policy.precision, policy.offload) == ("fp16", offload)
    card = pick_preset(CUDA, free_bytes=budget, capability=(8, 9))
    assert (policy.precision, policy.offload) == (card.precision, card.offload)
    if offload == "model":
        # Under CFG_BATCH_MIN_BYTES CFG batching is left to each stage (what fits then); no CUDA graphs (they
        # hold their activations).
        assert policy.cfg_batch is (None if budget < CFG_BATCH_MIN_BYTES else True)
        assert policy.cuda_graphs is False
    else:
        assert policy.cuda_graphs == card.cuda_graphs


def test_a_budget_over_what_is_free_is_held_to_what_is_free():
    # A 24 GiB budget where other programs leave 6 GiB: offloaded, as 6 GiB would be.
    assert budget_policy(CUDA, 24 * GiB, room_bytes=6 * GiB, capability=(8, 6)).offload == "model"
    assert budget_policy(CUDA, 24 * GiB, room_bytes=20 * GiB, capability=(8, 6)).offload == "none"
    assert RESIDENT_BUDGET_BYTES > 6 * GiB


def test_a_budget_picks_the_precision_of_a_card_of_its_size():
    assert budget_policy(CUDA, 12 * GiB, capability=(6, 1)).precision == "fp32"      # Pascal with room: fp32
    assert budget_policy(CUDA, 12 * GiB, capability=(6, 1)).offload == "model"       # under fp32's 16 GiB
    assert budget_policy(CUDA, 4 * GiB, capability=(6, 1)).precision == "fp16"       # the same card held to 4
    assert budget_policy(CUDA, 4 * GiB, capability=None).precision == "fp16"


def test_what_the_user_fixed_stays():
    policy = budget_policy(CUDA, 2 * GiB, capability=(8, 0), precision="bf16", offload="none")
    assert (policy.precision, policy.offload) == ("bf16", "none")
    assert budget_policy(CUDA, 40 * GiB, capability=(8, 0), offload="model").cuda_graphs is False
    cpu = budget_policy(torch.device("cpu"), 2 * GiB)
    assert (cpu.precision, cpu.offload) == ("fp32", "none")          # a CPU has no VRAM to budget


@pytest.mark.parametrize("gib", [2, 2.5, 3, 8, 24])
def test_the_export_sizes_fit_in_the_usable_memory(gib):
    """Each size the export takes from the usable memory stays within its share of it (or its fixed floor),
    and a larger budget never gives smaller sizes."""
    held = int(1.2 * GiB)                                    # e.g. the Gaussians, the mesh, the allocator's cache
    room = usable_memory(79 * GiB, held, int(gib * GiB))     # an idle 80 GB card under the budget
    bigger = usable_memory(79 * GiB, held, int(2 * gib * GiB))
    assert room == int(gib * GiB) - held
    pixels = pixel_budget_for(room)
    assert pixels * _BYTES_PER_ATLAS_PIXEL <= max(room // 4, (1 << 22) * _BYTES_PER_ATLAS_PIXEL)
    assert pixel_budget_for(bigger) >= pixels
    cube, face = fc.block_sizes_for(room)
    assert cube * fc.CUBE_BLOCK_BYTES <= max(room * fc.BLOCK_MEMORY_SHARE, fc.CUBE_BLOCK * fc.CUBE_BLOCK_BYTES)
    assert face * fc.FACE_BLOCK_BYTES <= max(room * fc.BLOCK_MEMORY_SHARE, fc.FACE_BLOCK * fc.FACE_BLOCK_BYTES)
    assert fc.block_sizes_for(bigger) >= (cube, face)
    pairs = work_budget_for(1024 * 1024, room)
    assert pairs * 96 <= max(room // 4, (1 << 20) * 96) and work_budget_for(1024 * 1024, bigger) >= pairs
    # 50 bake views of 1024^2 (17 bytes a pixel) wait on the device only with DEVICE_VIEW_MARGIN to spare.
    views = 50 * 17 * 1024 ** 2
    assert views_fit_on_device(room, 50, 17 * 1024 ** 2) == (room - views >= DEVICE_VIEW_MARGIN)
    assert views_fit_on_device(room, 50, 17 * 1024 ** 2) == (gib >= 8)


def test_without_a_budget_the_sizes_follow_the_free_memory_as_before():
    free = 60 * GiB
    assert pixel_budget_for(usable_memory(free, 5 * GiB, None)) == 1 << 26
    assert fc.block_sizes_for(usable_memory(free, 0, None)) == (fc.BLOCK_MEMORY_MAX // fc.CUBE_BLOCK_BYTES,
                                                                fc.BLOCK_MEMORY_MAX // fc.FACE_BLOCK_BYTES)
    assert work_budget_for(512 * 512, None) == 1 << 23


class FakeAllocator:
    """torch.cuda's counters and per-process fraction for one 80 GiB device (this box has no GPU)."""

    def __init__(self, monkeypatch):
        self.fraction, self.reserved, self.allocated, self.emptied = 1.0, 0, 0, 0
        self.peak_allocated = self.peak_reserved = 0
        total = 80 * GiB
        cuda = torch.cuda
        props = type("Props", (), {"total_memory": total})()
        for name, fn in {
            "set_per_process_memory_fraction": lambda f, i=None: setattr(self, "fraction", f),
            "get_per_process_memory_fraction": lambda i=None: self.fraction,
            "get_device_properties": lambda i=None: props,
            "mem_get_info": lambda i=None: (total - 500 * 2 ** 20 - self.reserved, total),
            "memory_reserved": lambda i=None: self.reserved,
            "memory_allocated": lambda i=None: self.allocated,
            "max_memory_reserved": lambda i=None: self.peak_reserved,
            "max_memory_allocated": lambda i=None: self.peak_allocated,
            "reset_peak_memory_stats": lambda i=None: self.reset(),
            "empty_cache": lambda: setattr(self, "emptied", self.emptied + 1),
            "current_device": lambda: 0,
        }.items():
            monkeypatch.setattr(cuda, name, fn, raising=False)
        monkeypatch.setattr(dev, "_FRACTIONS", {})
        monkeypatch.setattr(dev, "_BUDGETS", {})
        monkeypatch.setattr(dev, "_PEAKS", {})

    def reset(self):
        self.peak_allocated, self.peak_reserved = self.allocated, self.reserved

    def use(self, allocated, reserved):
        self.allocated, self.reserved = allocated, reserved
        self.peak_allocated = max(self.peak_allocated, allocated)
        self.peak_reserved = max(self.peak_reserved, reserved)


def test_a_budget_caps_the_allocator_and_every_free_memory_reading(monkeypatch):
    fake = FakeAllocator(monkeypatch)
    dev.set_memory_budget(CUDA, int(2.5 * GiB))
    assert fake.fraction == pytest.approx(2.5 / 80) and fake.emptied == 1
    assert dev.memory_budget(CUDA) == int(2.5 * GiB) and dev.usable_device_memory(CUDA) == int(2.5 * GiB)
    fake.use(GiB // 2, GiB)
    # The context (500 MiB, outside the allocator) is off the driver's free memory only: not counted twice.
    assert dev.free_device_memory(CUDA) == int(1.5 * GiB)
    assert dev.obtainable_device_memory(CUDA) == 2 * GiB
    assert pick_preset(CUDA, capability=(8, 0)).offload == "model"
    dev.set_memory_budget(CUDA, None)                        # lifted: the whole card again
    assert fake.fraction == 1.0 and dev.memory_budget(CUDA) is None
    assert dev.free_device_memory(CUDA) == 80 * GiB - 500 * 2 ** 20 - GiB


def test_a_budget_under_a_cap_keeps_the_cap_and_gives_it_back(monkeypatch):
    fake = FakeAllocator(monkeypatch)
    dev.set_memory_limit(CUDA, 2 * GiB)                      # a benchmark's card-size cap
    dev.set_memory_budget(CUDA, 8 * GiB)                     # a larger budget: the cap still holds
    assert fake.fraction == pytest.approx(2 / 80)
    dev.set_memory_budget(CUDA, GiB)
    assert fake.fraction == pytest.approx(1 / 80)
    dev.set_memory_budget(CUDA, None)
    assert fake.fraction == pytest.approx(2 / 80)
    dev.set_memory_budget(torch.device("cpu"), GiB)          # nothing to do on a CPU
    assert dev.memory_budget(torch.device("cpu")) is None


def test_the_peak_of_a_window_survives_the_stages_resets(monkeypatch):
    fake = FakeAllocator(monkeypatch)
    dev.start_peak_window(CUDA)
    fake.use(2 * GiB, 3 * GiB)                               # a stage's peak
    dev.reset_peak_memory(CUDA)                              # the next stage starts its own
    fake.use(GiB, GiB)
    assert dev.peak_memory(CUDA) == {"peak_allocated": 2 * GiB, "peak_reserved": 3 * GiB}
    fake.use(int(3.5 * GiB), 4 * GiB)                        # the export after the last stage
    assert dev.peak_memory(CUDA) == {"peak_allocated": int(3.5 * GiB), "peak_reserved": 4 * GiB}
    dev.start_peak_window(CUDA)                              # the next job starts afresh
    assert dev.peak_memory(CUDA) == {"peak_allocated": int(3.5 * GiB), "peak_reserved": 4 * GiB}
    fake.use(GiB, GiB)
    dev.reset_peak_memory(CUDA)
    dev.start_peak_window(CUDA)
    assert dev.peak_memory(CUDA)["peak_reserved"] == GiB
    assert dev.peak_memory(torch.device("cpu")) is None
