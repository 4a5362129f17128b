"""TRELLIS.2 fast and small on the GPU (tests/gpu: skipped without CUDA): the attention's long-sequence rule (cuDNN
first from TUNING.cudnn_min_tokens query tokens) against FlashAttention-2, its twin; the SC-VAE's chunked C2S block
against the whole block through the sparse-conv kernels, with a lower peak, and whole where the GPU has room for it
(its peak within ``whole_bytes``), chunked under a small VRAM budget; a low-VRAM run that has each network on
the GPU only for its own stage; and an out-of-memory under a VRAM budget that names its stage and the budget.

Tolerance, stated once: cuDNN and FlashAttention-2 accumulate in fp32 in different orders, so bf16 outputs differ by
rounding: relative RMS 5e-3 (bf16 keeps 8 mantissa bits to fp16's 11: the 2e-3 of test_attention_gpu.py's fp16
cases, scaled). The chunked C2S block computes every row from the same rows with the same kernel: fp16's own
tolerance (torch.testing's defaults).
"""
import re

import numpy as np
import pytest
import torch
from PIL import Image

from trellis import fastpaths
from trellis.core.device import set_memory_budget
from trellis.modules.attention import functional as fn
from trellis.modules.attention.functional import SeqLens, dense_attention, varlen_attention
from trellis.modules.sparse import SparseTensor
from trellis.tuning import TUNING

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
DEV = "cuda"


def rel_rms(a, b):
    a, b = a.float(), b.float()
    return ((a - b).pow(2).mean().sqrt() / b.pow(2).mean().sqrt()).item()


def packed(count, n, heads=12, dim=128, seed=0):
    g = torch.Generator(device=DEV).manual_seed(seed + n)
    return torch.randn(count * n, heads, dim, device=DEV, generator=g, dtype=torch.bfloat16)


@torch.no_grad()
@pytest.mark.parametrize("kv", [None, 4101])          # self-attention of the CFG pair; cross to DINOv3's tokens
def test_long_sequences_take_cudnn_within_rounding_of_flash(kv):
    n = TUNING.cudnn_min_tokens + 2917
    lk = n if kv is None else kv
    q, k, v = packed(2, n), packed(2, lk, seed=1), packed(2, lk, seed=2)
    sq, sk = SeqLens([n, n], DEV), SeqLens([lk, lk], DEV)
    cudnn = fn._sdpa_priority() is not None and torch.cuda.get_device_capability() >= (9, 0)
    assert fn.resolve_varlen_backend("auto", q, n) == ("cudnn" if cudnn else "torch_varlen")
    want = varlen_attention(q, k, v, sq, sk, backend="torch_varlen")
    got = varlen_attention(q, k, v, sq, sk, backend="auto")
    assert got.shape == want.shape and got.dtype == torch.bfloat16
    assert rel_rms(got, want) < 5e-3
    fastpaths.set_enabled(False)                        # the twin: FlashAttention-2 at every length, bit for bit
    try:
        assert fn.resolve_varlen_backend("auto", q, n) == "torch_varlen"
        assert torch.equal(varlen_attention(q, k, v, sq, sk, backend="auto"), want)
    finally:
        fastpaths.set_enabled(None)
    short = TUNING.cudnn_min_tokens - 1                     # below the threshold: v1's choice, bit for bit
    qs, ss = q[:2 * short], SeqLens([short, short], DEV)
    ks, vs = (k, v) if kv is not None else (k[:2 * short], v[:2 * short])
    sks = sk if kv is not None else ss
    assert torch.equal(varlen_attention(qs, ks, vs, ss, sks, backend="auto"),
                       varlen_attention(qs, ks, vs, ss, sks, backend="torch_varlen"))
    dq = q.view(2, n, 12, 128)                          # the dense entry point follows the same rule
    dk, dv = k.view(2, lk, 12, 128), v.view(2, lk, 12, 128)
    assert rel_rms(dense_attention(dq, dk, dv, backend="auto"), dense_attention(dq, dk, dv, backend="sdpa")) < 5e-3


def c2s_case():
    """A C2S block 128 -> 64 in fp16 and ~230 000 parents on a shell: (block, xyz, coords, feats)."""
    from trellis.models.trellis2.sc_vae_blocks import SparseResBlockC2S3d

    torch.manual_seed(0)
    block = SparseResBlockC2S3d(128, 64).to(DEV).half().eval()
    r = torch.arange(160, device=DEV, dtype=torch.float32) + 0.5 - 80
    d = torch.sqrt(r[:, None, None] ** 2 + r[None, :, None] ** 2 + r[None, None, :] ** 2)
    xyz = (torch.abs(d - 60) < 2.5).nonzero().int()
    coords = torch.cat([torch.zeros(len(xyz), 1, dtype=torch.int32, device=DEV), xyz], 1)
    feats = torch.randn(len(xyz), 128, device=DEV, generator=torch.Generator(device=DEV).manual_seed(1)).half()
    return block, xyz, coords, feats


def run_block(block, feats, coords):
    """(the block's children, its subdivision logits, the peak allocated above what was allocated before)."""
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    out, sub = block(SparseTensor(feats, coords))
    torch.cuda.synchronize()
    return out, sub, torch.cuda.max_memory_allocated() - base


@torch.no_grad()
def test_the_chunked_c2s_block_gives_the_whole_blocks_rows_with_a_lower_peak(monkeypatch):
    from trellis.models.trellis2.sc_vae_blocks import SparseResBlockC2S3d

    block, xyz, coords, feats = c2s_case()
    whole, _, whole_peak = run_block(block, feats, coords)
    monkeypatch.setattr(SparseResBlockC2S3d, "CHUNK_ELEMENTS", 1 << 24)  # ~8 chunks of parents
    monkeypatch.setattr(SparseResBlockC2S3d, "WHOLE_MEMORY_SHARE", 0.0)  # chunked however much memory is free
    monkeypatch.setattr(SparseResBlockC2S3d, "CHILD_MAP_BYTES", 1 << 24)  # conv2 by rows: the windowed kernel calls
    monkeypatch.setattr(SparseResBlockC2S3d, "CHILD_CHUNK", 1 << 17)
    chunked, _, chunked_peak = run_block(block, feats, coords)
    assert len(whole.coords) > len(xyz) and torch.equal(chunked.coords, whole.coords)
    torch.testing.assert_close(chunked.feats, whole.feats)
    assert chunked_peak < 0.8 * whole_peak, (chunked_peak, whole_peak)   # conv1's 8x output and the fp32 norm gone


@torch.no_grad()
def test_the_c2s_block_runs_whole_where_the_gpu_has_room_and_chunked_under_a_small_budget(monkeypatch):
    from trellis.models.trellis2.sc_vae_blocks import SparseResBlockC2S3d

    block, xyz, coords, feats = c2s_case()
    monkeypatch.setattr(SparseResBlockC2S3d, "CHUNK_ELEMENTS", 1 << 24)      # this block is above it
    calls = []
    chunked = SparseResBlockC2S3d.forward_chunked
    monkeypatch.setattr(SparseResBlockC2S3d, "forward_chunked",
                        lambda self, *a: calls.append(1) or chunked(self, *a))

    whole, sub, peak = run_block(block, feats, coords)
    children = int((sub.feats > 0).sum())
    assert not calls                                      # room on this GPU: whole
    assert peak <= block.whole_bytes(len(xyz), children, 2), (peak, block.whole_bytes(len(xyz), children, 2))
    torch.cuda.empty_cache()
    set_memory_budget(DEV, torch.cuda.memory_reserved() + block.whole_bytes(len(xyz), children, 2))
    try:
        small, _, _ = run_block(block, feats, coords)
    finally:
        set_memory_budget(DEV, None)
    assert calls                                          # half of that room is too little: chunked
    assert torch.equal(small.coords, whole.coords)
    torch.testing.assert_close(small.feats, whole.feats)


def object_image():
    arr = np.zeros((96, 80, 4), np.uint8)
    arr[20:80, 15:65] = (200, 120, 40, 255)
    return Image.fromarray(arr)


@pytest.fixture
def offloaded(tiny_trellis2_dir):
    import trellis.pipelines as pipelines

    pipe = pipelines.from_pretrained(tiny_trellis2_dir)
    pipe.set_memory_policy(precision="fp16", offload="model")
    return pipe.to(DEV)


@torch.no_grad()
def test_a_low_vram_run_has_each_network_on_the_gpu_only_for_its_stage(offloaded):
    pipe = offloaded
    models = pipe._all_models()
    seen = []

    def on_gpu():
        return {key for key, m in models.items() if any(p.is_cuda for p in m.parameters())}

    hooks = [m.register_forward_pre_hook(lambda *_, key=key: seen.append((key, on_gpu())))
             for key, m in models.items()]
    one = {"steps": 1}
    try:
        meshes = pipe.run(object_image(), seed=3, pipeline_type="1024_cascade", sparse_structure_sampler_params=one,
                          shape_slat_sampler_params=one, tex_slat_sampler_params=one)
    finally:
        for h in hooks:
            h.remove()
    assert meshes[0].faces.shape[0] > 0
    assert {key for key, _ in seen} >= {"image_cond_model", "sparse_structure_flow_model", "shape_slat_decoder",
                                        "tex_slat_decoder"}
    assert all(gpu == {key} for key, gpu in seen), [s for s in seen if s[1] != {s[0]}]
    assert on_gpu() == set()                            # all back in host memory after the run


def test_an_out_of_memory_under_a_budget_names_the_stage_and_the_budget(offloaded):
    from trellis.pipelines.memory import StageOutOfMemoryError

    # 1 MiB: the first stage that needs new device memory fails (which one depends on what the allocator's cache
    # already holds from earlier tests in this process: emptied first, or a large cache serves the whole run).
    torch.cuda.empty_cache()
    set_memory_budget(DEV, 1 << 20)
    try:
        with pytest.raises(StageOutOfMemoryError, match=r"in the (\w+) stage \(a VRAM budget of 1 MiB, "
                                                        r"offload 'model'\)") as info:
            offloaded.run(object_image(), seed=3, pipeline_type="512")
    finally:
        set_memory_budget(DEV, None)
    stage = re.search(r"in the (\w+) stage", str(info.value)).group(1)
    from trellis.pipelines.trellis2_image_to_3d import RUN_STAGES
    assert stage in RUN_STAGES, stage
    assert info.value.budget_bytes == 1 << 20 and isinstance(info.value, torch.OutOfMemoryError)
    assert {p.device.type for m in offloaded._all_models().values() for p in m.parameters()} == {"cpu"}
