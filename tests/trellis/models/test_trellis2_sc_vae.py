"""TRELLIS.2's SC-VAE (TRELLIS2_FACTS.md §7.1, §7.4, §8, §10.1, §16a.4): each block against an independent
recomputation (dense 3-D convolutions, explicit per-child loops), a tiny decoder pair end to end, and every
full-size network built on the meta device against its manifest."""
import json

import pytest
import torch
import torch.nn.functional as F

import trellis.models as models
from trellis.models.trellis2 import sc_vae
from trellis.models.trellis2.sc_vae_blocks import (SparseConvNeXtBlock3d, SparseResBlockC2S3d, SparseResBlockS2C3d,
                                                   subdivision_children)
from trellis.modules.sparse import SparseSubMConv3d, SparseTensor
from trellis.representations.ovoxel import pbr_attributes

from tests.helpers.repo import DATA
from tests.helpers.tiny_models import tiny_sc_vae_decoders

MANIFESTS = DATA / "state_dict_trellis2"
VAE_STEMS = ["shape_dec_next_dc_f16c32_fp16", "tex_dec_next_dc_f16c32_fp16", "shape_enc_next_dc_f16c32_fp16",
             "tex_enc_next_dc_f16c32_fp16"]


def sparse(coords, channels, seed=0):
    g = torch.Generator().manual_seed(seed)
    coords = torch.as_tensor(coords, dtype=torch.int32)
    return SparseTensor(torch.randn(len(coords), channels, generator=g), coords)


def random_sites(n, res, seed=0):
    g = torch.Generator().manual_seed(seed)
    xyz = torch.randperm(res ** 3, generator=g)[:n].sort().values
    xyz = torch.stack([xyz // res ** 2, xyz // res % res, xyz % res], 1)
    return torch.cat([torch.zeros(n, 1, dtype=torch.long), xyz], 1).int()


def dense_conv_at_sites(x: SparseTensor, weight, bias):
    """The submanifold conv as the facts define it, via a dense cross-correlation: weight [C_out, 3, 3, 3, C_in]
    with dims (i, j, k) reading the neighbour at offset (i - 1, j - 1, k - 1) along (x, y, z)."""
    c = x.coords.long()
    size = (c[:, 1:].max(0).values + 1).tolist()
    grid = torch.zeros(1, x.feats.shape[1], *size, dtype=torch.float64)
    grid[0, :, c[:, 1], c[:, 2], c[:, 3]] = x.feats.double().T
    out = F.conv3d(grid, weight.double().permute(0, 4, 1, 2, 3), bias.double(), padding=1)
    return out[0, :, c[:, 1], c[:, 2], c[:, 3]].T


def close(got, want):
    """fp32 network output against a float64 recomputation of the same fp32 parameters."""
    torch.testing.assert_close(got.double(), want.double(), atol=2e-5, rtol=2e-5)


def test_conv_offset_convention_matches_the_facts_and_a_dense_conv():
    x = sparse(random_sites(60, 6, seed=1), 3)
    conv = SparseSubMConv3d(3, 4)
    close(conv(x).feats, dense_conv_at_sites(x, conv.weight, conv.bias))
    # a single tap at weight index (2, 1, 1), v = 9*2 + 3 + 1 = 22, reads the neighbour at (+1, 0, 0)
    pair = sparse([[0, 1, 1, 1], [0, 2, 1, 1]], 1)
    with torch.no_grad():
        conv = SparseSubMConv3d(1, 1)
        conv.weight.zero_()
        conv.bias.zero_()
        conv.weight.view(1, 27, 1)[0, 22, 0] = 1
    assert conv(pair).feats[:, 0].tolist() == [pair.feats[1, 0].item(), 0.0]


def test_convnext_block_equals_its_dense_recomputation():
    x = sparse(random_sites(40, 5, seed=2), 8)
    block = SparseConvNeXtBlock3d(8)
    with torch.no_grad():
        block.norm.weight.normal_()
        block.norm.bias.normal_()
    h = dense_conv_at_sites(x, block.conv.weight, block.conv.bias)
    h = (h - h.mean(1, keepdim=True)) / torch.sqrt(h.var(1, unbiased=False, keepdim=True) + 1e-6)
    h = h * block.norm.weight.double() + block.norm.bias.double()
    lin1, lin2 = block.mlp[0], block.mlp[2]
    h = F.silu(h @ lin1.weight.double().T + lin1.bias.double()) @ lin2.weight.double().T + lin2.bias.double()
    close(block(x).feats, x.feats.double() + h)


def test_c2s_children_order_of_the_facts():
    """§16a.4: logits (+,-,+,-,-,-,-,+) spawn children k = 0, 2, 7 at offsets (0,0,0), (0,1,0), (1,1,1)."""
    logits = torch.tensor([[1.0, -1, 2, -1, -1, -3, -1, 0.5]])
    parent, k = subdivision_children(logits)
    assert parent.tolist() == [0, 0, 0] and k.tolist() == [0, 2, 7]
    x = sparse([[0, 3, 5, 7]], 16)
    block = SparseResBlockC2S3d(16, 8, pred_subdiv=False)
    out, _ = block(x, x.replace(logits))
    assert out.coords.tolist() == [[0, 6, 10, 14], [0, 6, 11, 14], [0, 7, 11, 15]]


def test_c2s_block_split_and_skip_against_a_per_child_recomputation():
    c_in, c_out = 16, 8                                   # C_in / 8 = 2 channels per child, repeated r = 4 times
    x = sparse(random_sites(12, 4, seed=3), c_in, seed=3)
    block = SparseResBlockC2S3d(c_in, c_out, pred_subdiv=True)
    with torch.no_grad():
        block.norm1.weight.normal_()
        block.norm1.bias.normal_()
    out, sub = block(x)
    close(sub.feats, x.feats.double() @ block.to_subdiv.weight.double().T + block.to_subdiv.bias.double())
    logits = sub.feats                                    # the block's own fp32 logits decide (no sign flips)
    a = F.silu(F.layer_norm(x.feats.double(), (c_in,), block.norm1.weight.double(), block.norm1.bias.double(), 1e-6))
    h1 = dense_conv_at_sites(x.replace(a), block.conv1.weight, block.conv1.bias)
    coords, feats, skips = [], [], []
    for p in range(len(x.coords)):
        for k in range(8):
            if logits[p, k] > 0:
                b, px, py, pz = x.coords[p].tolist()
                coords.append([b, 2 * px + k % 2, 2 * py + k // 2 % 2, 2 * pz + k // 4 % 2])
                feats.append(h1[p, k * c_out:(k + 1) * c_out])
                piece = x.feats[p, k * (c_in // 8):(k + 1) * (c_in // 8)].double()
                skips.append(torch.stack([piece[j // 4] for j in range(c_out)]))
    assert 0 < len(coords) < 8 * len(x.coords)
    assert out.coords.tolist() == coords
    child = SparseTensor(F.silu(F.layer_norm(torch.stack(feats), (c_out,), eps=1e-6)), torch.tensor(coords).int())
    want = dense_conv_at_sites(child, block.conv2.weight, block.conv2.bias) + torch.stack(skips)
    close(out.feats, want)


def test_s2c_block_packs_children_in_k_order_and_averages_the_skip():
    c_in, c_out = 4, 16                                   # 8 C_in / C_out = 2 skip channels averaged per output
    x = sparse(random_sites(30, 6, seed=4), c_in, seed=4)
    block = SparseResBlockS2C3d(c_in, c_out)
    out = block(x)
    a = F.silu(F.layer_norm(x.feats.double(), (c_in,), block.norm1.weight.double(), block.norm1.bias.double(), 1e-6))
    h1 = dense_conv_at_sites(x.replace(a), block.conv1.weight, block.conv1.bias)
    parents = sorted({(b, px // 2, py // 2, pz // 2) for b, px, py, pz in x.coords.tolist()})
    packed = torch.zeros(len(parents), c_out, dtype=torch.float64)
    raw = torch.zeros(len(parents), 8 * c_in, dtype=torch.float64)
    for row, (b, px, py, pz) in enumerate(x.coords.tolist()):
        p, k = parents.index((b, px // 2, py // 2, pz // 2)), px % 2 + 2 * (py % 2) + 4 * (pz % 2)
        packed[p, k * c_out // 8:(k + 1) * c_out // 8] = h1[row]
        raw[p, k * c_in:(k + 1) * c_in] = x.feats[row]
    skip = torch.stack([raw[:, 2 * j:2 * j + 2].mean(1) for j in range(c_out)], 1)
    parent = SparseTensor(F.silu(F.layer_norm(packed, (c_out,), eps=1e-6)), torch.tensor(parents).int())
    assert out.coords.tolist() == [list(p) for p in parents]
    close(out.feats, dense_conv_at_sites(parent, block.conv2.weight, block.conv2.bias) + skip)


def test_tiny_decoders_run_end_to_end_and_the_texture_follows_the_shape():
    shape, tex = tiny_sc_vae_decoders()
    coords = torch.tensor([[0, x, y, z] for x in range(2) for y in range(2) for z in range(2)], dtype=torch.int32)
    latent = SparseTensor(torch.randn(8, 4), coords)
    with torch.no_grad():
        out, subs = shape(latent, return_subs=True)
        tex_out = tex(latent.replace(torch.randn(8, 4)), guide_subs=subs)
        fine = shape.upsample(latent, times=4)
    assert out.feats.shape[1] == 7 and out.feats.dtype == torch.float32 and len(subs) == 4
    assert 8 < len(out.coords) < 8 * 16 ** 3
    xyz = out.coords[:, 1:].long()
    assert xyz.min() >= 0 and xyz.max() < 32
    assert torch.equal(torch.unique(xyz // 16, dim=0), coords[:, 1:].long())
    assert len(torch.unique(xyz, dim=0)) == len(xyz)
    assert torch.equal(tex_out.coords, out.coords) and tex_out.feats.shape[1] == 6
    assert torch.equal(fine, out.coords)
    mesh, = shape.to_meshes(out)
    assert mesh.vertices.shape == (len(xyz), 3) and mesh.res == 32 and mesh.faces.shape[1] == 3
    textured = mesh.with_attrs(pbr_attributes(tex_out.feats))
    assert textured.attr("base_color").shape == (len(xyz), 3)
    with pytest.raises(ValueError, match="guide_subs"):
        tex(latent)
    with pytest.raises(ValueError, match="same rows"):
        tex(SparseTensor(torch.randn(7, 4), coords[1:]), guide_subs=subs)


def test_row_chunks_of_the_mlps_and_the_head_give_the_same_numbers(monkeypatch):
    shape, _ = tiny_sc_vae_decoders()
    coords = torch.tensor([[0, x, y, z] for x in range(2) for y in range(2) for z in range(2)], dtype=torch.int32)
    latent = SparseTensor(torch.randn(8, 4, generator=torch.Generator().manual_seed(1)), coords)
    with torch.no_grad():
        whole = shape(latent)
        monkeypatch.setattr(shape, "HEAD_CHUNK", 100)
        monkeypatch.setattr(SparseConvNeXtBlock3d, "HIDDEN_BUDGET", 128 * 7)     # 7 rows at the widest level
        chunked = shape(SparseTensor(latent.feats, latent.coords))
    assert torch.equal(chunked.coords, whole.coords) and len(whole.coords) > 100
    torch.testing.assert_close(chunked.feats, whole.feats)


def test_tiny_encoder_maps_fine_voxels_back_to_the_latent_grid():
    enc = sc_vae.FlexiDualGridVaeEncoder(model_channels=[8, 8, 16, 16, 32], latent_channels=4,
                                         num_blocks=[0, 1, 1, 1, 1], block_type=["SparseConvNeXtBlock3d"] * 5,
                                         down_block_type=["SparseResBlockS2C3d"] * 4).eval()
    fine = random_sites(300, 32, seed=5)
    with torch.no_grad():
        z, mean, logvar = enc(SparseTensor(torch.rand(300, 6) - 0.5, fine), return_raw=True)
    assert torch.equal(z.coords[:, 1:].long(), torch.unique(fine[:, 1:].long() // 16, dim=0))
    assert z.feats.shape == (len(z.coords), 4) and torch.equal(z.feats, mean) and logvar.shape == mean.shape


@pytest.mark.parametrize("stem", VAE_STEMS)
def test_full_size_sc_vae_matches_its_manifest(stem):
    m = json.loads((MANIFESTS / f"{stem}.json").read_text())
    config = json.loads(m["ckpt_json_text"])
    assert config["name"] == m["class_name_in_ckpt_json"] and config["args"] == m["args"]
    assert models.model_class(config["name"], config["args"]) is getattr(sc_vae, config["name"])
    with torch.device("meta"):
        model = models.from_config(config).eval()
    state = model.state_dict()
    expected = {t["key"]: t for t in m["tensors"]}
    assert set(state) == set(expected)
    for k, t in expected.items():
        assert list(state[k].shape) == t["shape"], k
        assert str(state[k].dtype) == "torch." + t["dtype"], k
    assert sum(v.numel() for v in state.values()) == m["total_numel"]


def test_conv_finds_neighbours_beyond_coordinate_1023():
    """The 1536^3 grid: coordinates up to 1535, a bounding box too large for the dense neighbour grid."""
    x = sparse([[0, 0, 0, 0], [0, 1534, 1535, 1535], [0, 1535, 1535, 1535]], 1)
    with torch.no_grad():
        conv = SparseSubMConv3d(1, 1)
        conv.weight.zero_()
        conv.bias.zero_()
        conv.weight.view(1, 27, 1)[0, 4, 0] = 1              # (i, j, k) = (0, 1, 1): the neighbour at (-1, 0, 0)
    assert conv(x).feats[:, 0].tolist() == [0.0, 0.0, x.feats[1, 0].item()]
