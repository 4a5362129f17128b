"""TRELLIS.2 fast and small: the flows' cross-attention keys and values projected once per condition and sampling
run (the same numbers), the memory policy with this family's resident budgets, each network used only inside its own
stage's device scope (what offloading moves), the conditions dropped once no later stage needs them, and an
out-of-memory that names its stage and the VRAM budget."""
import numpy as np
import pytest
import torch
from PIL import Image

import trellis.pipelines as pipelines
from trellis.modules.sparse import SparseTensor
from trellis.pipelines.memory import StageOutOfMemoryError, budget_policy, naming_stage, pick_preset
from trellis.pipelines.samplers import FlowEulerGuidanceIntervalSampler
from trellis.pipelines.trellis2_cascade import pipeline_type
from trellis.pipelines.trellis2_image_to_3d import RUN_STAGES, Trellis2ImageTo3DPipeline, drop_conditions

GiB = 2 ** 30
ONE_STEP = {"steps": 1}


@pytest.fixture(scope="module")
def tiny2(tiny_trellis2_dir):
    return pipelines.from_pretrained(tiny_trellis2_dir)


def object_image():
    arr = np.zeros((96, 80, 4), np.uint8)
    arr[20:80, 15:65] = (200, 120, 40, 255)
    return Image.fromarray(arr)


def count_kv(flow):
    """Calls of each block's cross-attention K/V projection (forward hooks; removed by the caller)."""
    counts = [0] * len(flow.blocks)
    hooks = [block.cross_attn.to_kv.register_forward_hook(lambda *_, i=i: counts.__setitem__(i, counts[i] + 1))
             for i, block in enumerate(flow.blocks)]
    return counts, hooks


def test_the_rms_normed_cross_attention_projects_once_per_condition_with_the_same_numbers(tiny2):
    """TRELLIS.2's flows RMS-norm the cross-attention's keys: the projection is kept for the run (context_cache),
    the norm stays per step; a CFG-interval run (guided steps on the pair, then the condition alone) gives the
    uncached run's numbers bit for bit."""
    flow = tiny2.models["shape_slat_flow_model_512"]
    assert flow.blocks[0].cross_attn.qk_rms_norm
    g = torch.Generator().manual_seed(3)
    xyz = (torch.rand(8, 8, 8, generator=g) < 0.3).nonzero().int()
    coords = torch.cat([torch.zeros(len(xyz), 1, dtype=torch.int32), xyz], 1)
    cond = torch.randn(1, 9, 32, generator=g)
    kw = dict(steps=5, guidance_strength=7.5, guidance_interval=[0.5, 1.0], guidance_rescale=0.5, rescale_t=3.0,
              cfg_batch=True, verbose=False)
    outs, used = {}, {}
    for cache in (True, False):
        counts, hooks = count_kv(flow)
        try:
            with torch.no_grad():
                noise = SparseTensor(torch.randn(len(coords), 32, generator=torch.Generator().manual_seed(4)), coords)
                outs[cache] = FlowEulerGuidanceIntervalSampler(1e-5).sample(flow, noise, cond, torch.zeros_like(cond),
                                                                            cache_context=cache, **kw)
        finally:
            for h in hooks:
                h.remove()
        used[cache] = counts
    assert used[False] == [5] * len(flow.blocks) and used[True] == [2] * len(flow.blocks)   # the pair, then cond
    for a, b in zip(outs[True].pred_x_t + outs[True].pred_x_0, outs[False].pred_x_t + outs[False].pred_x_0):
        assert torch.equal(a.feats, b.feats)


def test_the_resident_budgets_decide_the_offload():
    """TRELLIS.2's weights alone are ~16 GB: "auto" offloads where v1 would stay resident; a VRAM budget picks the
    same way (the app's fit_budget with the pipeline's RESIDENT_BUDGETS)."""
    budgets = Trellis2ImageTo3DPipeline.RESIDENT_BUDGETS
    for gib, v1, trellis2 in ((8, "model", "model"), (16, "none", "model"), (23, "none", "model"),
                              (40, "none", "none")):
        assert budget_policy("cuda", gib * GiB, capability=(8, 9)).offload == v1, gib
        policy = budget_policy("cuda", gib * GiB, capability=(8, 9), resident=budgets)
        assert policy.offload == trellis2 and policy.precision == "fp16", gib
        if trellis2 == "model":
            assert policy.cuda_graphs is False
    assert pick_preset("cuda", free_bytes=40 * GiB, precision="fp32", resident=budgets).offload == "model"
    assert pick_preset("cuda", free_bytes=48 * GiB, precision="fp32", resident=budgets).offload == "none"
    assert Trellis2ImageTo3DPipeline.weights_device("cpu") == torch.device("cpu")
    assert Trellis2ImageTo3DPipeline.weights_device(None) is None


def test_the_conditions_go_once_no_later_stage_needs_them():
    def left(kind, after, sizes=(512, 1024)):
        conds = {s: object() for s in sizes}
        drop_conditions(conds, pipeline_type(kind), after)
        return sorted(conds)

    assert left("512", "sparse_structure", (512,)) == [512] and left("512", "shape_slat", (512,)) == [512]
    assert left("1024", "sparse_structure") == [1024]
    assert left("1024_cascade", "sparse_structure") == [512, 1024]
    assert left("1024_cascade", "shape_slat_lr") == [1024] and left("1536_cascade", "shape_slat") == [1024]


def test_each_network_runs_only_inside_its_stages_device_scope(tiny2, monkeypatch):
    """What offloading moves: a network is on the device from its stage's `_on_device` to the end of it. A
    1024_cascade run enters the scopes in stage order, each network runs only inside its own, the stages are timed
    one by one (RUN_STAGES), and the shape flow's keys and values are projected once per condition, not per step."""
    entered, inside, outside = [], [], []
    original = tiny2._on_device
    scope = []

    def recording(*names):
        entered.append(names)
        ctx = original(*names)

        class Scope:
            def __enter__(self):
                scope.append(set(names))
                return ctx.__enter__()

            def __exit__(self, *exc):
                scope.pop()
                return ctx.__exit__(*exc)
        return Scope()

    monkeypatch.setattr(tiny2, "_on_device", recording)
    hooks = []
    for key, model in tiny2._all_models().items():
        def hook(module, args, key=key):
            (inside if scope and key in scope[-1] else outside).append(key)
        hooks.append(model.register_forward_pre_hook(hook))
    counts, kv_hooks = count_kv(tiny2.models["shape_slat_flow_model_1024"])
    try:
        tiny2.run(object_image(), seed=3, pipeline_type="1024_cascade", sparse_structure_sampler_params=ONE_STEP,
                  shape_slat_sampler_params={"steps": 2, "guidance_interval": [0.8, 1.0]},
                  tex_slat_sampler_params=ONE_STEP)
    finally:
        for h in hooks + kv_hooks:
            h.remove()
    assert [n for (n,) in entered] == [
        "image_cond_model", "image_cond_model", "sparse_structure_flow_model", "sparse_structure_decoder",
        "shape_slat_flow_model_512", "shape_slat_decoder", "shape_slat_flow_model_1024", "tex_slat_flow_model_1024",
        "shape_slat_decoder", "tex_slat_decoder"]
    assert not outside and set(inside) >= {"image_cond_model", "sparse_structure_flow_model", "shape_slat_decoder",
                                           "tex_slat_decoder", "tex_slat_flow_model_1024"}
    assert [s["stage"] for s in tiny2.last_stats] == [s for s in RUN_STAGES if s != "shape_slat"]
    assert counts == [2] * len(counts)            # t = 1 guided on the pair, t = 0.75 on the condition alone


def test_an_out_of_memory_names_its_stage_and_the_budget(tiny2):
    """An allocation failure inside a stage (injected in the structure decoder) ends the run as a
    StageOutOfMemoryError (still a torch.OutOfMemoryError, which the app's clean-up catches) naming the stage and
    the budget, the original's frames dropped."""
    def fail(*_):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    hook = tiny2.models["sparse_structure_decoder"].register_forward_pre_hook(fail)
    try:
        with pytest.raises(torch.OutOfMemoryError) as info:
            tiny2.run(object_image(), seed=1, pipeline_type="512", sparse_structure_sampler_params=ONE_STEP)
    finally:
        hook.remove()
    err = info.value
    assert isinstance(err, StageOutOfMemoryError) and err.stage == "structure_decode" and err.budget_bytes is None
    assert "in the structure_decode stage (no VRAM budget set, offload 'none'): CUDA out of memory" in str(err)
    assert err.__context__ is None or err.__context__.__traceback__ is None        # no frames kept alive
    assert [s["stage"] for s in tiny2.last_stats][-1] == "structure_decode"
    with pytest.raises(StageOutOfMemoryError, match=r"in the decode stage \(a VRAM budget of 6.00 GiB"):
        with naming_stage("decode", "cpu", "model"):
            raise StageOutOfMemoryError("decode", 6 * GiB, "model", "inner")     # already named: kept as it is
