"""The PBR export's CPU sorts (``pbr.sorting``: packed key|index stable sorts, the argsort fallback) give what
numpy's ``np.unique`` and the PyTorch twins give, and the edge table counts what per-half-edge use counts."""
import numpy as np
import torch

from trellis.export.pbr import sorting
from trellis.export.pbr.manifold import edge_counts, edge_table, edge_use
from trellis.export.pbr.refine import dense_edges, pieces_in_cell, pieces_in_cell_torch


def _cases():
    rng = np.random.default_rng(3)
    runs = np.sort(rng.integers(0, 1 << 30, 4000)).reshape(8, -1)[::-1].reshape(-1)    # sorted runs, as meshes give
    return [np.zeros(0, np.int64), np.array([7]), rng.integers(-40, 40, 3000), rng.integers(0, 1 << 40, 20000),
            rng.integers(-(1 << 62), 1 << 62, 5000), runs, np.repeat(rng.integers(0, 9, 50), 30)]


def test_sorting_matches_numpy_unique_and_the_torch_twins():
    for k in _cases():
        t = torch.from_numpy(k.astype(np.int64))
        uniq, inverse, counts = np.unique(k, return_inverse=True, return_counts=True)
        u, inv = sorting.unique_inverse(t)
        assert np.array_equal(u.numpy(), uniq) and np.array_equal(inv.numpy(), inverse.reshape(-1))
        inv, c = sorting.unique_counts(t)
        assert np.array_equal(inv.numpy(), inverse.reshape(-1)) and np.array_equal(c.numpy(), counts)
        d, c = sorting.distinct_counts(t)
        assert np.array_equal(d.numpy(), uniq) and np.array_equal(c.numpy(), counts)
        assert sorting.count_distinct(t) == len(uniq)
        if len(k):
            assert torch.equal(sorting.first_of_each(t), sorting.first_of_each_torch(t))
            assert torch.equal(sorting.distinct_counts_torch(t)[1], c)
            sk, order = sorting.stable_order(k.astype(np.int64))
            assert np.array_equal(order, np.argsort(k, kind="stable")) and np.array_equal(sk, np.sort(k))


def test_edge_table_counts_what_half_edge_use_counts():
    rng = np.random.default_rng(5)
    f = torch.from_numpy(rng.integers(0, 60, (400, 3)))
    use = edge_use(f)
    table = edge_table(f)
    assert int((use == 1).sum()) == edge_counts(f)["boundary_edges"]
    assert int(round(float((1.0 / use[use >= 3].double()).sum()))) == edge_counts(f)["nonmanifold_edges"]
    assert int(table.use.sum()) == 3 * len(f)
    pairs = dense_edges(f)
    he = torch.sort(f[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), dim=1)[0]
    assert torch.equal(pairs, torch.unique(he, dim=0))
    assert edge_counts(f[:0]) == {"boundary_edges": 0, "nonmanifold_edges": 0}


def test_pieces_in_cell_numbers_pieces_as_the_torch_twin_after_renumbering():
    rng = np.random.default_rng(7)
    key = torch.from_numpy(rng.integers(0, 5, 300))
    edges = torch.from_numpy(rng.integers(0, 300, (500, 2)))          # any order, duplicates included
    a = pieces_in_cell(key, edges)
    b = sorting.unique_inverse(pieces_in_cell_torch(key, edges))[1]
    assert torch.equal(a, b)
