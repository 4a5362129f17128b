"""Vertex clustering refined where it breaks the surface's topology: a closed 2-manifold stays closed and manifold.

Grid clustering (``cluster``) merges whatever a cell holds: the two sides of a wall thinner than the cell, or a fold,
become one cluster, and the faces over it leave edges used by one face (holes) or by three or more (fins). Here
the clusters at the ends of every such edge are split (their vertices go to the grid of half the cell) and the
faces are made again, round after round, until every edge has two faces; a vertex whose cell would fall below
``min_cell`` becomes its own cluster (the dense mesh itself, locally). The dense mesh's own edges are the floor: a
closed input's clustering therefore ends closed, with the coarse cells kept wherever they did no harm (the face
count rises only around thin walls and folds). Each round is a few sorts on the mesh's device, as in ``cluster``.
"""
from __future__ import annotations

import torch

from ...core.callbacks import check
from .cluster import clustered_faces, representatives
from .manifold import edge_use
from .sorting import unique_inverse

__all__ = ["MAX_ROUNDS", "refine_clusters"]

# Rounds of splitting at most (each halves the cells at the bad edges; six take a cell of 8 voxels to a vertex each).
MAX_ROUNDS = 12


def _labels(v, level, alone, cell, origin):
    """(cluster per vertex, count, each cluster's cell side [C,1] float64, whether it is one vertex [C])."""
    size = cell / torch.pow(2.0, level.double())
    ijk = torch.floor((v.double() - origin.double()) / size[:, None]).long().clamp_(min=0)
    dims = int(ijk.max()) + 1 if ijk.numel() else 1
    key = ((level * dims + ijk[:, 0]) * dims + ijk[:, 1]) * dims + ijk[:, 2]
    key = torch.where(alone, -1 - torch.arange(v.shape[0], device=v.device), key)
    _, label = unique_inverse(key)
    n = int(label.max()) + 1 if label.numel() else 0
    side = torch.zeros(n, 1, dtype=torch.float64, device=v.device).index_put_((label,), size[:, None])
    single = torch.zeros(n, dtype=torch.bool, device=v.device).index_put_((label,), alone)
    return label, n, side, single


def refine_clusters(vertices: torch.Tensor, faces: torch.Tensor, cell: float, min_cell: float,
                    origin: torch.Tensor | None = None, cancel=None, info: dict | None = None):
    """(vertices [C,3] float32, faces [F,3] int64) of the mesh clustered on the grid of side ``cell`` from
    ``origin`` (default the vertices' minimum) and refined at every edge without exactly two faces (see the module
    docstring). ``info`` gets "rounds" and "split_vertices" (vertices moved to a finer cell)."""
    info = {} if info is None else info
    v, f = vertices.float(), faces.long()
    origin = v.amin(0) if origin is None else origin.to(v)
    level = torch.zeros(v.shape[0], dtype=torch.int64, device=v.device)
    alone = torch.zeros(v.shape[0], dtype=torch.bool, device=v.device)
    rounds = 0
    while True:
        check(cancel)
        label, n, side, single = _labels(v, level, alone, cell, origin)
        cf = clustered_faces(label, f, n)
        if rounds >= MAX_ROUNDS or cf.shape[0] == 0:
            break
        bad_he = edge_use(cf) != 2
        if not bool(bad_he.any()):
            break
        ends = cf[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)[bad_he].reshape(-1)
        bad = torch.zeros(n, dtype=torch.bool, device=v.device)
        bad[ends] = True
        split = bad[label] & ~alone
        if not bool(split.any()):
            break                                   # only the dense mesh's own edges are left
        rounds += 1
        level = level + split.long()
        alone = alone | (split & (cell / torch.pow(2.0, level.double()) < min_cell))
    info.update(rounds=rounds, split_vertices=int((level > 0).sum()))
    if cf.shape[0] == 0:
        return v[:0], f[:0]
    x = representatives(v, f, label, n, side, origin)
    # a cluster of one vertex keeps it where it is (the dense surface)
    first = torch.full((n,), v.shape[0], dtype=torch.int64, device=v.device).scatter_reduce_(
        0, label, torch.arange(v.shape[0], device=v.device), "amin")
    x = torch.where(single[:, None], v[first.clamp(max=v.shape[0] - 1)], x)
    used, remap = unique_inverse(cf.reshape(-1))
    return x[used], remap.reshape(-1, 3)
