"""The SLat flow's lean (low-VRAM) mode: the same numbers with a lower activation peak.

`SLatFlowModel.lean` (set by the pipeline when it offloads) sends the res blocks and the eager transformer
blocks through their lean paths: row-chunked norms and MLPs, norm + SiLU and the skip of the up-sampling
block on the parent rows, in-place element-wise steps, skips released once used. On the CPU every one of
these is required to give the resident path's numbers bit for bit.
"""
import weakref

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from trellis.modules.sparse import SparseModulatedTransformerCrossBlock, SparseResBlock3d, SparseTensor
from trellis.modules.sparse import conv as conv_mod
from trellis.pipelines import TrellisImageTo3DPipeline

from tests.helpers.images import object_image
from tests.helpers.structures import uneven_structure
from tests.helpers.tiny_models import FAST, slat_flow


def run(model, x, t, cond, lean):
    model.lean = lean
    with torch.no_grad():
        return model(SparseTensor(x.feats, x.coords), t, cond).feats


@pytest.fixture
def small_chunks(monkeypatch):
    """Small chunks, so that every chunked loop runs several times on these small tensors (MLP chunks of
    ~100 rows: the CPU GEMM of a handful of rows takes another kernel, which rounds differently)."""
    monkeypatch.setattr(SparseResBlock3d, "LEAN_CHUNK_ELEMENTS", 7 * 64)
    monkeypatch.setattr(SparseModulatedTransformerCrossBlock, "LEAN_MLP_ELEMENTS", 100 * 256)


@pytest.mark.parametrize("dtype,batch,kw", [
    (torch.float32, 2, {}),
    (torch.float32, 1, {}),
    (torch.float32, 2, dict(use_skip_connection=False, qk_rms_norm=False)),
    (torch.float32, 2, dict(patch_size=4, io_block_channels=[16, 32], num_io_res_blocks=1)),
    (torch.float16, 2, {}),
])
def test_lean_flow_equals_resident_flow(small_chunks, dtype, batch, kw):
    model = slat_flow(**kw)
    model.set_torso_dtype(dtype)
    x = uneven_structure(1, batch=batch)
    g = torch.Generator().manual_seed(2)
    t = torch.tensor([300.0, 800.0][:batch])
    cond = torch.randn(batch, 5, 32, generator=g)
    feats = x.feats.clone()
    ref = run(model, x, t, cond, lean=False)
    out = run(model, x, t, cond, lean=True)
    assert torch.equal(out, ref)
    assert torch.equal(x.feats, feats)            # the caller's input is left alone
    assert torch.isfinite(ref).all() and ref.abs().max() > 0


def test_lean_blocks_leave_their_inputs_alone(small_chunks):
    model = slat_flow()
    x = uneven_structure(3, batch=1)
    emb = torch.randn(1, 64)
    cond = torch.randn(1, 5, 32)
    with torch.no_grad():
        h = model.input_layer(x)
        for block in model.input_blocks:
            before = h.feats.clone()
            out = block(h, emb, lean=True)
            assert torch.equal(h.feats, before) and torch.equal(out.feats, block(h, emb).feats)
            h = out
        before = h.feats.clone()
        out = model.blocks[0](h, emb, cond, lean=True)
        assert torch.equal(h.feats, before) and torch.equal(out.feats, model.blocks[0](h, emb, cond).feats)


def test_tiny_pipeline_slat_flow_lean_equals_resident(tiny_pipeline_dir, small_chunks):
    p = TrellisImageTo3DPipeline.from_pretrained(tiny_pipeline_dir)
    model = p.models["slat_flow_model"]
    coords = uneven_structure(4, res=model.resolution, batch=2, density=0.1).coords
    x = SparseTensor(torch.randn(len(coords), model.in_channels, generator=torch.Generator().manual_seed(5)), coords)
    cond = torch.randn(2, 7, model.blocks[0].cross_attn.to_kv.in_features)
    t = torch.tensor([500.0, 500.0])
    for dtype in (torch.float32, torch.float16):
        model.set_torso_dtype(dtype)
        assert torch.equal(run(model, x, t, cond, lean=True), run(model, x, t, cond, lean=False))


def test_pipeline_sets_lean_from_the_offload_policy(tiny_pipeline_dir, monkeypatch):
    """Offload "model" with less than base.LEAN_BELOW_FREE_BYTES free (the CPU: nothing measured) -> lean on (the
    SLat flow only); with more free, or "none", off; the offloading run gives the resident run's results bit for bit
    and really goes through the lean blocks (on the CPU nothing is moved, so the policy alone switches it)."""
    from trellis.pipelines import base

    p = TrellisImageTo3DPipeline.from_pretrained(tiny_pipeline_dir)
    flow_model = p.models["slat_flow_model"]
    with monkeypatch.context() as room:
        room.setattr(base, "free_device_memory", lambda device: base.LEAN_BELOW_FREE_BYTES)
        p.set_memory_policy(offload="model")
        assert not flow_model.lean              # offloading with room to spare: not lean
        room.setattr(base, "free_device_memory", lambda device: base.LEAN_BELOW_FREE_BYTES - 1)
        p.set_memory_policy(offload="model")
        assert flow_model.lean                  # a byte short: lean
    p.set_memory_policy(offload="none")
    assert p.memory_policy.offload == "none" and not flow_model.lean
    assert not any(hasattr(m, "lean") for k, m in p.models.items() if k != "slat_flow_model")
    ref = p.run(object_image(), seed=3, preprocess_image=False, formats=["gaussian"], **FAST)["gaussian"][0]

    calls = []
    for cls in (SparseResBlock3d, SparseModulatedTransformerCrossBlock):
        original = cls._forward_lean
        monkeypatch.setattr(cls, "_forward_lean",
                            lambda self, *a, _o=original, _n=cls.__name__: calls.append(_n) or _o(self, *a))
    p.set_memory_policy(offload="model")
    assert flow_model.lean
    out = p.run(object_image(), seed=3, preprocess_image=False, formats=["gaussian"], **FAST)["gaussian"][0]
    assert {"SparseResBlock3d", "SparseModulatedTransformerCrossBlock"} <= set(calls)
    assert torch.equal(out._xyz, ref._xyz) and torch.equal(out._features_dc, ref._features_dc)

    # With compiled blocks the transformer blocks stay on their (dispatched) path; the res blocks stay lean.
    calls.clear()
    p.set_memory_policy(compile=True)
    assert flow_model.lean and flow_model.compile_blocks
    out = p.run(object_image(), seed=3, preprocess_image=False, formats=["gaussian"], **FAST)["gaussian"][0]
    assert "SparseResBlock3d" in calls and "SparseModulatedTransformerCrossBlock" not in calls
    assert torch.equal(out._xyz, ref._xyz)

    p.set_memory_policy(offload="none", compile=False)
    assert not flow_model.lean


class _LiveBytes(TorchDispatchMode):
    """Peak bytes of the tensor storages ATen operators create while active (freed ones uncounted)."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self.seen = set()

    def _free(self, key, size):
        self.live -= size
        self.seen.discard(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {a.untyped_storage().data_ptr() for a in tree_flatten((args, kwargs))[0]
                  if isinstance(a, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                s = t.untyped_storage()
                key, size = s.data_ptr(), s.nbytes()
                if key not in inputs and key not in self.seen and size:
                    self.seen.add(key)
                    self.live += size
                    self.peak = max(self.peak, self.live)
                    weakref.finalize(s, self._free, key, size)
        return out


@pytest.mark.slow
def test_lean_mode_lowers_the_peak(monkeypatch):
    """A flow whose peak is the up-sampling block's norm over the wide concatenated skip (as in the full-size
    flow): lean mode keeps well under the resident peak. The conv's gathered block is kept small so that the
    CPU twin's own buffer does not hide the difference."""
    monkeypatch.setattr(conv_mod, "_GATHER_BUDGET", 1 << 14)      # 64 KB blocks: 0.4 % of the peak
    model = slat_flow(model_channels=128, num_heads=4, io_block_channels=[16], num_blocks=1, cond_channels=32)
    x = uneven_structure(6, res=24, batch=1, density=0.3)
    t, cond = torch.tensor([500.0]), torch.randn(1, 5, 32)
    peaks = {}
    for lean in (False, True):
        with _LiveBytes() as meter:
            run(model, x, t, cond, lean)
        peaks[lean] = meter.peak
    assert peaks[True] < 0.85 * peaks[False], peaks   # measured: 0.76


def test_lean_only_when_the_device_is_short(tiny_pipeline_dir, monkeypatch):
    """Offloading with plenty free (a 4-8 GB card): the faster plain path; below LEAN_BELOW_FREE_BYTES free
    (a 2-3 GB card, a memory cap): lean. Resident: never. Decided again as stage 2 starts."""
    from trellis.pipelines import base

    p = TrellisImageTo3DPipeline.from_pretrained(tiny_pipeline_dir)
    flow_model = p.models["slat_flow_model"]
    free = {"bytes": 8 * 2 ** 30}
    monkeypatch.setattr(base, "free_device_memory", lambda device: free["bytes"])
    p.set_memory_policy(offload="model")
    assert not flow_model.lean
    free["bytes"] = base.LEAN_BELOW_FREE_BYTES - 1
    p.set_memory_policy(offload="model")
    assert flow_model.lean
    p.set_memory_policy(offload="none")
    assert not flow_model.lean
    p.set_memory_policy(offload="model")
    free["bytes"] = 8 * 2 ** 30                 # memory freed up before the next job: stage 2 decides again
    p.run(object_image(), seed=3, preprocess_image=False, formats=["gaussian"], **FAST)
    assert not flow_model.lean


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.slow
def test_unguided_steps_take_the_maps_of_the_repeated_pair(batch, monkeypatch):
    """The sampler's batched CFG pair builds the neighbour maps and down-sampling plans once; the unguided steps at
    the end of a CFG-interval run get those of the pair's first copy (spatial.share_first_copy) instead of building
    their own (which waits on the GPU mid-run). The shared maps equal freshly built ones, and the whole sampling is
    the same bit for bit with and without the sharing."""
    from trellis.modules.sparse import spatial
    from trellis.modules.sparse.conv import neighbour_map
    from trellis.pipelines.samplers import FlowEulerGuidanceIntervalSampler
    from trellis.pipelines.samplers import flow_euler

    x = uneven_structure(5, batch=batch)
    pair = flow_euler._Repeated(2)(x)
    neighbour_map(pair, 3)
    neighbour_map(spatial.downsample(pair), 3)
    spatial.share_first_copy(pair, x)
    fresh = SparseTensor(x.feats, x.coords.clone())
    assert torch.equal(x.cache[("neighbour_map", 3, x.device)], neighbour_map(fresh, 3))
    shared_down, fresh_down = spatial.downsample(x), spatial.downsample(fresh)
    assert torch.equal(shared_down.coords, fresh_down.coords) and shared_down.layout == fresh_down.layout
    assert torch.equal(shared_down.feats, fresh_down.feats)
    assert torch.equal(shared_down.cache[("neighbour_map", 3, x.device)], neighbour_map(fresh_down, 3))
    back = spatial.upsample(shared_down)
    assert back.coords is x.coords and torch.equal(back.feats, spatial.upsample(fresh_down).feats)

    model = slat_flow(3)
    cond = torch.randn(batch, 7, 32, generator=torch.Generator().manual_seed(1))
    kw = dict(steps=6, cfg_strength=3.0, cfg_interval=(0.5, 1.0), rescale_t=3.0, cfg_batch=True, verbose=False)
    built = []
    real_map = spatial.share_first_copy

    def sharing(src, dst):
        before = set(dst.cache)
        real_map(src, dst)
        built.append(set(dst.cache) - before)

    def sample(share):
        noise = SparseTensor(x.feats.clone(), x.coords.clone())
        monkeypatch.setattr(flow_euler, "share_first_copy", sharing if share else lambda src, dst: None)
        with torch.no_grad():
            return FlowEulerGuidanceIntervalSampler().sample(model, noise, cond, torch.zeros_like(cond), **kw)
    a, b = sample(True), sample(False)
    assert any(("downsample", 2, x.device) in keys for keys in built)     # the unguided steps took the pair's
    for p, q in zip(a.pred_x_t, b.pred_x_t):
        assert torch.equal(p.feats, q.feats)
