"""What a sampling run derives from its condition alone (its cast, the cross-attentions' keys and values) is
computed once per run (modules.context_cache): the same numbers bit for bit, far fewer projections, nothing kept
after the run, and a source changed in place or replaced is never served stale."""
import threading
import weakref

import pytest
import torch

import trellis.models as models
from trellis.modules.context_cache import ContextCache, active, context_cache, for_context
from trellis.modules.sparse import SparseTensor
from trellis.pipelines import TrellisImageTo3DPipeline
from trellis.pipelines.samplers import FlowEulerGuidanceIntervalSampler

from tests.helpers.images import object_image
from tests.helpers.structures import uneven_structure
from tests.helpers.tiny_models import FAST, slat_flow


def test_hits_only_for_the_same_unchanged_source():
    calls = []

    def make(tag):
        return lambda: calls.append(tag) or len(calls)

    a, b = torch.zeros(3), torch.zeros(3)
    assert for_context("k", a, make("outside")) == 1 and for_context("k", a, make("outside")) == 2   # no scope
    calls.clear()
    with context_cache() as cache:
        assert active() is cache
        first = for_context("k", a, make("a"))
        assert for_context("k", a, make("a")) == first                   # same object, same version: kept
        assert for_context("k", b, make("b")) != first                   # an equal but other tensor: made anew
        assert for_context("k", a, make("a")) == 3                       # one entry per key: a made again
        a.add_(1)                                                         # changed in place: its version moved
        assert for_context("k", a, make("a")) == 4
        assert for_context("other", a, make("other")) == 5              # keys are separate
        pair = (a, b)
        assert for_context("p", pair, make("p")) == for_context("p", (a, b), make("p")) == 6   # tuples by items
        assert for_context("p", (b, a), make("p")) == 7
        assert (cache.hits, cache.misses) == (2, 7) and len(cache) == 3
        with torch.inference_mode():
            frozen = torch.zeros(2)                                       # no version counter: never kept
        assert for_context("i", frozen, make("i")) == 8 and for_context("i", frozen, make("i")) == 9
        with context_cache(False):                                        # switched off inside
            assert active() is None and for_context("k", a, make("off")) == 10
        assert active() is cache
    assert active() is None and calls.count("a") == 3


def test_each_thread_has_its_own_scope():
    seen = {}
    with context_cache() as mine:
        t = threading.Thread(target=lambda: seen.setdefault("other", active()))
        t.start()
        t.join()
        assert active() is mine
    assert seen["other"] is None


def _count_kv(model):
    """Calls of each block's cross-attention K/V projection, counted by forward hooks (a list, one per block)."""
    counts = [0] * len(model.blocks)
    for i, block in enumerate(model.blocks):
        block.cross_attn.to_kv.register_forward_hook(lambda *_, i=i: counts.__setitem__(i, counts[i] + 1))
    return counts


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.slow
def test_slat_sampling_is_bit_identical_with_one_projection_per_context(dtype, batch):
    """A CFG-interval run: guided steps on the batched pair, then unguided steps on the condition alone. With the
    cache each cross-attention projects the pair once and the condition once (the bf16 torso casts the fp32
    condition: that cast is kept too, or the keys could not be); the numbers are those of the uncached run."""
    model = slat_flow(4)
    model.set_torso_dtype(dtype)
    x = uneven_structure(6, batch=batch)
    cond = torch.randn(batch, 7, 32, generator=torch.Generator().manual_seed(2))
    kw = dict(steps=6, cfg_strength=3.0, cfg_interval=(0.5, 1.0), rescale_t=3.0, cfg_batch=True, verbose=False)
    counts = _count_kv(model)

    def sample(cache):
        counts[:] = [0] * len(counts)
        noise = SparseTensor(x.feats.clone(), x.coords.clone())
        with torch.no_grad():
            out = FlowEulerGuidanceIntervalSampler().sample(model, noise, cond, torch.zeros_like(cond),
                                                            cache_context=cache, **kw)
        return out, list(counts)

    (a, kept), (b, every) = sample(True), sample(False)
    guided = 4                                  # t >= 0.5 on this grid: 4 guided steps, 2 unguided
    assert every == [6] * len(counts)           # one projection per step without the cache
    assert kept == [2] * len(counts)            # the pair once, the condition once
    assert active() is None                     # nothing kept after the run
    assert len(a.pred_x_t) == 6 and guided < 6
    for p, q in zip(a.pred_x_t + a.pred_x_0, b.pred_x_t + b.pred_x_0):
        assert torch.equal(p.feats, q.feats)


def test_dense_flow_sampling_is_bit_identical_with_one_projection_per_context():
    torch.manual_seed(1)
    model = models.SparseStructureFlowModel(resolution=4, in_channels=4, out_channels=4, model_channels=64,
                                            cond_channels=32, num_blocks=2, num_heads=4, patch_size=1,
                                            qk_rms_norm=True).eval()
    model.set_torso_dtype(torch.bfloat16)
    noise = torch.randn(2, 4, 4, 4, 4, generator=torch.Generator().manual_seed(3))
    cond = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(4))
    counts = _count_kv(model)
    outs = []
    for cache in (True, False):
        counts[:] = [0] * len(counts)
        with torch.no_grad():
            outs.append(FlowEulerGuidanceIntervalSampler().sample(
                model, noise, cond, torch.zeros_like(cond), steps=5, cfg_strength=5.0, cfg_interval=(0.0, 1.0),
                cfg_batch=True, verbose=False, cache_context=cache).samples)
        assert counts == ([1] * len(counts) if cache else [5] * len(counts))
    assert torch.equal(outs[0], outs[1])


def test_cross_attention_with_a_qk_norm_keeps_its_projection():
    """A q/k norm on the cross-attention (TRELLIS.2's flows): the keys' and values' projection is kept like the
    others, the norm of k runs with q's in one call at every call (per row: the same numbers)."""
    model = slat_flow(5, qk_rms_norm_cross=True)
    x = uneven_structure(7, batch=1)
    cond = torch.randn(1, 7, 32)
    counts = _count_kv(model)
    t = torch.tensor([500.0])
    with torch.no_grad():
        uncached = model(SparseTensor(x.feats, x.coords), t, cond).feats
        with context_cache() as cache:
            first = model(SparseTensor(x.feats, x.coords), t, cond).feats
            again = model(SparseTensor(x.feats, x.coords), t, cond).feats
    assert counts == [2] * len(counts) and torch.equal(first, again) and torch.equal(first, uncached)
    assert sum(isinstance(k, tuple) and isinstance(k[0], torch.nn.Module) for k in cache._entries) == len(counts)


@pytest.mark.slow
def test_the_pipeline_keeps_the_keys_when_resident_not_when_offloading(tiny_pipeline_dir):
    p = TrellisImageTo3DPipeline.from_pretrained(tiny_pipeline_dir)
    assert p.memory_policy.offload == "none"                                 # the CPU preset
    flows = [p.models["sparse_structure_flow_model"], p.models["slat_flow_model"]]
    counts = [_count_kv(f) for f in flows]
    params = dict(FAST, sparse_structure_sampler_params={"steps": 3, "cfg_interval": (0.0, 1.0)},
                  slat_sampler_params={"steps": 3, "cfg_interval": (0.0, 1.0)})
    ref = p.run(object_image(), seed=5, preprocess_image=False, formats=["gaussian"], **params)["gaussian"][0]
    assert all(c == [1] * len(c) for c in counts)                            # 3 guided steps, one projection each
    for c in counts:
        c[:] = [0] * len(c)
    p.set_memory_policy(offload="model")
    again = p.run(object_image(), seed=5, preprocess_image=False, formats=["gaussian"], **params)["gaussian"][0]
    assert all(c == [3] * len(c) for c in counts)
    assert torch.equal(again._xyz, ref._xyz) and torch.equal(again._features_dc, ref._features_dc)


def test_a_cache_entry_holds_its_source():
    """The entry keeps its source alive, so no other tensor can take its memory (and its address) mid-run."""
    cache = ContextCache()
    src = torch.ones(4)
    cache.get("k", src, lambda: 1)
    ref = weakref.ref(src)
    del src
    assert ref() is not None
