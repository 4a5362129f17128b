"""Sparse tensor, submanifold conv, down/up-sampling and subdivision against plain definitions (spec §3.7-§3.10)."""
import pytest
import torch
import torch.nn.functional as F

from trellis.modules.sparse import (SparseConv3d, SparseTensor, downsample, neighbour_map, sparse_batch,
                                    submanifold_conv3d, subdivide, upsample)


def random_sparse(batch=2, res=12, density=0.3, channels=5, seed=0, shuffle=True):
    g = torch.Generator().manual_seed(seed)
    items = []
    for b in range(batch):
        occ = torch.rand(res, res, res, generator=g) < density
        xyz = occ.nonzero().int()
        if shuffle:  # row order inside an item must not matter
            xyz = xyz[torch.randperm(len(xyz), generator=g)]
        coords = torch.cat([torch.full((len(xyz), 1), b, dtype=torch.int32), xyz], 1)
        items.append(coords)
    coords = torch.cat(items)
    return SparseTensor(torch.randn(len(coords), channels, generator=g), coords)


def dense_conv_at_sites(x: SparseTensor, weight, bias):
    """Reference: zero-filled dense grid, conv3d with the permuted weight, read at active sites."""
    k = weight.shape[1]
    res = int(x.coords[:, 1:].max()) + 1
    grid = torch.zeros(x.batch_size, x.feats.shape[1], res, res, res, dtype=torch.float64)
    c = x.coords.long()
    grid[c[:, 0], :, c[:, 1], c[:, 2], c[:, 3]] = x.feats.double()
    out = F.conv3d(grid, weight.double().permute(0, 4, 1, 2, 3), bias.double(), padding=k // 2)
    return out[c[:, 0], :, c[:, 1], c[:, 2], c[:, 3]]


@pytest.mark.parametrize("kernel", [3, 5])
def test_submanifold_conv_equals_dense_conv3d(kernel):
    x = random_sparse(channels=6)
    w = torch.randn(7, kernel, kernel, kernel, 6)
    b = torch.randn(7)
    out = submanifold_conv3d(x, w, b, backend="torch")
    ref = dense_conv_at_sites(x, w, b)
    torch.testing.assert_close(out.double(), ref, atol=1e-4, rtol=1e-4)


def test_submanifold_conv_never_mixes_batch_items():
    one = random_sparse(batch=1, seed=3)
    two = sparse_batch([one[0], one[0]])
    w, b = torch.randn(4, 3, 3, 3, 5), torch.randn(4)
    a = submanifold_conv3d(one, w, b, backend="torch")
    both = submanifold_conv3d(two, w, b, backend="torch")
    torch.testing.assert_close(both[: len(a)], a)
    torch.testing.assert_close(both[len(a):], a)


def test_neighbour_map_handles_coordinates_at_zero_and_edges():
    coords = torch.tensor([[0, 0, 0, 0], [0, 1, 0, 0], [0, 1023, 1023, 1023], [1, 0, 0, 1]], dtype=torch.int32)
    x = SparseTensor(torch.zeros(4, 1), coords)
    nbr = neighbour_map(x, 3)
    centre = 13
    assert nbr[:, centre].tolist() == [0, 1, 2, 3]
    # (0,0,0)'s +x neighbour is row 1; offset (-1,-1,-1) falls outside the grid -> missing (= N).
    assert nbr[0, 22].item() == 1 and nbr[0, 0].item() == 4
    # batch item 1 at (0,0,1) does not see item 0's (0,0,0)
    assert nbr[3, 12].item() == 4


def test_kernel1_conv_reproduces_reference_quirk():
    """1^3 sparse conv reads the [C_out,1,1,1,C_in] weight in memory order as [C_in, C_out] (§3.9)."""
    x = random_sparse(channels=4)
    conv = SparseConv3d(4, 6, 1)
    w = conv.conv.weight.detach()
    out = conv(x).feats
    expected = x.feats @ w.reshape(4, 6) + conv.conv.bias.detach()
    torch.testing.assert_close(out, expected)
    proper = x.feats @ w.reshape(6, 4).T + conv.conv.bias.detach()
    assert not torch.allclose(out, proper, atol=1e-3)


def test_fp16_conv_matches_fp32_within_rounding():
    x = random_sparse(channels=8)
    w, b = torch.randn(8, 3, 3, 3, 8) * 0.1, torch.randn(8)
    ref = submanifold_conv3d(x, w, b, backend="torch")
    half = submanifold_conv3d(x.half(), w.half(), b.half(), backend="torch")
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), ref, atol=2e-2, rtol=1e-2)


def test_downsample_divisor_quirk_spec_example():
    coords = torch.tensor([[0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 1], [0, 5, 5, 5], [1, 2, 2, 2], [1, 3, 3, 3]],
                          dtype=torch.int32)
    feats = torch.tensor([1.0, 3, 5, 7, 2, 4])[:, None]
    down = downsample(SparseTensor(feats, coords))
    assert down.coords.tolist() == [[0, 0, 0, 0], [0, 2, 2, 2], [1, 1, 1, 1]]
    assert down.feats[:, 0].tolist() == [2.25, 3.5, 2.0]
    assert down.coords.dtype == torch.int32


def test_downsample_then_upsample_restores_coords_order_and_layout():
    x = random_sparse(batch=3, res=10, seed=5)
    down = downsample(x)
    keys = down.coords.long()
    # unique parents in lexicographic (batch, x, y, z) order
    lex = ((keys[:, 0] * 1024 + keys[:, 1]) * 1024 + keys[:, 2]) * 1024 + keys[:, 3]
    assert torch.all(lex[1:] > lex[:-1])
    processed = down.replace(down.feats * 2)        # features change, map survives
    up = upsample(processed)
    assert torch.equal(up.coords, x.coords)
    assert up.layout == x.layout
    # each child gets its parent's feature
    parent = x.coords.clone()
    parent[:, 1:] //= 2
    idx = {tuple(c): i for i, c in enumerate(down.coords.tolist())}
    expect = torch.stack([processed.feats[idx[tuple(c)]] for c in parent.tolist()])
    torch.testing.assert_close(up.feats, expect)


def test_subdivide_order_and_copy():
    coords = torch.tensor([[0, 1, 2, 3], [0, 0, 0, 0]], dtype=torch.int32)
    x = SparseTensor(torch.tensor([[1.0], [2.0]]), coords)
    y = subdivide(x)
    expected = [[0, 2 + i, 4 + j, 6 + k] for i in (0, 1) for j in (0, 1) for k in (0, 1)]
    expected += [[0, i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)]
    assert y.coords.tolist() == expected
    assert y.feats[:, 0].tolist() == [1.0] * 8 + [2.0] * 8


def test_sparse_tensor_layout_broadcast_and_moves():
    x = random_sparse(batch=3)
    counts = torch.bincount(x.coords[:, 0].long()).tolist()
    assert [s.stop - s.start for s in x.layout] == counts
    assert x.shape == torch.Size([3, 5])
    per_item = torch.arange(15.0).reshape(3, 5)
    y = x + per_item
    torch.testing.assert_close(y.feats, x.feats + per_item[x.coords[:, 0].long()])
    z = x.half()
    assert z.dtype == torch.float16 and z.coords.dtype == torch.int32 and z.cache is x.cache
    assert torch.equal((x * 2).feats, x.feats * 2)
    with pytest.raises(ValueError):
        SparseTensor(torch.zeros(3, 2), torch.zeros(3, 3, dtype=torch.int32))
    # The reference's keyword names work; a misspelled one is refused, not ignored.
    named = SparseTensor(feats=torch.zeros(3, 2), coords=torch.zeros(3, 4, dtype=torch.int32))
    assert named.shape == torch.Size([1, 2])
    with pytest.raises(TypeError, match="layuot"):
        SparseTensor(feats=torch.zeros(3, 2), coords=torch.zeros(3, 4, dtype=torch.int32), layuot=None)


def test_spconv_backend_agrees_with_torch_path():
    """spconv (when installed) and our gather-GEMM conv give the same numbers.

    Run on spconv's CPU build with one thread: that build is never used by default because it is
    wrong with several threads on a few thousand voxels; the CUDA build is checked on the GPU.
    """
    pytest.importorskip("spconv.pytorch")
    from trellis.modules.sparse.conv import submanifold_conv3d_spconv

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        x = random_sparse(batch=2, res=14, channels=16, seed=9)
        w, b = torch.randn(8, 3, 3, 3, 16), torch.randn(8)
        ours = submanifold_conv3d(x, w, b, backend="torch")
        theirs = submanifold_conv3d_spconv(x, w, b)
        torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=1e-4)
        # the default never picks spconv on the CPU
        assert torch.equal(submanifold_conv3d(x, w, b, backend="auto"), ours)
    finally:
        torch.set_num_threads(threads)


def test_sparse_group_norm_matches_per_item_group_norm(monkeypatch):
    from trellis.modules.sparse import SparseGroupNorm32

    x = random_sparse(batch=3, res=10, channels=64, seed=11)
    x = x.replace(x.feats * 3 + 1)
    gn = SparseGroupNorm32(32, 64)
    with torch.no_grad():
        gn.weight.normal_()
        gn.bias.normal_()
    monkeypatch.setattr(SparseGroupNorm32, "CHUNK_ROWS", 7)          # exercise the chunking
    out = gn(x).feats
    for s in x.layout:
        ref = F.group_norm(x.feats[s].t()[None].double(), 32, gn.weight.double(), gn.bias.double(), 1e-5)[0].t()
        torch.testing.assert_close(out[s].double(), ref, atol=1e-5, rtol=1e-5)
    half = gn(x.half()).feats
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), out, atol=1e-2, rtol=1e-2)


def test_subdivide_block_skip_before_subdivision_is_exact():
    from trellis.modules.sparse import SparseSubdivideBlock3d, subdivide

    torch.manual_seed(0)
    blk = SparseSubdivideBlock3d(64, 32).double()
    x = random_sparse(batch=2, res=6, channels=64, seed=12)
    x = x.replace(x.feats.double())
    sub = subdivide(x)
    # the block's definition: out_layers(subdivide(act(x))) + skip(subdivide(x))
    expected = blk.out_layers(blk.sub(blk.act_layers(x))).feats + blk.skip_connection(sub).feats
    torch.testing.assert_close(blk(x).feats, expected)
