"""A submanifold conv chunk by chunk of output rows (conv.submanifold_conv3d_rows): the neighbour rows of a chunk
without the whole map (conv.neighbour_map_rows, the dense-grid and the search paths alike), and the conv's rows."""
import torch

from trellis.modules.sparse import SparseTensor
from trellis.modules.sparse.conv import (neighbour_map, neighbour_map_rows, submanifold_conv3d,
                                         submanifold_conv3d_rows)


def sites(n, res, far=0, seed=0):
    """n sites in a res^3 box, the second half (batch item 1) moved by `far` along each axis."""
    g = torch.Generator().manual_seed(seed)
    cells = torch.randperm(res ** 3, generator=g)[:n].sort().values
    xyz = torch.stack([cells // res ** 2, cells // res % res, cells % res], 1)
    batch = (torch.arange(n) >= n // 2).long()[:, None]          # two items: neighbours never cross them
    coords = torch.cat([batch, xyz + batch * far], 1).int()
    return SparseTensor(torch.randn(n, 6, generator=g), coords)


def test_chunks_of_the_neighbour_map_are_the_whole_maps_rows():
    # a compact box (the dense-grid path) and items 2 000 cells apart (a box too large for it: the binary search)
    for x in (sites(900, 14), sites(900, 14, far=2000)):
        whole = neighbour_map(SparseTensor(x.feats, x.coords), 3)
        fresh = SparseTensor(x.feats, x.coords)
        got = torch.cat([neighbour_map_rows(fresh, 3, a, min(a + 250, 900)) for a in range(0, 900, 250)])
        assert torch.equal(got, whole) and ("neighbour_map", 3, fresh.device) not in fresh.cache
        assert (whole < 900).sum() > 900                              # more than the centre: real neighbours
    cached = SparseTensor(x.feats, x.coords)
    full = neighbour_map(cached, 3)
    assert neighbour_map_rows(cached, 3, 10, 20).data_ptr() == full[10:20].data_ptr()     # the cached map's rows


def test_the_conv_chunk_by_chunk_gives_the_whole_convs_rows():
    """Read in place (the twin's gather-GEMM), or through a tensor of the rows a chunk reads, as the fast kernel
    needs (here run by the twin on that tensor): its window where the rows are ordered in space, the rows gathered
    where they are not."""
    x = sites(1200, 16, seed=1)
    weight, bias = torch.randn(5, 3, 3, 3, 6), torch.randn(5)
    order = torch.randperm(1200, generator=torch.Generator().manual_seed(2))
    shuffled = SparseTensor(x.feats[order], x.coords[order])
    for y in (x, shuffled):
        whole = submanifold_conv3d(SparseTensor(y.feats, y.coords), weight, bias)
        for local in (False, True):
            fresh = SparseTensor(y.feats, y.coords)
            got = torch.cat([submanifold_conv3d_rows(fresh, weight, bias, a, a + 400, local=local)
                             for a in range(0, 1200, 400)])
            assert torch.equal(got, whole), local
    one = weight[:, 1:2, 1:2, 1:2]                                            # kernel 1: its quirk, row by row
    torch.testing.assert_close(submanifold_conv3d_rows(fresh, one, bias, 5, 9),
                               submanifold_conv3d(fresh, one, bias)[5:9])
