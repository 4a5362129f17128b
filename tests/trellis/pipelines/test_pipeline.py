"""The image-to-3D pipeline end to end on the tiny random-weight pipeline (CPU)."""
import gc
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import trellis.pipelines as pipelines
from trellis.modules.sparse import SparseTensor
from trellis.pipelines import EmptyStructureError, TrellisImageTo3DPipeline
from trellis.core.callbacks import Cancelled

from tests.helpers.images import object_image
from tests.helpers.tiny_models import FAST

@pytest.fixture(scope="module")
def pipe(tiny_pipeline_dir):
    return TrellisImageTo3DPipeline.from_pretrained(tiny_pipeline_dir)


def flat(outputs):
    g, m, r = outputs["gaussian"][0], outputs["mesh"][0], outputs["radiance_field"][0]
    return [g._xyz, g._features_dc, g._scaling, g._rotation, g._opacity, m.vertices, m.faces.float(),
            r.trivec, r.density]


@pytest.mark.slow
def test_run_returns_all_formats_and_is_deterministic(pipe):
    a = pipe.run(object_image(), seed=7, preprocess_image=False, **FAST)
    assert set(a) == {"mesh", "gaussian", "radiance_field"}
    assert a["mesh"][0].success and a["mesh"][0].vertices.shape[1] == 3
    assert len(a["gaussian"][0]) > 0 and a["radiance_field"][0].trivec.ndim == 4
    b = pipe.run(object_image(), seed=7, preprocess_image=False, **FAST)
    for x, y in zip(flat(a), flat(b)):
        assert torch.equal(x, y)
    c = pipe.run(object_image(), seed=8, preprocess_image=False, **FAST)
    assert not torch.equal(a["gaussian"][0]._features_dc.flatten()[:100], c["gaussian"][0]._features_dc.flatten()[:100])
    only = pipe.run(object_image(), seed=7, preprocess_image=False, formats=["gaussian"], **FAST)
    assert set(only) == {"gaussian"} and torch.equal(only["gaussian"][0]._xyz, a["gaussian"][0]._xyz)
    stages = [s["stage"] for s in pipe.last_stats]
    assert stages[:4] == ["preprocess", "condition", "sparse_structure", "slat"]


def test_noise_is_drawn_like_the_reference(pipe, monkeypatch):
    """Seeded CPU generator: SS noise first, then one SLat noise row per voxel (spec §11.3)."""
    seen = {}
    for name in ("sparse_structure_sampler", "slat_sampler"):
        sampler = getattr(pipe, name)
        original = sampler.sample

        def spy(model, noise, *args, _name=name, _orig=original, **kwargs):
            seen[_name] = noise.feats.clone() if isinstance(noise, SparseTensor) else noise.clone()
            return _orig(model, noise, *args, **kwargs)
        monkeypatch.setattr(sampler, "sample", spy)
    pipe.run(object_image(), seed=123, preprocess_image=False, formats=["gaussian"], **FAST)
    torch.manual_seed(123)
    ss = torch.randn(1, 8, 8, 8, 8)
    slat = torch.randn(seen["slat_sampler"].shape[0], 8)
    assert torch.equal(seen["sparse_structure_sampler"], ss)
    assert torch.equal(seen["slat_sampler"], slat)


@pytest.mark.slow
def test_cancel_mid_sampling_frees_activations(pipe):
    steps = []

    def progress(stage, i, n):
        steps.append((stage, i))

    def cancel():
        return ("slat", 2) in steps

    before = _live_tensor_bytes()
    with pytest.raises(Cancelled) as caught:
        pipe.run(object_image(), seed=3, preprocess_image=False, progress=progress, cancel=cancel,
                 sparse_structure_sampler_params={"steps": 3}, slat_sampler_params={"steps": 6})
    assert ("slat", 2) in steps and ("slat", 3) not in steps
    # Even while the caller still holds the exception (an app keeps it to report it), nothing of the
    # run (noise, latents, cond, attention maps) stays alive through its traceback.
    assert caught.value is not None
    assert _live_tensor_bytes() <= before
    out = pipe.run(object_image(), seed=3, preprocess_image=False, formats=["gaussian"], **FAST)
    assert len(out["gaussian"][0]) > 0         # and the pipeline still works


def _live_tensor_bytes():
    gc.collect()
    total = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # isinstance() pokes deprecated torch.distributed aliases
        for obj in gc.get_objects():
            if isinstance(obj, torch.Tensor) and not isinstance(obj, torch.nn.Parameter):
                total += obj.numel() * obj.element_size()
    return total


def test_empty_structure_is_a_clear_error(tiny_pipeline_dir):
    p = TrellisImageTo3DPipeline.from_pretrained(tiny_pipeline_dir)
    with torch.no_grad():
        p.models["sparse_structure_decoder"].out_layer[2].bias.fill_(-1e4)
    with pytest.raises(EmptyStructureError, match="no occupied voxel"):
        p.run(object_image(), preprocess_image=False, **FAST)


@pytest.mark.slow
def test_multi_image_modes_run(pipe):
    imgs = [object_image(1), object_image(2), object_image(3)]
    for mode in ("stochastic", "multidiffusion"):
        out = pipe.run_multi_image(imgs, seed=5, preprocess_image=False, mode=mode, formats=["gaussian", "mesh"],
                                   **FAST)
        assert len(out["gaussian"]) == 1 and out["mesh"][0].vertices.shape[0] > 0
    with pytest.raises(ValueError, match="mode"):
        pipe.run_multi_image(imgs, mode="vote")
    with pytest.warns(RuntimeWarning, match="never used"):
        pipe.run_multi_image(imgs * 2, seed=5, preprocess_image=False, formats=["gaussian"],
                             sparse_structure_sampler_params={"steps": 2}, slat_sampler_params={"steps": 2})


@pytest.mark.slow
def test_precision_switch_at_run_time_without_reload(tiny_pipeline_dir):
    p = TrellisImageTo3DPipeline.from_pretrained(tiny_pipeline_dir)
    assert p.memory_policy.precision == "fp32" and p.memory_policy.offload == "none"   # CPU preset
    ref = p.run(object_image(), seed=11, preprocess_image=False, formats=["gaussian"], **FAST)["gaussian"][0]
    p.set_memory_policy(precision="fp16")
    assert p.models["slat_flow_model"].blocks[0].mlp.mlp[0].weight.dtype == torch.float16
    half = p.run(object_image(), seed=11, preprocess_image=False, formats=["gaussian"], **FAST)["gaussian"][0]
    if half._xyz.shape == ref._xyz.shape:      # same structure: compare values at fp16 noise level
        err = (half._xyz - ref._xyz).pow(2).mean().sqrt() / ref._xyz.pow(2).mean().sqrt()
        assert err < 2e-2
    p.set_memory_policy(precision="fp32", offload="model")
    assert p.memory_policy.offload == "model"
    again = p.run(object_image(), seed=11, preprocess_image=False, formats=["gaussian"], **FAST)["gaussian"][0]
    assert torch.equal(again._xyz, ref._xyz)
    with pytest.raises(ValueError, match="precision must be one of"):
        p.set_memory_policy(precision="int8")


def test_compiled_flow_blocks_switch_and_fall_back_to_the_eager_twin(tiny_pipeline_dir, monkeypatch):
    """MemoryPolicy.compile reaches both flows (and only them); where the fast path cannot run (here: the
    CPU) the blocks go through the dispatcher to the eager twin, so results are bit-identical; compile is
    never on by default."""
    from trellis import fastpaths
    from trellis.modules import transformer

    p = TrellisImageTo3DPipeline.from_pretrained(tiny_pipeline_dir)
    assert not p.memory_policy.compile
    ref = p.run(object_image(), seed=5, preprocess_image=False, formats=["gaussian"], **FAST)["gaussian"][0]
    calls = []
    twin = transformer.block_forward_torch
    monkeypatch.setattr(transformer, "block_forward_torch", lambda *a: calls.append(1) or twin(*a))
    p.set_memory_policy(compile=True)
    assert p.memory_policy.compile
    assert p.models["sparse_structure_flow_model"].compile_blocks and p.models["slat_flow_model"].compile_blocks
    assert not hasattr(p.models["slat_decoder_gs"], "compile_blocks")
    assert fastpaths.path_of("flow_block", "cpu") == "pytorch"
    out = p.run(object_image(), seed=5, preprocess_image=False, formats=["gaussian"], **FAST)["gaussian"][0]
    assert calls, "the blocks did not go through the dispatcher"
    assert torch.equal(out._xyz, ref._xyz) and torch.equal(out._features_dc, ref._features_dc)
    p.set_memory_policy(compile=False)
    assert not p.models["slat_flow_model"].compile_blocks


def test_get_cond_accepts_tensors_and_images(pipe):
    img = object_image()
    a = pipe.get_cond([img])
    t = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    b = pipe.get_cond(t)
    torch.testing.assert_close(a["cond"], b["cond"])
    assert torch.equal(a["neg_cond"], torch.zeros_like(a["cond"]))
    assert a["cond"].shape == (1, 1374, 32)


def test_top_level_from_pretrained_dispatches(tiny_pipeline_dir, tmp_path):
    assert isinstance(pipelines.from_pretrained(tiny_pipeline_dir), TrellisImageTo3DPipeline)
    with pytest.raises(FileNotFoundError, match="pipeline.json"):
        pipelines.from_pretrained(str(tmp_path))


def test_presets_follow_device_memory():
    from trellis.pipelines.memory import MemoryPolicy, pick_preset

    assert pick_preset(torch.device("cpu")) == MemoryPolicy("fp32", "none", True, False)
    big = pick_preset(torch.device("cuda"), free_bytes=24 * 2 ** 30)
    # resident: the sparse-structure flow's graphs, kept from job to job
    assert (big.precision, big.offload, big.cfg_batch, big.cuda_graphs) == ("fp16", "none", True, "structure")
    mid = pick_preset(torch.device("cuda"), free_bytes=8 * 2 ** 30)
    assert (mid.precision, mid.offload, mid.cfg_batch, mid.cuda_graphs) == ("fp16", "model", True, False)
    small = pick_preset(torch.device("cuda"), free_bytes=4 * 2 ** 30)
    assert (small.offload, small.cfg_batch, small.cuda_graphs) == ("model", False, False)
    with pytest.raises(ValueError, match="offload must be one of"):
        MemoryPolicy("fp16", "disk")
    with pytest.raises(ValueError, match="cuda_graphs must be"):
        MemoryPolicy("fp16", "none", cuda_graphs="both")


@pytest.mark.slow
def test_offloading_auto_cfg_batches_each_stage_that_fits(tiny_pipeline_dir, monkeypatch):
    """Offloading with cfg_batch "auto": each flow stage batches its CFG passes when its batch-2 activations fit
    the memory free once the flow is loaded (never in lean mode); an explicit cfg_batch is kept as given. The
    device readings are stood in for (this box has no GPU); the sampled numbers do not depend on the choice."""
    from trellis.pipelines import base

    tokens_1mb = 2 ** 20 // (2 * base.CFG_ACTIVATION_BYTES_PER_TOKEN * base.CFG_BATCH_MARGIN)
    assert base.cfg_batch_fits(int(tokens_1mb), 2 ** 20) and not base.cfg_batch_fits(int(tokens_1mb) + 1, 2 ** 20)
    assert base.cfg_batch_fits(10 ** 9, None)                         # nothing measured (CPU): batch
    assert not base.cfg_batch_fits(1, 2 ** 40, lean=True)
    per = 1000                                         # lean once the flow is loaded: its activations against free
    fit = base.LEAN_ACTIVATION_MARGIN * 2 * 10 * per
    assert base.activations_fit(10, 2, per, int(fit)) and not base.activations_fit(10, 2, per, int(fit) - 1)
    assert base.activations_fit(10, 1, per, int(fit) - 1) and base.activations_fit(10 ** 9, 2, per, None)

    p = TrellisImageTo3DPipeline.from_pretrained(tiny_pipeline_dir)
    ss, slat = p.models["sparse_structure_flow_model"], p.models["slat_flow_model"]
    hidden, width = slat.blocks[0].mlp.mlp[0].out_features, slat.model_channels
    assert base.flow_activation_bytes(slat) == (2 * hidden + 8 * width) * slat.dtype.itemsize
    dense = torch.zeros(1, ss.in_channels, ss.resolution, ss.resolution, ss.resolution)
    assert p._tokens(ss, dense) == (ss.resolution // ss.patch_size) ** 3
    coords = torch.tensor([[b, x, 0, 0] for b in range(2) for x in range(5)], dtype=torch.int32)
    assert p._tokens(slat, SparseTensor(torch.zeros(10, slat.in_channels), coords)) == 5

    offloading = {"on": True}
    monkeypatch.setattr(p, "_offloading", lambda: offloading["on"])
    need = 2 * base.CFG_BATCH_MARGIN * base.CFG_ACTIVATION_BYTES_PER_TOKEN * 5
    small = base.MemoryPolicy("fp16", "model", cfg_batch=False)          # what pick_preset says on a small card
    sparse = SparseTensor(torch.zeros(10, slat.in_channels), coords)
    for free, lean, want in ((need, False, True), (need - 1, False, False), (10 * need, True, False)):
        monkeypatch.setattr(p, "_free_now", lambda free=free: free)
        slat.lean = lean
        assert p._cfg_batch_for(slat, sparse, small) is want, (free, lean)
    slat.lean = False
    monkeypatch.setattr(p, "_free_now", lambda: 10 * need)
    p._policy = base.MemoryPolicy("fp16", "model", cfg_batch=False)        # asked for sequential CFG: kept
    assert p._cfg_batch_for(slat, sparse, small) is False
    p.set_memory_policy(cfg_batch="auto")                                 # back to auto
    assert p._policy.cfg_batch is None
    offloading["on"] = False                                               # resident: the preset decides
    assert p._cfg_batch_for(slat, sparse, small) is False
    assert p._cfg_batch_for(slat, sparse, base.MemoryPolicy("fp16", "none", cfg_batch=True)) is True

    # a whole run records each stage's choice; batched and sequential CFG sample the same numbers
    offloading["on"] = True
    p._policy = base.MemoryPolicy("fp32", "model")                      # cfg_batch auto ...
    monkeypatch.setattr(TrellisImageTo3DPipeline, "memory_policy",      # ... which a small card's preset makes False
                        property(lambda self: base.MemoryPolicy("fp32", "model", cfg_batch=False, cuda_graphs=False)))
    p._place_all()                     # "offloaded" to CPU homes (HostWeights on the CPU: plain copies)
    img = object_image()
    monkeypatch.setattr(p, "_free_now", lambda: 0)
    seq = p.run(img, seed=3, formats=["gaussian"], preprocess_image=False, **FAST)["gaussian"][0].get_xyz
    assert p.last_cfg_batch == {"sparse_structure": False, "slat": False}
    monkeypatch.setattr(p, "_free_now", lambda: 2 ** 40)
    mixed = p.run(img, seed=3, formats=["gaussian"], preprocess_image=False, **FAST)["gaussian"][0].get_xyz
    assert p.last_cfg_batch == {"sparse_structure": True, "slat": False}      # stage 2 is lean here (CPU)
    torch.testing.assert_close(mixed, seq, atol=1e-4, rtol=1e-4)              # stage 1 batched or not
    # Stage 2 batched against sequential, both not lean. One forward of the batch of 2 equals the two forwards
    # to float rounding (1.7e-6 of 3.7 measured); twelve guided steps of this random-weight flow amplify that
    # rounding (up to 8.8e-4 in xyz on one 2-core Xeon, under 1e-4 on another), a twentieth of a 64^3 voxel.
    c = SparseTensor(torch.randn(7, slat.in_channels), torch.tensor([[0, x, 1, 2] for x in range(7)], dtype=torch.int32))
    cond = torch.randn(1, 3, slat.blocks[0].cross_attn.to_kv.in_features)
    with torch.no_grad():
        t = torch.tensor([500.0])
        one = [slat(c, t, k).feats for k in (cond, torch.zeros_like(cond))]
        both = slat(SparseTensor(torch.cat([c.feats] * 2), torch.cat([c.coords, c.coords + torch.tensor([1, 0, 0, 0],
                    dtype=torch.int32)])), t.repeat(2), torch.cat([cond, torch.zeros_like(cond)])).feats
    torch.testing.assert_close(both, torch.cat(one), atol=1e-5, rtol=1e-5)
    monkeypatch.setattr(base, "free_device_memory", lambda device: 2 ** 40)     # a device with room: not lean
    monkeypatch.setattr(p, "_free_now", lambda: 0)
    seq = p.run(img, seed=3, formats=["gaussian"], preprocess_image=False, **FAST)["gaussian"][0].get_xyz
    assert p.last_cfg_batch == {"sparse_structure": False, "slat": False}
    assert p.last_lean == {"slat": True}           # room before the flow loaded, none once it is on the device
    monkeypatch.setattr(p, "_free_now", lambda: 2 ** 40)
    bat = p.run(img, seed=3, formats=["gaussian"], preprocess_image=False, **FAST)["gaussian"][0].get_xyz
    assert p.last_cfg_batch == {"sparse_structure": True, "slat": True}
    assert p.last_lean == {"slat": False}
    torch.testing.assert_close(bat, seq, atol=2e-3, rtol=0)


def test_preprocessing_inside_run_keeps_real_alpha(pipe, tmp_path):
    rgba = np.zeros((400, 300, 4), np.uint8)
    rgba[100:300, 80:220] = (220, 120, 30, 255)
    path = tmp_path / "object.png"
    Image.fromarray(rgba, "RGBA").save(path)
    out = pipe.run(str(path), seed=2, formats=["gaussian"], **FAST)      # a path works; no rembg needed
    assert len(out["gaussian"][0]) > 0
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(ValueError):
        pipe.run(str(text), **FAST)


def test_run_without_preprocessing_accepts_paths_and_arrays(pipe, tmp_path):
    img = object_image()
    path = tmp_path / "ready.png"
    img.save(path)
    a = pipe.run(img, seed=4, preprocess_image=False, formats=["gaussian"], **FAST)["gaussian"][0]
    b = pipe.run(str(path), seed=4, preprocess_image=False, formats=["gaussian"], **FAST)["gaussian"][0]
    c = pipe.run(np.asarray(img), seed=4, preprocess_image=False, formats=["gaussian"], **FAST)["gaussian"][0]
    assert torch.equal(a._xyz, b._xyz) and torch.equal(a._xyz, c._xyz)


def test_which_flows_replay_kept_cuda_graphs(tiny_pipeline_dir):
    """The decision of ``_graphs_for`` (the replays themselves: tests/gpu/test_kept_graphs_gpu.py): the sparse-
    structure flow's GraphedFlow is kept on the pipeline from run to run while its weights stay where they were; the
    SLat flow gets new graphs per run only when asked for (True); nothing on the CPU, when offloading or compiled."""
    from trellis.pipelines.memory import MemoryPolicy
    from trellis.pipelines.samplers.cuda_graph import GraphedFlow

    pipe = pipelines.from_pretrained(tiny_pipeline_dir)
    ss, slat = pipe.models["sparse_structure_flow_model"], pipe.models["slat_flow_model"]

    def policy(graphs, offload="none", compile=False):
        return MemoryPolicy("fp32", offload, cfg_batch=True, cuda_graphs=graphs, compile=compile)

    key = "sparse_structure_flow_model"
    assert pipe._graphs_for("sparse_structure", key, ss, policy("structure")) is False      # the CPU
    pipe._device = torch.device("cuda")      # only its type is read here: no GPU needed
    kept = pipe._graphs_for("sparse_structure", key, ss, policy("structure"))
    assert isinstance(kept, GraphedFlow) and kept.model is ss
    assert pipe._graphs_for("sparse_structure", key, ss, policy(True)) is kept              # the next job: the same
    assert pipe._graphs_for("slat", "slat_flow_model", slat, policy("structure")) is False
    assert pipe._graphs_for("slat", "slat_flow_model", slat, policy(True)) is True          # new ones per run
    assert pipe._graphs_for("sparse_structure", key, ss, policy(False)) is False
    assert pipe._graphs_for("sparse_structure", key, ss, policy("structure", compile=True)) is False
    with torch.no_grad():
        ss.set_torso_dtype(torch.float16)    # weights at other addresses: graphs of the old ones must not replay
    again = pipe._graphs_for("sparse_structure", key, ss, policy("structure"))
    assert isinstance(again, GraphedFlow) and again is not kept
    pipe._device = torch.device("cpu")
    pipe.set_memory_policy(offload="model")  # placing the weights anew drops what was kept
    assert pipe._kept_graphs == {}
    pipe._device = torch.device("cuda")
    assert pipe._graphs_for("sparse_structure", key, ss, policy("structure", offload="model")) is False
    with pytest.raises(ValueError, match="another model"):
        pipe.sparse_structure_sampler.sample(slat, torch.zeros(1, 8, 4, 4, 4), torch.zeros(1, 2, 4), None, steps=1,
                                             cuda_graph=kept)


def test_the_same_policy_again_keeps_the_kept_graphs(tiny_pipeline_dir):
    """The app sets the job's policy before every job: the same resolved policy leaves the weights in place and the
    structure flow's kept graphs with them; a changed one places the weights anew and drops them."""
    from trellis.pipelines.memory import MemoryPolicy

    pipe = pipelines.from_pretrained(tiny_pipeline_dir)
    ss = pipe.models["sparse_structure_flow_model"]
    key = "sparse_structure_flow_model"
    resident = MemoryPolicy("fp32", "none", cfg_batch=True, cuda_graphs="structure")
    pipe.set_memory_policy(precision="fp32", offload="none")
    pipe._device = torch.device("cuda")      # only its type is read by _graphs_for: no GPU needed
    kept = pipe._graphs_for("sparse_structure", key, ss, resident)
    pipe._device = torch.device("cpu")
    weights = [p.data_ptr() for p in ss.parameters()]
    pipe.set_memory_policy(precision="fp32", offload="none")         # the next job, the same settings
    assert pipe._kept_graphs[key][1] is kept
    assert [p.data_ptr() for p in ss.parameters()] == weights
    pipe.set_memory_policy(precision="fp16")                          # another precision: weights and graphs anew
    assert pipe._kept_graphs == {}


def test_the_load_hands_over_each_network_as_it_arrives(tiny_pipeline_dir):
    """``from_pretrained(on_model=...)``: the conditioner first, the structure flow next (work on them can start beside
    the rest of the load), every network once, the very objects the pipeline then holds; the same weights as a load
    without the hook."""
    arrived = []
    pipe = pipelines.TrellisImageTo3DPipeline.from_pretrained(tiny_pipeline_dir,
                                                              on_model=lambda key, model: arrived.append((key, model)))
    keys = [key for key, _ in arrived]
    assert keys[:2] == ["image_cond_model", "sparse_structure_flow_model"]
    assert sorted(keys) == sorted(["image_cond_model", *pipe.models])
    held = {**pipe.models, "image_cond_model": pipe.image_cond_model}
    assert all(held[key] is model for key, model in arrived)
    assert list(pipe.models) == list(pipelines.from_pretrained(tiny_pipeline_dir).models)    # the file's order
    plain = pipelines.from_pretrained(tiny_pipeline_dir)
    for key, model in held.items():
        other = plain.models.get(key, plain.image_cond_model)
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))


def test_graphs_made_before_the_pipeline_are_adopted_only_for_its_weights(tiny_pipeline_dir, monkeypatch):
    """``keep_structure_graphs`` (the captures: tests/gpu/test_structure_graphs_gpu.py): adopted where the flow and its
    weights are the ones captured and the policy keeps that flow's graphs; not for another model, weights since
    moved or converted, or a policy without kept graphs."""
    from trellis.pipelines.samplers.cuda_graph import GraphedFlow
    from trellis.pipelines.structure_graphs import KeptGraphs, flow_weights

    pipe = pipelines.from_pretrained(tiny_pipeline_dir)
    ss, slat = pipe.models["sparse_structure_flow_model"], pipe.models["slat_flow_model"]
    made = KeptGraphs(flow_weights(ss), GraphedFlow(ss, kept=True))
    assert not pipe.keep_structure_graphs(made)                      # a CPU pipeline keeps no graphs
    from trellis.pipelines.memory import MemoryPolicy

    policy = [MemoryPolicy("fp32", "none", cfg_batch=True, cuda_graphs="structure")]
    # a CUDA pipeline's resolved policy without a GPU: only the device's type and the policy are read
    monkeypatch.setattr(type(pipe), "memory_policy", property(lambda self: policy[0]))
    pipe._device = torch.device("cuda")
    assert not pipe.keep_structure_graphs(KeptGraphs(flow_weights(slat), GraphedFlow(slat, kept=True)))
    assert not pipe.keep_structure_graphs(KeptGraphs(made.weights[1:], made.graphed))     # other weights
    assert pipe.keep_structure_graphs(made)
    assert pipe._kept_graphs["sparse_structure_flow_model"] == (made.weights, made.graphed)
    policy[0] = MemoryPolicy("fp32", "none", cfg_batch=True, cuda_graphs=False)
    pipe.release_graphs()
    assert not pipe.keep_structure_graphs(made) and pipe._kept_graphs == {}
    policy[0] = MemoryPolicy("fp32", "model", cfg_batch=True, cuda_graphs=True)     # offloaded: graphs per run only
    assert not pipe.keep_structure_graphs(made)
