"""TRELLIS.2's flow DiTs (trellis/models/trellis2/flow.py, trellis/modules/rope.py) against the equations of the
TRELLIS.2 facts §6, each written again here in float64 from the facts, not from the modules: timestep embedding
(cos half first), RoPE phases and adjacent-pair rotation, q/k RMS norm, the shared adaLN modulation with each
block's own vector and its chunk order, the dense token order n = x R^2 + y R + z, the fp32 head; and the sparse
flow's varlen batch against each item alone."""
import math

import pytest
import torch
import torch.nn.functional as F

import trellis.models as models
from trellis.models.sparse_structure_flow import SparseStructureFlowModel as V1StructureFlow
from trellis.models.trellis2 import flow as t2
from trellis.modules.embed import timestep_features
from trellis.modules.norm import MultiHeadRMSNorm
from trellis.modules.rope import apply_rope, rope_phases
from trellis.modules.sparse import SparseTensor

ARGS = dict(resolution=4, in_channels=8, out_channels=8, model_channels=64, cond_channels=24, num_blocks=2,
            num_heads=2, mlp_ratio=2.5, pe_mode="rope", share_mod=True, initialization="scaled", qk_rms_norm=True,
            qk_rms_norm_cross=True, dtype="float32")


def omegas(head_dim: int) -> torch.Tensor:
    n = head_dim // 2 // 3
    return torch.tensor([1.0 / 10000 ** (j / n) for j in range(n)], dtype=torch.float64)


def test_rope_phases_of_unit_positions():
    """Facts §16a.3: position (1,0,0) has e^{i w_j} on pairs 0..20 and the identity elsewhere; y and z take the
    next 21 pairs each; pair 63 never turns."""
    w = omegas(128)
    assert len(w) == 21
    phases = rope_phases(torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [2, 3, 5]]), 128)
    assert phases.dtype == torch.complex64 and phases.shape == (4, 64)
    for axis in range(3):
        want = torch.ones(64, dtype=torch.complex128)
        want[21 * axis:21 * (axis + 1)] = torch.exp(1j * w)
        assert torch.allclose(phases[axis].to(torch.complex128), want, atol=1e-6), axis
    angles = torch.cat([2 * w, 3 * w, 5 * w, torch.zeros(1, dtype=torch.float64)])
    assert torch.allclose(phases[3].to(torch.complex128), torch.exp(1j * angles), atol=1e-5)


def test_rope_rotates_adjacent_channel_pairs():
    phi = torch.tensor([[0.3, -1.1]], dtype=torch.float64)               # one token, head_dim 4
    x = torch.tensor([[[1.0, 0.0, 0.0, 1.0]]])                           # [L=1, H=1, D=4]
    got = apply_rope(x, torch.polar(torch.ones(1, 2), phi.float()))
    want = torch.tensor([math.cos(0.3), math.sin(0.3), -math.sin(-1.1), math.cos(-1.1)])
    assert torch.allclose(got[0, 0].double(), want.double(), atol=1e-6)
    half = apply_rope(x.to(torch.bfloat16), torch.polar(torch.ones(1, 2), phi.float()))
    assert half.dtype == torch.bfloat16


def test_dense_flow_phase_buffer_follows_the_token_order():
    """The SS flow's `rope_phases` row n is the voxel x = n // R^2, y = n // R % R, z = n % R (R = 16)."""
    model = t2.SparseStructureFlowModel(16, 8, 128, 16, 8, 0, num_heads=1, share_mod=True)
    w = torch.exp(1j * omegas(128))
    for n, axis in ((256, 0), (16, 1), (1, 2)):
        assert torch.allclose(model.rope_phases[n, 21 * axis:21 * axis + 21].to(torch.complex128), w, atol=1e-6)
    n = 5 * 256 + 9 * 16 + 14
    assert torch.allclose(model.rope_phases[n], rope_phases(torch.tensor([[5, 9, 14]]), 128)[0])
    assert "rope_phases" not in dict(model.named_parameters()) and model.computed_buffers == ("rope_phases",)


def test_timestep_features_cos_half_first():
    tau = torch.tensor([0.0, 731.25])
    f = torch.exp(-math.log(10000) * torch.arange(128, dtype=torch.float64) / 128)
    feats = timestep_features(tau)
    assert torch.allclose(feats[:, :128].double(), torch.cos(tau.double()[:, None] * f), atol=1e-4)
    assert torch.allclose(feats[:, 128:].double(), torch.sin(tau.double()[:, None] * f), atol=1e-4)


def test_qk_rms_norm_formula():
    norm = MultiHeadRMSNorm(128, 12)
    with torch.no_grad():
        norm.gamma.normal_(1.0, 0.3)
    q = torch.randn(7, 12, 128).to(torch.bfloat16)
    want = q.double() / q.double().norm(dim=-1, keepdim=True) * norm.gamma.double() * math.sqrt(128)
    got = norm(q)
    assert got.dtype == torch.bfloat16
    assert torch.allclose(got.double(), want, rtol=8e-3, atol=8e-3)


# ------------------------------------------------------------------ whole networks against the facts' maths

def ln(x, w=None, b=None, eps=1e-6):
    mu = x.mean(-1, keepdim=True)
    out = (x - mu) / torch.sqrt(((x - mu) ** 2).mean(-1, keepdim=True) + eps)
    return out if w is None else out * w + b


def lin(p, name, x):
    return x @ p[name + ".weight"].T + p[name + ".bias"]


def rms(x, gamma):
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12) * gamma * math.sqrt(x.shape[-1])


def rotate(x, pos):
    """Facts §6.1 RoPE: pairs (2k, 2k+1) times e^{i phi_k}, phi = [x w, y w, z w, 0...]."""
    w = omegas(x.shape[-1])
    phi = torch.cat([pos[:, a:a + 1] * w for a in range(3)], 1)
    phi = torch.cat([phi, phi.new_zeros(phi.shape[0], x.shape[-1] // 2 - phi.shape[1])], 1)[:, None]
    even, odd = x[..., 0::2], x[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = even * torch.cos(phi) - odd * torch.sin(phi)
    out[..., 1::2] = even * torch.sin(phi) + odd * torch.cos(phi)
    return out


def attend(q, k, v):
    w = torch.softmax(torch.einsum("qhd,khd->hqk", q, k) / math.sqrt(q.shape[-1]), -1)
    return torch.einsum("hqk,khd->qhd", w, v).reshape(q.shape[0], -1)


def reference_flow(model, tokens, pos, tau, cond):
    """One item: tokens [L, in] at integer positions [L, 3], timestep 1000 t, condition [Lc, cond] -> [L, out]."""
    p = {k: v.double() for k, v in model.named_parameters()}
    c, heads = model.model_channels, model.blocks[0].self_attn.heads
    d = c // heads
    f = torch.exp(-math.log(10000) * torch.arange(128, dtype=torch.float64) / 128)
    feats = torch.cat([torch.cos(tau * f), torch.sin(tau * f)])
    emb = lin(p, "t_embedder.mlp.2", F.silu(lin(p, "t_embedder.mlp.0", feats)))
    shared = lin(p, "adaLN_modulation.1", F.silu(emb))
    x = lin(p, "input_layer", tokens.double())
    pos, cond = pos.double(), cond.double()
    for i in range(len(model.blocks)):
        b = f"blocks.{i}."
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (shared + p[b + "modulation"]).split(c)
        h = ln(x) * (1 + scale_msa) + shift_msa
        q, k, v = lin(p, b + "self_attn.to_qkv", h).reshape(-1, 3, heads, d).unbind(1)
        q = rotate(rms(q, p[b + "self_attn.q_rms_norm.gamma"]), pos)
        k = rotate(rms(k, p[b + "self_attn.k_rms_norm.gamma"]), pos)
        x = x + gate_msa * lin(p, b + "self_attn.to_out", attend(q, k, v))
        h = ln(x, p[b + "norm2.weight"], p[b + "norm2.bias"])
        q = rms(lin(p, b + "cross_attn.to_q", h).reshape(-1, heads, d), p[b + "cross_attn.q_rms_norm.gamma"])
        k, v = lin(p, b + "cross_attn.to_kv", cond).reshape(-1, 2, heads, d).unbind(1)
        k = rms(k, p[b + "cross_attn.k_rms_norm.gamma"])
        x = x + lin(p, b + "cross_attn.to_out", attend(q, k, v))
        h = ln(x) * (1 + scale_mlp) + shift_mlp
        x = x + gate_mlp * lin(p, b + "mlp.mlp.2", F.gelu(lin(p, b + "mlp.mlp.0", h), approximate="tanh"))
    return lin(p, "out_layer", ln(x, eps=1e-5))


def randomised(model):
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, param in model.named_parameters():
            base = 1.0 if name.endswith(("gamma", "norm2.weight")) else 0.0
            param.copy_(base + 0.25 * torch.randn(param.shape, generator=g))
    return model.eval()


@pytest.fixture(scope="module")
def dense():
    return randomised(models.from_config({"name": "SparseStructureFlowModel", "args": ARGS}))


@pytest.fixture(scope="module")
def sparse():
    return randomised(models.from_config({"name": "SLatFlowModel", "args": dict(ARGS, in_channels=12)}))


def test_the_registry_picks_the_family_from_the_args(dense, sparse):
    assert type(dense) is t2.SparseStructureFlowModel and type(sparse) is t2.SLatFlowModel
    assert models.model_class("SparseStructureFlowModel", {"pe_mode": "ape"}) is V1StructureFlow
    assert models.model_class("SparseStructureFlowModel") is V1StructureFlow
    assert models.model_class("ElasticSLatFlowModel", {"pe_mode": "rope"}) is t2.SLatFlowModel
    assert dense.blocks[0].mlp.mlp[0].out_features == int(64 * 2.5)


@torch.no_grad()
def test_dense_flow_equals_the_facts_maths(dense):
    r = ARGS["resolution"]
    x = torch.randn(2, 8, r, r, r)
    tau, cond = torch.tensor([300.0, 812.5]), torch.randn(2, 5, 24)
    out = dense(x, tau, cond)
    assert out.shape == x.shape and out.dtype == torch.float32
    voxels = [(i, j, k) for i in range(r) for j in range(r) for k in range(r)]
    n = torch.tensor([i * r * r + j * r + k for i, j, k in voxels])            # facts §6.2 token order
    pos = torch.zeros(r ** 3, 3)
    pos[n] = torch.tensor(voxels, dtype=torch.float32)
    for b in range(2):
        tokens = torch.zeros(r ** 3, 8)
        tokens[n] = torch.stack([x[b, :, i, j, k] for i, j, k in voxels])
        want = reference_flow(dense, tokens, pos, tau[b].double(), cond[b])
        got = torch.stack([out[b, :, i, j, k] for i, j, k in voxels])
        assert torch.allclose(got.double(), want[n], rtol=1e-3, atol=1e-3), (got.double() - want[n]).abs().max()


def items(sizes, channels, seed=0):
    g = torch.Generator().manual_seed(seed)
    coords = []
    for b, size in enumerate(sizes):
        xyz = torch.randperm(40 ** 3, generator=g)[:size]
        xyz = torch.stack([xyz // 1600, xyz // 40 % 40, xyz % 40], 1).sort(0).values   # any order of rows
        coords.append(torch.cat([torch.full((size, 1), b), xyz], 1))
    coords = torch.cat(coords).int()
    return SparseTensor(torch.randn(coords.shape[0], channels, generator=g), coords)


@torch.no_grad()
def test_sparse_flow_equals_the_facts_maths_with_concat_cond(sparse):
    x = items([9, 6], 8)
    shape_latent = torch.randn(15, 4)
    tau, cond = torch.tensor([950.0, 120.0]), torch.randn(2, 7, 24)
    out = sparse(x, tau, cond, concat_cond=x.replace(shape_latent))
    assert out.feats.shape == (15, 8) and torch.equal(out.coords, x.coords)
    for b, rows in enumerate(x.layout):
        tokens = torch.cat([x.feats[rows], shape_latent[rows]], 1)             # noise first, then the shape
        want = reference_flow(sparse, tokens, x.coords[rows, 1:].float(), tau[b].double(), cond[b])
        assert torch.allclose(out.feats[rows].double(), want, rtol=1e-3, atol=1e-3)


@torch.no_grad()
@pytest.mark.parametrize("sizes", [[11, 4], [8, 8]], ids=["varlen", "cfg_pair"])
def test_sparse_batch_equals_each_item_alone(sparse, sizes):
    x = items(sizes, 12, seed=1)
    if sizes[0] == sizes[1]:                                  # the sampler's CFG pair: the same voxels twice
        second = x.coords[:8] + torch.tensor([1, 0, 0, 0], dtype=torch.int32)
        x = SparseTensor(x.feats, torch.cat([x.coords[:8], second]))
    tau, cond = torch.tensor([400.0, 401.0]), torch.randn(2, 5, 24)
    both = sparse(x, tau, cond).feats
    for b, rows in enumerate(x.layout):
        alone = sparse(x[b], tau[b:b + 1], cond[b:b + 1]).feats
        assert torch.allclose(both[rows], alone, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_low_vram_mode_gives_the_same_numbers(sparse):
    x = items([11, 4], 12, seed=4)
    tau, cond = torch.tensor([640.0, 90.0]), torch.randn(2, 5, 24)
    plain = sparse(x, tau, cond).feats
    sparse.lean = True
    try:
        lean = sparse(x, tau, cond).feats
    finally:
        sparse.lean = False
    assert torch.allclose(lean, plain, rtol=1e-5, atol=1e-5)


def test_one_concat_cond_serves_a_cfg_pair(sparse):
    one = items([6], 8, seed=2)
    pair = SparseTensor(torch.cat([one.feats, one.feats]),
                        torch.cat([one.coords, one.coords + torch.tensor([1, 0, 0, 0], dtype=torch.int32)]))
    shape_latent = torch.randn(6, 4)
    with torch.no_grad():
        got = sparse(pair, torch.tensor([500.0, 500.0]), torch.zeros(2, 5, 24), concat_cond=shape_latent).feats
        want = sparse(one, torch.tensor([500.0]), torch.zeros(1, 5, 24), concat_cond=shape_latent).feats
    assert torch.allclose(got[:6], want, atol=1e-5) and torch.allclose(got[6:], want, atol=1e-5)
    with pytest.raises(ValueError, match="concat_cond has"):
        sparse(pair, torch.tensor([500.0, 500.0]), torch.zeros(2, 5, 24), concat_cond=torch.randn(5, 4))
    with pytest.raises(ValueError, match="expected 12 input channels"):
        sparse(pair, torch.tensor([500.0, 500.0]), torch.zeros(2, 5, 24))


def test_checkpoint_dtype_and_unsupported_args():
    model = models.from_config({"name": "SLatFlowModel", "args": dict(ARGS, dtype="bfloat16", num_blocks=1)})
    block = model.blocks[0]
    assert model.dtype == torch.bfloat16 and block.self_attn.to_qkv.weight.dtype == torch.bfloat16
    assert {block.modulation.dtype, block.norm2.weight.dtype, block.cross_attn.k_rms_norm.gamma.dtype,
            model.input_layer.weight.dtype, model.adaLN_modulation[1].weight.dtype} == {torch.float32}
    x = items([5], 8)
    out = model(x, torch.tensor([500.0]), torch.randn(1, 3, 24))
    assert out.feats.dtype == torch.float32 and torch.isfinite(out.feats).all()
    model.set_torso_dtype(torch.float32)                  # bf16 values: no master copy kept, an exact round trip
    assert "_torso_master" not in model.__dict__
    for bad, match in ((dict(share_mod=False), "share_mod"), (dict(dtype="int8"), "dtype"),
                       (dict(initialization="xavier"), "initialization")):
        with pytest.raises(ValueError, match=match):
            models.from_config({"name": "SLatFlowModel", "args": dict(ARGS, **bad)})
