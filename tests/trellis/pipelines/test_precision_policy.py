"""The precision 'auto' picks for a card (trellis.pipelines.memory.precision_for) and how pick_preset uses it."""
import pytest
import torch

from trellis.pipelines.memory import (FP32_MIN_GIB, RESIDENT_BUDGET_BYTES, RESIDENT_BUDGET_FP32_BYTES, MemoryPolicy,
                                      pick_preset, precision_for)

GiB = 2 ** 30
CUDA = torch.device("cuda")      # only its type is read when free_bytes is given: no GPU needed


@pytest.mark.parametrize("capability, gib, expected", [
    (None, 80, "fp16"),            # unknown card: the reference's fp16
    ((5, 2), 12, "fp32"),          # Maxwell GTX Titan X
    ((6, 0), 16, "fp32"),          # P100
    ((6, 1), 24, "fp32"),          # P40
    ((6, 1), 10.9, "fp32"),        # GTX 1080 Ti
    ((6, 1), 7.93, "fp32"),        # GTX 1070 / 1080 (8 GB reports ~7.9 GiB)
    ((6, 1), FP32_MIN_GIB, "fp32"),
    ((6, 1), FP32_MIN_GIB - 0.01, "fp16"),
    ((6, 1), 5.93, "fp16"),        # GTX 1060 6 GB: fp16 storage (PyTorch computes in fp32)
    ((6, 1), 3.94, "fp16"),        # GTX 1050 Ti
    ((6, 1), None, "fp16"),        # memory unknown
    ((7, 0), 16, "fp16"),          # V100
    ((7, 5), 3.8, "fp16"),         # GTX 1650 / T4-class
    ((7, 5), 22, "fp16"),
    ((8, 0), 80, "fp16"),          # A100: bf16 is never picked
    ((8, 6), 12, "fp16"),
    ((8, 9), 24, "fp16"),
    ((9, 0), 80, "fp16"),          # H100
    ((10, 0), 180, "fp16"),
    ((12, 0), 32, "fp16"),         # RTX 50xx
])
def test_precision_for_the_card(capability, gib, expected):
    assert precision_for(capability, gib) == expected


def test_precision_is_never_bf16():
    picks = {precision_for((major, minor), gib) for major in range(3, 13) for minor in range(10)
             for gib in (1, 2, 4, 6, 7.5, 8, 12, 16, 24, 48, 80, 192)}
    assert picks == {"fp16", "fp32"}


def test_pick_preset_on_a_pascal_card():
    # GTX 1080 (8 GB, ~7.4 GiB free): fp32 with model offload, sequential CFG (fp32 activations).
    p = pick_preset(CUDA, free_bytes=int(7.4 * GiB), capability=(6, 1), total_bytes=int(7.93 * GiB))
    assert p == MemoryPolicy("fp32", "model", cfg_batch=False, cuda_graphs=False)
    # P40 (24 GB): fp32 stays resident (its budget is larger than fp16's).
    p = pick_preset(CUDA, free_bytes=23 * GiB, capability=(6, 1), total_bytes=24 * GiB)
    assert (p.precision, p.offload, p.cfg_batch) == ("fp32", "none", True)
    # 12 GB Titan Xp: fp32 but below the fp32 resident budget, so offload; CFG batched from 12 GiB free.
    p = pick_preset(CUDA, free_bytes=11 * GiB, capability=(6, 1), total_bytes=12 * GiB)
    assert (p.precision, p.offload, p.cfg_batch) == ("fp32", "model", False)
    p = pick_preset(CUDA, free_bytes=RESIDENT_BUDGET_FP32_BYTES - 1, capability=(6, 0), total_bytes=16 * GiB)
    assert (p.precision, p.offload, p.cfg_batch) == ("fp32", "model", True)
    # GTX 1060 6 GB: fp16 (storage) and the fp16 thresholds.
    p = pick_preset(CUDA, free_bytes=int(5.5 * GiB), capability=(6, 1), total_bytes=6 * GiB)
    assert (p.precision, p.offload, p.cfg_batch) == ("fp16", "model", False)


def test_pick_preset_elsewhere_is_unchanged():
    assert pick_preset(torch.device("cpu")) == MemoryPolicy("fp32", "none", True, False)
    for cap in (None, (7, 5), (8, 6), (9, 0)):
        big = pick_preset(CUDA, free_bytes=RESIDENT_BUDGET_BYTES, capability=cap)
        assert (big.precision, big.offload, big.cfg_batch) == ("fp16", "none", True)
        mid = pick_preset(CUDA, free_bytes=8 * GiB, capability=cap)
        assert (mid.precision, mid.offload, mid.cfg_batch) == ("fp16", "model", True)


def test_an_explicit_precision_sets_the_offload_budget():
    # fp32 asked for on a 12 GiB card: offload (fp16's 10 GiB budget would have kept it resident and run out).
    assert pick_preset(CUDA, free_bytes=12 * GiB, capability=(8, 6), precision="fp32").offload == "model"
    assert pick_preset(CUDA, free_bytes=12 * GiB, capability=(8, 6), precision="bf16").offload == "none"
    assert pick_preset(CUDA, free_bytes=12 * GiB, capability=(8, 6), precision="auto").offload == "none"


def test_auto_on_this_device_resolves_through_the_rule():
    pol = MemoryPolicy().resolve(torch.device("cpu"))
    assert (pol.precision, pol.offload) == ("fp32", "none")
    if torch.cuda.is_available():        # on a GPU machine: the rule with the card's own numbers
        from trellis.core.device import device_capability, usable_device_memory

        dev = torch.device("cuda")
        want = precision_for(device_capability(dev), usable_device_memory(dev) / GiB)
        assert MemoryPolicy().resolve(dev).precision == want
        assert MemoryPolicy(precision="bf16").resolve(dev).precision == "bf16"
