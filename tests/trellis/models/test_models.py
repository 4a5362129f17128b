"""The six networks: loading, dtypes, fp16 vs fp32, row order, batch independence, fixed buffers."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import trellis.models as models
from trellis.modules.embed import absolute_position_embedding, timestep_features
from trellis.modules.sparse import SparseTensor, sparse_batch
from trellis.models.structured_latent_vae.decoder_gs import offset_perturbation
from trellis.tools.tiny_pipeline import CONFIGS
from tests.helpers.structures import random_structure

from tests.helpers.repo import DATA, ROOT
MANIFESTS = DATA / "state_dict"


def load(tiny_dir, key, **overrides):
    return models.from_pretrained(os.path.join(tiny_dir, "ckpts", CONFIGS[key][0]), **overrides).eval()


def structure(seed=0, res=16, batch=1, density=0.1):
    return random_structure(seed, res=res, batch=batch, density=density)


def rel_rms(a, b):
    return ((a - b).float().pow(2).mean().sqrt() / b.float().pow(2).mean().sqrt()).item()


def test_loaded_dtypes_follow_fp16_policy(tiny_pipeline_dir):
    flow = load(tiny_pipeline_dir, "slat_flow_model")
    assert flow.blocks[0].self_attn.to_qkv.weight.dtype == torch.float16
    assert flow.input_blocks[0].conv1.conv.weight.dtype == torch.float16
    assert flow.blocks[0].self_attn.q_rms_norm.gamma.dtype == torch.float32
    assert flow.blocks[0].norm2.weight.dtype == torch.float32
    assert flow.input_layer.weight.dtype == torch.float32 and flow.t_embedder.mlp[0].weight.dtype == torch.float32
    mesh = load(tiny_pipeline_dir, "slat_decoder_mesh")
    assert mesh.upsample[0].skip_connection.conv.weight.dtype == torch.float16
    assert mesh.upsample[0].act_layers[0].weight.dtype == torch.float32
    fp32 = load(tiny_pipeline_dir, "slat_flow_model", use_fp16=False)
    assert all(p.dtype == torch.float32 for p in fp32.parameters())


def _outputs(tiny_dir, key, model_kwargs=None):
    m = load(tiny_dir, key, **(model_kwargs or {}))
    g = torch.Generator().manual_seed(1)
    cond = torch.randn(1, 1374, 32, generator=g)
    if key == "sparse_structure_flow_model":
        return m(torch.randn(1, 8, 8, 8, 8, generator=g), torch.tensor([700.0]), cond)
    if key == "sparse_structure_decoder":
        return m(torch.randn(1, 8, 8, 8, 8, generator=g))
    x = structure()
    if key == "slat_flow_model":
        return m(x, torch.tensor([700.0]), cond).feats
    if key == "slat_decoder_gs":
        rep = m(x)[0]
        return torch.cat([rep.get_xyz, rep.get_scaling, rep.get_rotation, rep.get_opacity, rep.get_features[:, 0]], 1)
    if key == "slat_decoder_rf":
        rep = m(x)[0]
        return torch.cat([rep.trivec.flatten(1), rep.density, rep.features_dc.flatten(1)], 1)
    return m.decode_features(x).feats


@pytest.mark.parametrize("key", list(CONFIGS))
def test_fp16_torso_matches_fp32_within_fp16_noise(tiny_pipeline_dir, key):
    half = _outputs(tiny_pipeline_dir, key)
    full = _outputs(tiny_pipeline_dir, key, {"use_fp16": False})
    assert half.dtype == torch.float32 and torch.isfinite(half).all()
    assert rel_rms(half, full) < 1e-2


@pytest.mark.parametrize("key", ["slat_flow_model", "slat_decoder_gs", "slat_decoder_rf", "slat_decoder_mesh"])
def test_sparse_models_keep_row_order_and_batch_items_independent(tiny_pipeline_dir, key):
    m = load(tiny_pipeline_dir, key, use_fp16=False)
    cond = torch.randn(2, 1374, 32, generator=torch.Generator().manual_seed(2))
    a, b = structure(seed=3, density=0.06), structure(seed=4, density=0.06)

    def run(x, c):
        if key == "slat_flow_model":
            return [m(x, torch.full((x.batch_size,), 600.0), c).feats]
        if key == "slat_decoder_mesh":
            return [m.decode_features(x).feats]
        reps = m(x)
        return [r._xyz if key == "slat_decoder_gs" else r.trivec.flatten(1) for r in reps]

    # permuting the rows of an item permutes the outputs the same way
    perm = torch.randperm(len(a.coords), generator=torch.Generator().manual_seed(5))
    base = run(a, cond[:1])[0]
    shuffled = run(SparseTensor(a.feats[perm], a.coords[perm]), cond[:1])[0]
    if key == "slat_decoder_gs":
        g = base.shape[0] // len(perm)
        base = base.reshape(len(perm), g, -1)
        shuffled = shuffled.reshape(len(perm), g, -1)
    if key == "slat_decoder_mesh":  # rows are 64 children per input voxel, children consecutive
        base = base.reshape(len(perm), 64, -1)
        shuffled = shuffled.reshape(len(perm), 64, -1)
    torch.testing.assert_close(shuffled, base[perm], atol=2e-5, rtol=2e-4)

    # a two-item batch gives each item what it gets alone
    both = run(sparse_batch([a, b]), cond)
    alone_b = run(b, cond[1:])[0]
    if key in ("slat_flow_model", "slat_decoder_mesh"):
        n_a = len(a.coords) * (64 if key == "slat_decoder_mesh" else 1)
        torch.testing.assert_close(both[0][n_a:], alone_b, atol=2e-5, rtol=2e-4)
    else:
        torch.testing.assert_close(both[1], alone_b, atol=2e-5, rtol=2e-4)


def test_dense_models_batch_items_independent(tiny_pipeline_dir):
    flow = load(tiny_pipeline_dir, "sparse_structure_flow_model", use_fp16=False)
    g = torch.Generator().manual_seed(6)
    x, cond = torch.randn(2, 8, 8, 8, 8, generator=g), torch.randn(2, 1374, 32, generator=g)
    t = torch.tensor([900.0, 100.0])
    both = flow(x, t, cond)
    torch.testing.assert_close(both[1:], flow(x[1:], t[1:], cond[1:]), atol=1e-5, rtol=1e-5)
    dec = load(tiny_pipeline_dir, "sparse_structure_decoder", use_fp16=False)
    torch.testing.assert_close(dec(x)[1:], dec(x[1:]), atol=1e-5, rtol=1e-5)


def test_modulated_block_follows_spec_equations():
    """One DiT block against a direct transcription of spec §3.5 with plain softmax attention."""
    from trellis.modules.transformer import ModulatedTransformerCrossBlock

    torch.manual_seed(0)
    blk = ModulatedTransformerCrossBlock(32, 12, 2, mlp_ratio=2, qk_rms_norm=True).double()
    with torch.no_grad():
        for p in blk.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    x, e, c = torch.randn(2, 5, 32).double(), torch.randn(2, 32).double(), torch.randn(2, 7, 12).double()

    def ln(v, w=None, b=None):
        return torch.nn.functional.layer_norm(v, (32,), w, b, 1e-6)

    def attn(q, k, v, heads):
        q, k, v = (t.reshape(*t.shape[:2], heads, -1).transpose(1, 2) for t in (q, k, v))
        w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), -1)
        return (w @ v).transpose(1, 2).flatten(2)

    def rms(t, gamma):
        t = t.reshape(*t.shape[:2], 2, 16)
        return (t / t.norm(dim=-1, keepdim=True).clamp(min=1e-12) * gamma * 4).flatten(2)

    mod = blk.adaLN_modulation[1](torch.nn.functional.silu(e))
    sh1, sc1, g1, sh2, sc2, g2 = [m[:, None] for m in mod.split(32, -1)]
    sa = blk.self_attn
    h = ln(x) * (1 + sc1) + sh1
    q, k, v = sa.to_qkv(h).split(32, -1)
    y = x + g1 * sa.to_out(attn(rms(q, sa.q_rms_norm.gamma), rms(k, sa.k_rms_norm.gamma), v, 2))
    ca = blk.cross_attn
    kk, vv = ca.to_kv(c).split(32, -1)
    y = y + ca.to_out(attn(ca.to_q(ln(y, blk.norm2.weight, blk.norm2.bias)), kk, vv, 2))
    h = ln(y) * (1 + sc2) + sh2
    mlp = blk.mlp.mlp
    y = y + g2 * mlp[2](torch.nn.functional.gelu(mlp[0](h), approximate="tanh"))
    torch.testing.assert_close(blk(x, e, c), y)


def test_res_block_uses_scale_then_shift():
    from trellis.modules.sparse import SparseResBlock3d

    torch.manual_seed(1)
    blk = SparseResBlock3d(4, 6, 4).double()
    with torch.no_grad():
        for p in blk.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    x = structure(seed=7, res=6, density=0.4)
    x = SparseTensor(x.feats[:, :4].double(), x.coords)
    emb = torch.randn(1, 6).double()
    scale, shift = blk.emb_layers(emb).chunk(2, dim=1)
    h = blk.conv1(x.replace(torch.nn.functional.silu(blk.norm1(x.feats)))).feats
    h = torch.nn.functional.layer_norm(h, (4,), eps=1e-6) * (1 + scale) + shift
    expected = blk.conv2(x.replace(torch.nn.functional.silu(h))).feats + x.feats
    torch.testing.assert_close(blk(x, emb).feats, expected)


def test_timestep_features_cosine_first():
    t = torch.tensor([0.0, 750.0])
    f = timestep_features(t)
    assert f.shape == (2, 256)
    freqs = np.exp(-np.log(10000.0) * np.arange(128, dtype=np.float32) / 128).astype(np.float32)
    # one float32 ulp of a frequency, times t = 750, moves the phase by ~5e-5: compare at that level
    np.testing.assert_allclose(f[1, :128].numpy(), np.cos(np.float32(750.0) * freqs), atol=1e-4)
    np.testing.assert_allclose(f[1, 128:].numpy(), np.sin(np.float32(750.0) * freqs), atol=1e-4)
    assert torch.equal(f[0, :128], torch.ones(128))


def test_pos_emb_buffer_matches_spec_formula():
    c, res = 1024, 16
    model = models.SparseStructureFlowModel(resolution=res, in_channels=8, out_channels=8, model_channels=c,
                                            cond_channels=8, num_blocks=0, num_heads=16, patch_size=1)
    f = c // 6
    freqs = (1.0 / 10000.0 ** (np.arange(f, dtype=np.float32) / np.float32(f))).astype(np.float32)
    idx = np.arange(res ** 3)
    xyz = np.stack([idx // res ** 2, (idx // res) % res, idx % res], 1).astype(np.float32)
    parts = []
    for axis in range(3):
        a = xyz[:, axis:axis + 1] * freqs[None]
        parts += [np.sin(a), np.cos(a)]
    expected = np.concatenate(parts + [np.zeros((res ** 3, c - 6 * f), np.float32)], 1)
    assert f == 170 and expected.shape == (4096, 1024)
    np.testing.assert_allclose(model.pos_emb.numpy(), expected, atol=2e-6)
    assert torch.equal(model.pos_emb[:, 1020:], torch.zeros(4096, 4))
    # small widths from the spec: 48 -> F=8 no padding, 64 -> 60 + 4 zeros
    assert absolute_position_embedding(torch.tensor([[1, 2, 3]]), 48).shape == (1, 48)
    assert torch.equal(absolute_position_embedding(torch.tensor([[1, 2, 3]]), 64)[:, 60:], torch.zeros(1, 4))


def test_offset_perturbation_matches_checkpoint_buffer():
    manifest = json.loads((MANIFESTS / "slat_decoder_gs.json").read_text())
    stored = torch.tensor(manifest["buffer_values"]["offset_perturbation"], dtype=torch.float32)
    ours = offset_perturbation(32, 1.5)
    torch.testing.assert_close(ours, stored, atol=1e-6, rtol=0)
    assert ours[0].tolist() == pytest.approx([-0.80472] * 3, abs=1e-5)


def test_patch_tokens_round_trip():
    m = models.SparseStructureFlowModel(resolution=8, in_channels=3, out_channels=3, model_channels=48,
                                        cond_channels=8, num_blocks=0, num_heads=3, patch_size=2)
    x = torch.randn(2, 3, 8, 8, 8)
    tok = m._to_tokens(x)
    assert tok.shape == (2, 64, 24)
    # channel c*p^3 + i*p^2 + j*p + k of token (a, b, c') comes from voxel (2a+i, 2b+j, 2c'+k)
    assert tok[1, 1 * 16 + 2 * 4 + 3, 2 * 8 + 1 * 4 + 0 * 2 + 1] == x[1, 2, 2 + 1, 4 + 0, 6 + 1]
    assert torch.equal(m._from_tokens(tok), x)


def test_from_pretrained_errors_are_clear(tiny_pipeline_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="expected .*json and .*safetensors"):
        models.from_pretrained(str(tmp_path / "nothing_here"))
    src = os.path.join(tiny_pipeline_dir, "ckpts", CONFIGS["slat_decoder_rf"][0])
    cfg = json.load(open(src + ".json"))
    cfg["args"]["representation_config"]["rank"] = 8
    bad = tmp_path / "bad"
    (tmp_path / "bad.json").write_text(json.dumps(cfg))
    os.symlink(src + ".safetensors", str(bad) + ".safetensors")
    with pytest.raises(ValueError, match=r"out_layer\.(weight|bias) has shape .* the model expects"):
        models.from_pretrained(str(bad))


def test_tiny_pipeline_cli_writes_official_layout(tmp_path):
    out = tmp_path / "tiny"
    res = subprocess.run([sys.executable, "-m", "trellis.tools.tiny_pipeline", str(out), "--seed", "3"],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    pipe = json.loads((out / "pipeline.json").read_text())
    assert pipe["name"] == "TrellisImageTo3DPipeline"
    assert set(pipe["args"]["models"]) == set(CONFIGS)
    from safetensors.torch import load_file
    for stem in list(pipe["args"]["models"].values()) + [pipe["args"]["image_cond_model"]]:
        cfg = json.loads((out / f"{stem}.json").read_text())
        assert set(cfg) == {"name", "args"}
        tensors = load_file(str(out / f"{stem}.safetensors"))
        for k, v in tensors.items():
            if k not in ("pos_emb", "offset_perturbation", "mask_token"):
                assert (v != 0).all(), f"{stem}: {k} has zeros"


def test_precision_round_trip_through_bf16_is_lossless(tiny_pipeline_dir):
    m = load(tiny_pipeline_dir, "slat_flow_model")
    before = {k: v.clone() for k, v in m.state_dict().items()}
    m.set_torso_dtype(torch.bfloat16)
    assert m.blocks[0].mlp.mlp[0].weight.dtype == torch.bfloat16 and m.dtype == torch.bfloat16
    m.set_torso_dtype(torch.float32)
    m.set_torso_dtype(torch.float16)
    after = m.state_dict()
    assert all(torch.equal(before[k], after[k]) and before[k].dtype == after[k].dtype for k in before)


def test_loading_skips_random_init_and_gives_the_same_model(tiny_pipeline_dir):
    """from_pretrained builds without torch.nn.init (the weights are loaded next, strict): every parameter,
    persistent and non-persistent buffer equals a model built with random init and then loaded, the output
    is identical, and torch.nn.init is itself again afterwards."""
    import torch.nn.init as init

    before = {name: getattr(init, name) for name in ("kaiming_uniform_", "normal_", "zeros_", "ones_")}
    for stem in sorted(p.stem for p in Path(tiny_pipeline_dir, "ckpts").glob("*.safetensors")):
        prefix = os.path.join(tiny_pipeline_dir, "ckpts", stem)
        config = json.loads(Path(prefix + ".json").read_text())
        if config["name"] not in models.MODEL_CLASSES:       # the image conditioner has its own loader
            continue
        fast = models.from_pretrained(prefix)
        slow = models.load_weights(models.from_config(config), prefix + ".safetensors")
        a = dict(fast.named_parameters()) | dict(fast.named_buffers())
        b = dict(slow.named_parameters()) | dict(slow.named_buffers())
        assert a.keys() == b.keys()
        for key in a:
            assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), (stem, key)
    assert {name: getattr(init, name) for name in before} == before
    with pytest.raises(RuntimeError, match="boom"):
        with models.skipped_init():
            raise RuntimeError("boom")
    assert {name: getattr(init, name) for name in before} == before


def test_skipped_init_really_skips():
    """Inside skipped_init a Linear keeps whatever its memory held: NaNs placed in its weight survive
    reset_parameters (outside, reset_parameters overwrites them)."""
    lin = torch.nn.Linear(8, 8)
    with torch.no_grad():
        lin.weight.fill_(float("nan"))
    with models.skipped_init():
        lin.reset_parameters()
    assert torch.isnan(lin.weight).all()
    lin.reset_parameters()
    assert not torch.isnan(lin.weight).any()
