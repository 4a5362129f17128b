"""The mesh decoder's memory-saving paths against the plain computation they replace.

`SparseSubdivideBlock3d.forward` skips building the subdivided tensor (its first conv reads neighbours
from their parents), normalises in place and adds the skip per parent; `SLatMeshDecoder.decode_features`
runs the fp32 head in row chunks. The references below are the straightforward compositions of the same
modules (subdivide, then the Sequential layers; one fp32 cast and one linear), so any change of numbers
shows: the CPU paths are required to be bit for bit equal.
"""
import os

import pytest
import torch

import trellis.models as models
from trellis.modules.sparse import SparseSubdivideBlock3d, SparseTensor, subdivide
from trellis.modules.sparse import conv as conv_mod
from trellis.modules.sparse.spatial import subdivide_coords
from trellis.representations.mesh import extract_mesh
from trellis.tools.tiny_pipeline import CONFIGS

from tests.helpers import structures


def random_structure(seed, res=12, channels=64, batch=2, density=0.25, dtype=torch.float32):
    return structures.random_structure(seed, res=res, batch=batch, density=density, channels=channels, dtype=dtype)


def reference_block(block, x):
    """The block as the reference writes it: GN-SiLU, subdivide, conv-GN-SiLU-conv, skip of the subdivided input."""
    h = block.out_layers(subdivide(block.act_layers(x)))
    skip = block.skip_connection(subdivide(x))
    return h.replace(h.feats + skip.feats)


@pytest.mark.parametrize("c_in,c_out,dtype", [(64, 32, torch.float32), (64, 64, torch.float32),
                                              (64, 32, torch.float16)])
def test_subdivide_block_equals_plain_composition(c_in, c_out, dtype):
    torch.manual_seed(0)
    block = SparseSubdivideBlock3d(c_in, c_out).eval()
    for p in block.parameters():            # non-trivial norms
        p.data.add_(0.1 * torch.randn_like(p))
    block = block.to(dtype) if dtype == torch.float16 else block
    if dtype == torch.float16:                # the fp16 torso keeps the norms in fp32
        for m in (block.act_layers[0], block.out_layers[1]):
            m.float()
    x = random_structure(1, channels=c_in, dtype=dtype)
    with torch.no_grad():
        got, ref = block(x), reference_block(block, x)
    assert torch.equal(got.coords, ref.coords)
    assert got.layout == ref.layout
    assert got.feats.dtype == dtype
    assert torch.equal(got.feats, ref.feats)


def test_subdivided_conv_chunked_path_equals_materialised(monkeypatch):
    """The GPU path of subdivided_conv3d (chunks of children whose neighbour map points into a small
    gathered parent tensor, through submanifold_conv3d) gives the conv of the materialised children;
    on CPU it runs through the twin, with chunks much smaller than the tensor and a missing-neighbour
    slot in every chunk."""
    x = random_structure(2, res=10, channels=24)
    g = torch.Generator().manual_seed(3)
    weight = torch.randn(16, 3, 3, 3, 24, generator=g) * 0.1
    bias = torch.randn(16, generator=g)
    full = conv_mod.submanifold_conv3d_torch(subdivide(x), weight, bias)
    monkeypatch.setattr(conv_mod, "SUBDIVIDED_CHUNK", 333)
    for chunk in (True, False):
        child = SparseTensor(x.feats.new_empty(8 * len(x.coords), 0), subdivide_coords(x.coords))
        got = conv_mod.subdivided_conv3d(child, x.feats, weight, bias, chunk=chunk)
        torch.testing.assert_close(got, full, atol=1e-5, rtol=1e-5)
        if not chunk:
            assert torch.equal(got, full)
    # kernel size 1 (no neighbours) falls back to the materialised conv
    w1 = torch.randn(16, 1, 1, 1, 24, generator=g)
    child = SparseTensor(x.feats.new_empty(8 * len(x.coords), 0), subdivide_coords(x.coords))
    assert torch.equal(conv_mod.subdivided_conv3d(child, x.feats, w1, bias),
                       conv_mod.conv1x1_quirk(subdivide(x).feats, w1, bias))


def _reference_decode(m, x):
    h = m.trunk(x)
    for block in m.upsample:
        h = reference_block(block, h)
    return m.out_layer(h.type(x.dtype))


@pytest.mark.slow
def test_tiny_mesh_decoder_features_and_mesh_unchanged(tiny_pipeline_dir, monkeypatch):
    m = models.from_pretrained(os.path.join(tiny_pipeline_dir, "ckpts", CONFIGS["slat_decoder_mesh"][0])).eval()
    monkeypatch.setattr(type(m), "OUT_CHUNK", 1000)          # several head chunks on the small input
    x = random_structure(4, res=16, channels=8, batch=2, density=0.08)
    with torch.no_grad():
        got, ref = m.decode_features(x), _reference_decode(m, x)
        meshes = m.to_representation(got)
    assert got.feats.shape[0] > 3000 and got.feats.dtype == torch.float32
    assert torch.equal(got.coords, ref.coords) and got.layout == ref.layout
    assert torch.equal(got.feats, ref.feats)
    assert "neighbour_map" not in {k[0] for k in got.cache if isinstance(k, tuple)}
    for s, mesh in zip(ref.layout, meshes):
        want = extract_mesh(ref.coords[s, 1:], ref.feats[s], m.mesh_resolution, use_color=m.use_color)
        assert mesh.faces.shape[0] > 0
        assert torch.equal(mesh.faces, want.faces) and torch.equal(mesh.vertices, want.vertices)
