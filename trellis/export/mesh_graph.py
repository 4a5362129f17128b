"""Mesh connectivity: edges, faces sharing an edge (the dual graph), connected components."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from .rows import row_all, row_max, row_min

__all__ = ["edges", "dual_arcs", "components", "face_adjacency_pairs"]


def edges(faces, n_vertices):
    """Undirected edges of the half-edges (f[0]->f[1], f[1]->f[2], f[2]->f[0]).

    Returns (edge id per half-edge [3F], edge endpoints [E,2], use count per edge [E]).
    """
    he = faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
    lo, hi = row_min(he), row_max(he)
    key = lo * np.int64(n_vertices) + hi
    uniq, inverse, count = np.unique(key, return_inverse=True, return_counts=True)
    ends = np.stack([uniq // n_vertices, uniq % n_vertices], -1)
    return inverse.reshape(-1), ends, count


def dual_arcs(edge_of_he, n_faces):
    """Pairs of distinct faces sharing an edge (every pair of faces around non-manifold edges).

    Returns (face_a, face_b, edge) arrays, one row per pair.
    """
    face_of_he = np.repeat(np.arange(n_faces, dtype=np.int64), 3)
    order = np.argsort(edge_of_he, kind="stable")
    se, sf = edge_of_he[order], face_of_he[order]
    fa, fb, fe = [], [], []
    j = 1
    while j < len(se):
        same = se[:-j] == se[j:]
        if not same.any():
            break
        fa.append(sf[:-j][same])
        fb.append(sf[j:][same])
        fe.append(se[:-j][same])
        j += 1
    if not fa:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    fa, fb, fe = np.concatenate(fa), np.concatenate(fb), np.concatenate(fe)
    keep = fa != fb
    return fa[keep], fb[keep], fe[keep]


def components(n, a, b):
    """(count, label per node) of the undirected graph of n nodes with edges a[i] - b[i]. Labels follow the
    nodes' order whatever the edges' order (scipy numbers a component by its lowest node); when ``a`` is
    already ascending the CSR graph is built directly, skipping the COO conversion. The graph is handed over as
    scipy's search keeps it (float64 weights, the weak components of the edges as given: the undirected graph's
    components, without its conversion and symmetric copy; the UV segmentation calls this for every chart it
    splits)."""
    if n == 0:
        return 0, np.zeros(0, dtype=np.int64)
    a, b = np.asarray(a), np.asarray(b)
    if len(a) and bool((a[1:] >= a[:-1]).all()) and n < 2 ** 31:
        indptr = np.zeros(n + 1, np.int64)
        np.cumsum(np.bincount(a, minlength=n), out=indptr[1:])
        g = sp.csr_array((np.ones(len(b)), b.astype(np.int32), indptr.astype(np.int32)), shape=(n, n))
    else:
        g = sp.csr_array((np.ones(len(a)), (a, b)), shape=(n, n))
    k, labels = connected_components(g, directed=True, connection="weak")
    return k, labels.astype(np.int64)


def face_adjacency_pairs(faces: np.ndarray) -> np.ndarray:
    """[E,2] pairs of faces sharing an edge (consecutive faces around non-manifold edges)."""
    nf = len(faces)
    sides = np.stack([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]], 1).reshape(-1, 2)
    sides.sort(1)
    owner = np.repeat(np.arange(nf), 3)
    order = np.lexsort((sides[:, 1], sides[:, 0]))
    e, o = sides[order], owner[order]
    same = row_all(e[1:] == e[:-1])
    return np.stack([o[:-1][same], o[1:][same]], 1)
