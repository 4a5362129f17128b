"""Vertex clustering refined where it breaks the surface's topology: a closed 2-manifold stays closed and manifold.

Grid clustering (``cluster``) merges whatever a cell holds: the two sides of a wall thinner than the cell, or a fold,
become one cluster, and the faces over it leave edges used by one face (holes) or by three or more (fins). Here
a cell's vertices form one cluster per piece of the dense mesh inside the cell (so the two sides of a thin wall
stay apart), and the clusters at the ends of every edge without two faces are split (their vertices go to the grid of half the cell) and the
faces are made again, round after round, until every edge has two faces; a vertex whose cell would fall below
``min_cell`` becomes its own cluster (the dense mesh itself, locally). The dense mesh's own edges are the floor: a
closed input's clustering therefore ends closed, with the coarse cells kept wherever they did no harm (the face
count rises only around thin walls and folds). Each round is a few sorts on the mesh's device, as in ``cluster``.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import connected_components

from ...core.callbacks import check
from .cluster import clustered_faces, representatives
from .manifold import edge_table, edge_use
from .sorting import unique_inverse

__all__ = ["MAX_ROUNDS", "pieces_in_cell_torch", "pieces_in_cell", "dense_edges", "refine_clusters", "refine_to_faces"]

# Rounds of splitting at most (each halves the cells at the bad edges; six take a cell of 8 voxels to a vertex each).
MAX_ROUNDS = 12


def pieces_in_cell_torch(key: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Per vertex the smallest vertex index of its piece: the vertices joined by dense edges within one cell
    (same ``key``), by min-label propagation with pointer jumping."""
    same = key[edges[:, 0]] == key[edges[:, 1]]
    a, b = edges[same, 0], edges[same, 1]
    comp = torch.arange(key.shape[0], device=key.device)
    while True:
        low = torch.minimum(comp[a], comp[b])
        new = comp.clone().scatter_reduce_(0, a, low, "amin").scatter_reduce_(0, b, low, "amin")
        new = new[new]
        if torch.equal(new, comp):
            return comp
        comp = new


def pieces_in_cell(key: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """``pieces_in_cell_torch``'s pieces (numbered differently: 0..K-1, one id per piece) by scipy's connected
    components on the CPU."""
    if key.device.type != "cpu":
        return pieces_in_cell_torch(key, edges)
    k, e = key.numpy(), edges.numpy()
    a, b = e[:, 0], e[:, 1]
    same = k[a] == k[b]                            # numpy's gathers: several times torch's on the CPU
    a, b = a[same], b[same]
    n = key.shape[0]
    if len(a) and not (a[1:] >= a[:-1]).all():
        order = np.argsort(a, kind="stable")
        a, b = a[order], b[order]
    # the graph as CSR straight from the edges in row order (no COO conversion, which sorts again)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(a, minlength=n), out=indptr[1:])
    graph = sp.csr_array((np.ones(len(a)), b, indptr), shape=(n, n))
    return torch.from_numpy(connected_components(graph, directed=False)[1].astype(np.int64))


def _labels(ijk, size, level, alone, edges):
    """(cluster per vertex, count, each cluster's cell side [C,1] float64, whether it is one vertex [C]) of the
    vertices in their cells (``ijk`` on the grid of side ``size`` at ``level``)."""
    dims = int(ijk.max()) + 1 if ijk.numel() else 1
    key = ((level * dims + ijk[:, 0]) * dims + ijk[:, 1]) * dims + ijk[:, 2]
    key = torch.where(alone, -1 - torch.arange(ijk.shape[0], device=ijk.device), key)
    # the two sides of a wall thinner than the cell share it but no edge inside it: separate clusters
    pieces = pieces_in_cell(key, edges)
    # scipy's labels are 0..K-1 already (what numbering them again by value would give)
    label = pieces if pieces.device.type == "cpu" else unique_inverse(pieces)[1]
    n = int(label.max()) + 1 if label.numel() else 0
    side = torch.zeros(n, 1, dtype=torch.float64, device=ijk.device).index_put_((label,), size[:, None])
    single = torch.zeros(n, dtype=torch.bool, device=ijk.device).index_put_((label,), alone)
    return label, n, side, single


def _cells(rel, size):
    """int64 [V,3]: the grid cell of each vertex (``rel`` from the grid's origin, float64) of side ``size`` [V]."""
    return torch.floor(rel / size[:, None]).long().clamp_(min=0)


def dense_edges(faces: torch.Tensor) -> torch.Tensor:
    """int64 [E,2]: each edge of the faces once (lower vertex first), in the order of its key (the pieces do not
    depend on the edges' order)."""
    return edge_table(faces).pairs()


class _Refined(NamedTuple):
    label: torch.Tensor
    n: int
    side: torch.Tensor
    single: torch.Tensor
    faces: torch.Tensor


def _refine(v, f, edges, cell, min_cell, origin, cancel, info) -> _Refined:
    """The refined clusters and their faces (``refine_clusters`` before the vertices are placed)."""
    level = torch.zeros(v.shape[0], dtype=torch.int64, device=v.device)
    alone = torch.zeros(v.shape[0], dtype=torch.bool, device=v.device)
    rel = v.double() - origin.double()
    size = cell / torch.pow(2.0, level.double())
    ijk = _cells(rel, size)
    rounds = 0
    while True:
        check(cancel)
        label, n, side, single = _labels(ijk, size, level, alone, edges)
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
        # only the split vertices change cell: their sides and cells computed again
        moved = torch.nonzero(split)[:, 0]
        size[moved] = cell / torch.pow(2.0, level[moved].double())
        ijk[moved] = _cells(rel[moved], size[moved])
        alone = alone | (split & (size < min_cell))
    info.update(rounds=rounds, split_vertices=int((level > 0).sum()))
    return _Refined(label, n, side, single, cf)


def _placed(v, f, r: _Refined, origin):
    """(vertices, faces) of refined clusters: each cluster's point placed, the unused dropped."""
    if r.faces.shape[0] == 0:
        return v[:0], f[:0]
    x = representatives(v, f, r.label, r.n, r.side, origin)
    # a cluster of one vertex keeps it where it is (the dense surface)
    first = torch.full((r.n,), v.shape[0], dtype=torch.int64, device=v.device).scatter_reduce_(
        0, r.label, torch.arange(v.shape[0], device=v.device), "amin")
    x = torch.where(r.single[:, None], v[first.clamp(max=v.shape[0] - 1)], x)
    used, remap = unique_inverse(r.faces.reshape(-1))
    return x[used], remap.reshape(-1, 3)


def refine_clusters(vertices: torch.Tensor, faces: torch.Tensor, cell: float, min_cell: float,
                    origin: torch.Tensor | None = None, cancel=None, info: dict | None = None):
    """(vertices [C,3] float32, faces [F,3] int64) of the mesh clustered on the grid of side ``cell`` from
    ``origin`` (default the vertices' minimum) and refined at every edge without exactly two faces (see the module
    docstring). ``info`` gets "rounds" and "split_vertices" (vertices moved to a finer cell)."""
    info = {} if info is None else info
    v, f = vertices.float(), faces.long()
    origin = v.amin(0) if origin is None else origin.to(v)
    got = _refine(v, f, dense_edges(f), cell, min_cell, origin, cancel, info)
    return _placed(v, f, got, origin)


def refine_to_faces(vertices: torch.Tensor, faces: torch.Tensor, cell: float, target: int, tolerance: float,
                    min_cell: float, tries: int = 4, cancel=None, info: dict | None = None,
                    edges: torch.Tensor | None = None):
    """``refine_clusters`` from the cell ``cell`` (where plain clustering landed on ``target``), the cell rescaled
    until the refined count is within ``tolerance`` of ``target`` (the splits add faces), at most ``tries`` times;
    the closest kept. ``info`` gets "tries", "cell" (the one kept) and that one's "rounds" and "split_vertices".
    ``edges``: ``dense_edges`` of the faces (any order) where the caller has them."""
    info = {} if info is None else info
    v, f = vertices.float(), faces.long()
    origin = v.amin(0)
    edges = dense_edges(f) if edges is None else edges     # the same for every try
    best = None
    for k in range(1, tries + 1):
        step: dict = {}
        got = _refine(v, f, edges, cell, min_cell, origin, cancel, step)
        n = int(got.faces.shape[0])
        if best is None or abs(n - target) < abs(int(best[0].faces.shape[0]) - target):
            best = got, cell, step
        info["tries"] = k
        if abs(n - target) <= tolerance * target:
            break
        # a surface's count goes as 1 / cell^2
        cell = cell * (n / target) ** 0.5 if n > 0 else cell / 2
    got, cell, step = best
    info.update(cell=cell, **step)
    # only the kept try's vertices are placed (the quadric fit is the costliest pass)
    return _placed(v, f, got, origin)
