"""TRELLIS.2's flow DiTs on the GPU in bf16 (tests/gpu: skipped without CUDA): the forward with the fast paths
(one-kernel block norms and RMS norms, the GELU epilogue, the gated residual, flash / cuDNN attention) against the
same forward with only the PyTorch twins, and both against an fp32 run; and the network loaded straight onto the GPU
against the one loaded on the CPU and moved.

Tolerance, stated once: the two bf16 forwards differ by bf16 rounding of the intermediates (eps 7.8e-3) through
two full-width blocks; relative RMS below 2e-2 between them, and the fast one no further from the fp32 run than
1.5x the twin's distance plus 2e-3.
"""
import json

import pytest
import torch

import trellis.models as models
from trellis.modules.sparse import SparseTensor

from tests.helpers.gpu_inputs import rel_rms

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

# Two blocks at the released width and head size (1536 channels, 12 heads of 128): the kernels' real shapes.
ARGS = dict(resolution=16, in_channels=8, out_channels=8, model_channels=1536, cond_channels=1024, num_blocks=2,
            num_heads=12, mlp_ratio=5.3334, pe_mode="rope", share_mod=True, initialization="scaled",
            qk_rms_norm=True, qk_rms_norm_cross=True, dtype="bfloat16")


def build(name, **overrides):
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = models.from_config({"name": name, "args": {**ARGS, **overrides}})
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if pname.endswith(("gamma", "norm2.weight")):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif pname.endswith("modulation"):
                p.copy_(0.1 * torch.randn_like(p))
    return model.eval()


def voxels(sizes, grid, channels):
    g = torch.Generator(device="cuda").manual_seed(1)
    coords = []
    for b, n in enumerate(sizes):
        cells = torch.randperm(grid ** 3, device="cuda", generator=g)[:n].sort().values
        coords.append(torch.stack([torch.full_like(cells, b), cells // grid ** 2, cells // grid % grid,
                                   cells % grid], 1))
    coords = torch.cat(coords).int()
    return SparseTensor(torch.randn(coords.shape[0], channels, device="cuda", generator=g), coords)


def check_fast_against_twins(fast_on, model, run):
    fast = fast_on(True, run)
    twin = fast_on(False, run)
    assert torch.isfinite(fast).all() and torch.isfinite(twin).all()
    model.set_torso_dtype(torch.float32)
    full = run()
    model.set_torso_dtype(torch.bfloat16)
    assert rel_rms(fast, twin) < 2e-2
    assert rel_rms(fast, full) <= 1.5 * rel_rms(twin, full) + 2e-3


@torch.no_grad()
def test_dense_flow_fast_paths_match_their_twins(fast_on):
    model = build("SparseStructureFlowModel")
    g = torch.Generator(device="cuda").manual_seed(2)
    x = torch.randn(2, 8, 16, 16, 16, device="cuda", generator=g)
    cond = torch.randn(2, 1029, 1024, device="cuda", generator=g)
    t = torch.tensor([980.0, 980.0], device="cuda")
    check_fast_against_twins(fast_on, model, lambda: model(x, t, cond))


@torch.no_grad()
@pytest.mark.parametrize("sizes", [[3000, 1700], [2500, 2500]], ids=["varlen", "cfg_pair"])
def test_sparse_flow_fast_paths_match_their_twins(fast_on, sizes):
    model = build("SLatFlowModel", in_channels=64, out_channels=32, resolution=64)
    x = voxels(sizes, 64, 32)
    if sizes[0] == sizes[1]:                          # the same voxels twice, as the sampler's CFG pair
        second = x.coords[:sizes[0]] + torch.tensor([1, 0, 0, 0], dtype=torch.int32, device="cuda")
        x = SparseTensor(x.feats, torch.cat([x.coords[:sizes[0]], second]))
    shape = torch.randn(x.feats.shape[0], 32, device="cuda")
    cond = torch.randn(2, 4101, 1024, device="cuda")
    t = torch.tensor([700.0, 650.0], device="cuda")
    check_fast_against_twins(fast_on, model, lambda: model(x, t, cond, concat_cond=shape).feats)


@torch.no_grad()
def test_sparse_flow_batch_equals_items_alone_on_gpu():
    model = build("SLatFlowModel", in_channels=32, out_channels=32, resolution=64, num_blocks=1)
    x = voxels([1200, 700], 64, 32)
    cond = torch.randn(2, 1029, 1024, device="cuda")
    t = torch.tensor([500.0, 900.0], device="cuda")
    both = model(x, t, cond).feats
    for b, rows in enumerate(x.layout):
        alone = model(x[b], t[b:b + 1], cond[b:b + 1]).feats
        assert rel_rms(both[rows], alone) < 1e-2


def test_flow_loaded_onto_the_gpu_equals_the_cpu_route(tmp_path):
    """from_pretrained(device="cuda") (built there, file read straight into it, bf16 cast to the fp32 layers on the
    device) holds what the CPU route holds, the recomputed RoPE phases included."""
    from safetensors.torch import save_file

    config = {"name": "SparseStructureFlowModel", "args": {**ARGS, "model_channels": 192, "cond_channels": 64}}
    model = models.from_config(config)
    state = {k: v.to(torch.bfloat16) for k, v in model.state_dict().items() if k != "rope_phases"}
    (tmp_path / "flow.json").write_text(json.dumps(config))
    save_file(state, str(tmp_path / "flow.safetensors"))
    plain = models.from_pretrained(str(tmp_path / "flow")).to("cuda")
    direct = models.from_pretrained(str(tmp_path / "flow"), device="cuda")
    a, b = plain.state_dict(), direct.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k].dtype, a[k].device) == (b[k].dtype, b[k].device) and torch.equal(a[k], b[k]), k


@torch.no_grad()
def test_compiled_blocks_with_rope_match_the_eager_ones():
    """The memory policy's compiled blocks (fastpaths "flow_block": torch.compile, complex RoPE phases included)
    against the eager blocks: bf16 rounding of the fused intermediates only (relative RMS below 1e-2)."""
    from trellis import fastpaths

    fastpaths.set_enabled(True)
    try:
        dense = build("SparseStructureFlowModel")
        x = torch.randn(2, 8, 16, 16, 16, device="cuda")
        cond, t = torch.randn(2, 1029, 1024, device="cuda"), torch.tensor([900.0, 900.0], device="cuda")
        eager = dense(x, t, cond)
        dense.compile_blocks = True
        assert rel_rms(dense(x, t, cond), eager) < 1e-2
        flow = build("SLatFlowModel", in_channels=32, out_channels=32, resolution=64)
        v = voxels([2000, 1500], 64, 32)
        eager = flow(v, t, cond).feats
        flow.compile_blocks = True
        assert rel_rms(flow(v, t, cond).feats, eager) < 1e-2
    finally:
        fastpaths.set_enabled(None)
