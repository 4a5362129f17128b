"""TRELLIS2_TEXTURING_FACTS.md §12 checks not covered beside the code they test: the shape encoder's size (§12.1),
the normalisation and axis round trip (§12.2), the S2C down-sampling order (§12.5), the trilinear weights
(§12.9) and the bake round trip (§12.10). (§12.3, §12.4, §12.11: tests/trellis/representations/
test_ovoxel_voxelize.py; §12.6-§12.8: test_trellis2_texturing.py.)"""
import json

import numpy as np
import pytest
import torch
import torch.nn as nn

import trellis.models as models
from trellis.export.pbr.onto_mesh import NearestFilledVoxels, bake_pbr_onto_mesh
from trellis.models.trellis2.sc_vae_blocks import SparseResBlockS2C3d, space_to_channel_plan
from trellis.modules.sparse import SparseTensor
from trellis.representations.ovoxel import MeshFrame, MeshWithVoxel, grid_sample_3d, read_user_mesh

from tests.helpers.repo import DATA


def test_shape_encoder_size_matches_the_facts():
    manifest = json.loads((DATA / "state_dict_trellis2" / "shape_enc_next_dc_f16c32_fp16.json").read_text())
    with torch.device("meta"):
        model = models.from_config(json.loads(manifest["ckpt_json_text"]))
    state = model.state_dict()
    assert len(state) == 284 == manifest["num_tensors"]
    assert sum(v.numel() for v in state.values()) == 354_385_392
    assert sum(t["shape"] and int(np.prod(t["shape"])) * 2 for t in manifest["tensors"]) == 708_770_784


def test_normalisation_and_axis_round_trip():
    v = np.array([[0, 0, 0], [2, 4, 6], [2, 0, 0]], np.float64)
    mesh = read_user_mesh((v, np.array([[0, 1, 2]])))
    frame = MeshFrame.of(mesh, "y")
    np.testing.assert_allclose(frame.internal(v)[1], [0.1666650, -0.4999950, 0.3333300], atol=1e-7)
    np.testing.assert_allclose(frame.user(frame.internal(v)), v, atol=1e-12)
    world = frame.world(v)                      # the TRELLIS world (z up) the GLB writer turns back exactly
    assert np.array_equal(world @ np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]]), v)
    z_up = MeshFrame.of(mesh, "z")
    np.testing.assert_allclose(z_up.internal(v)[1], [0.1666650, 0.3333300, 0.4999950], atol=1e-7)


def test_s2c_parents_children_and_skip_channel():
    coords = torch.tensor([[0, 0, 0, 0], [0, 1, 0, 0], [0, 3, 3, 3]], dtype=torch.int32)
    x = SparseTensor(torch.randn(3, 64, generator=torch.Generator().manual_seed(0)), coords)
    parents, row_parent, k = space_to_channel_plan(x)
    assert parents[:, 1:].tolist() == [[0, 0, 0], [1, 1, 1]]
    assert row_parent.tolist() == [0, 0, 1] and k.tolist() == [0, 1, 7]
    block = SparseResBlockS2C3d(64, 128)
    with torch.no_grad():
        nn.init.zeros_(block.conv2.weight)
        nn.init.zeros_(block.conv2.bias)
        out = block(x)                                   # conv2 silenced: the output is the skip
    torch.testing.assert_close(out.feats[0, 17], x.feats[1, 4:8].mean())


def test_trilinear_weights():
    one = grid_sample_3d(torch.tensor([[2.0]]), torch.tensor([[5, 5, 5]]), torch.tensor([[5.9, 5.5, 5.5]]))
    assert one.item() == pytest.approx(2.0)
    feats, coords = torch.tensor([[1.0], [3.0]]), torch.tensor([[5, 5, 5], [6, 5, 5]])
    q = torch.tensor([[5.75, 5.5, 5.5], [6.0, 5.5, 5.5], [9.0, 9.0, 9.0]])
    np.testing.assert_allclose(grid_sample_3d(feats, coords, q)[:, 0].numpy(), [0.75 * 1 + 0.25 * 3, 2.0, 0.0],
                               atol=1e-6)


def test_bake_round_trip_reads_the_voxel_attribute_at_each_vertex():
    """A smooth attribute field on the voxels around a UV-mapped sphere: each vertex's texel holds the field at the
    vertex (within a texel's change of the field)."""
    n_lon, n_lat, size, res = 16, 9, 256, 32
    lon, lat = np.linspace(0, 2 * np.pi, n_lon + 1), np.linspace(0.15, np.pi - 0.15, n_lat + 1)
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    v = np.stack([np.sin(la) * np.cos(lo), np.cos(la), -np.sin(la) * np.sin(lo)], -1).reshape(-1, 3) * 3 + 10
    uv = np.stack([lo / (2 * np.pi) * 0.9 + 0.05, 1 - (la / np.pi * 0.9 + 0.05)], -1).reshape(-1, 2)
    i, j = np.meshgrid(np.arange(n_lat), np.arange(n_lon), indexing="ij")
    a = (i * (n_lon + 1) + j).reshape(-1)
    f = np.concatenate([np.stack([a, a + n_lon + 1, a + 1], 1), np.stack([a + 1, a + n_lon + 1, a + n_lon + 2], 1)])
    frame = MeshFrame.of(read_user_mesh((v, f, uv)))
    inner = frame.internal(v)
    idx = torch.arange(res)
    grid = torch.stack(torch.meshgrid(idx, idx, idx, indexing="ij"), -1).reshape(-1, 3)
    centre = (grid + 0.5) / res - 0.5
    attrs = torch.cat([centre + 0.5, torch.full((len(grid), 1), 0.3), 0.5 + centre[:, 2:3],
                       torch.ones(len(grid), 1)], 1)
    voxels = MeshWithVoxel(torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.long), grid, res, attrs)
    out = bake_pbr_onto_mesh(voxels, frame.world(v), f, uv, inner, texture_size=size)
    assert out.info["uv"] == "kept"
    want = voxels.query_attrs(torch.as_tensor(inner, dtype=torch.float32)).numpy()
    col = np.clip((uv[:, 0] * size).astype(int), 0, size - 1)
    row = np.clip(((1 - uv[:, 1]) * size).astype(int), 0, size - 1)       # glTF v from the top row
    got = out.texture[row, col] / 255.0
    np.testing.assert_allclose(got, np.clip(want[:, :3], 0, 1), atol=0.03)
    np.testing.assert_allclose(out.pbr.metallic_roughness[row, col, 2] / 255.0, 0.3, atol=0.01)
    np.testing.assert_allclose(out.pbr.metallic_roughness[row, col, 1] / 255.0, want[:, 4], atol=0.03)
    assert out.pbr.alpha_mode == "OPAQUE"


def test_a_point_with_no_voxel_around_takes_the_nearest_one_within_reach():
    coords = torch.tensor([[5, 5, 5], [5, 9, 5]])
    attrs = torch.tensor([[0.2, 0.4, 0.6, 1.0, 0.5, 1.0], [0.9, 0.9, 0.9, 0.0, 0.1, 1.0]])
    res = 16
    voxels = NearestFilledVoxels.of(MeshWithVoxel(torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.long), coords,
                                                  res, attrs))
    world = (torch.tensor([[5.6, 5.5, 5.5], [8.5, 5.5, 5.5], [5.5, 12.5, 5.5], [14.5, 14.5, 14.5]]) / res) - 0.5
    got = voxels.query_attrs(world)
    torch.testing.assert_close(got[0], attrs[0])                      # trilinear as before
    torch.testing.assert_close(got[1], attrs[0])                      # 3 voxels from the first
    torch.testing.assert_close(got[2], attrs[1])                      # 3 from the second
    assert torch.equal(got[3], torch.zeros(6))                        # nothing within reach
