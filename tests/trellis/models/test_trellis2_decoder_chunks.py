"""The SC-VAE decoders at millions of fine voxels: a C2S block run chunk by chunk (parents for conv1 and the norm,
children for conv2 and the skip; neither conv builds the children's whole neighbour map) gives the block's numbers,
and the texture decoder reuses the shape decoder's neighbour maps along its subdivision instead of building them
again. (The CPU's GEMM may round a chunk's rows differently from the whole tensor's; the GPU kernels do not:
tests/gpu/test_trellis2_speed_gpu.py.)"""
import torch

from trellis.models.trellis2.sc_vae import on_guide_voxels
from trellis.models.trellis2.sc_vae_blocks import SparseResBlockC2S3d, even_step
from trellis.modules.sparse import SparseTensor

from tests.helpers.tiny_models import tiny_sc_vae_decoders


def decode(shape, tex, latent, tex_latent):
    with torch.no_grad():
        out, subs = shape(SparseTensor(latent.feats, latent.coords), return_subs=True)
        return out, subs, tex(SparseTensor(tex_latent.feats, latent.coords), guide_subs=subs)


def test_chunked_c2s_blocks_give_the_decoders_numbers(monkeypatch):
    shape, tex = tiny_sc_vae_decoders()
    coords = torch.tensor([[0, x, y, z] for x in range(2) for y in range(2) for z in range(2)], dtype=torch.int32)
    g = torch.Generator().manual_seed(1)
    latent, tex_latent = SparseTensor(torch.randn(8, 4, generator=g), coords), SparseTensor(torch.randn(8, 4), coords)
    out, subs, tex_out = decode(shape, tex, latent, tex_latent)
    calls = []
    monkeypatch.setattr(SparseResBlockC2S3d, "CHUNK_ELEMENTS", 8 * 8 * 90)     # from ~90 parents of 8 channels on
    monkeypatch.setattr(SparseResBlockC2S3d, "CHILD_MAP_BYTES", 27 * 4 * 1000)  # conv2 by rows from 1000 children
    monkeypatch.setattr(SparseResBlockC2S3d, "CHILD_CHUNK", 250)
    chunked = SparseResBlockC2S3d.forward_chunked
    monkeypatch.setattr(SparseResBlockC2S3d, "forward_chunked",
                        lambda self, x, parent, k: calls.append(len(parent)) or chunked(self, x, parent, k))
    out2, subs2, tex_out2 = decode(shape, tex, latent, tex_latent)
    assert len(calls) == 4 and min(calls) < 1000 < max(calls)       # each decoder's last two levels, conv2 either way
    assert torch.equal(out2.coords, out.coords) and len(out.coords) == calls[1] > 4 * 250
    torch.testing.assert_close(out2.feats, out.feats, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(tex_out2.feats, tex_out.feats, rtol=1e-5, atol=1e-6)
    for a, b in zip(subs, subs2):
        torch.testing.assert_close(a.feats, b.feats, rtol=1e-5, atol=1e-6)
    assert [even_step(1000, 300), even_step(900, 300), even_step(5, 300), even_step(7, 0)] == [250, 300, 5, 1]


def test_the_texture_decoder_walks_the_shape_decoders_voxels_with_their_maps():
    shape, _ = tiny_sc_vae_decoders()
    coords = torch.tensor([[0, x, y, z] for x in range(2) for y in range(2) for z in range(2)], dtype=torch.int32)
    with torch.no_grad():
        _, subs = shape(SparseTensor(torch.randn(8, 4), coords), return_subs=True)
    level = subs[2]
    assert ("neighbour_map", 3, level.device) in level.cache          # built by the shape decoder's blocks
    mine = SparseTensor(torch.randn(len(level.coords), 5), level.coords.clone())
    shared = on_guide_voxels(mine, level)
    assert shared.cache is level.cache and shared.feats is mine.feats
    other = SparseTensor(mine.feats, torch.flip(level.coords, [0]))    # other order: its own maps
    assert on_guide_voxels(other, level) is other and on_guide_voxels(mine, None) is mine
