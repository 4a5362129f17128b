"""One winding for every face of a connected surface, facing out (the flexible dual grid's quads all face the
same way along their axis whichever side the object is on, TRELLIS2_FACTS.md §7.3, so about half of a decoded
mesh's faces are wound against their neighbours; normals, tangents and hole filling need them to agree).

Faces across each edge of exactly two faces should run the edge in opposite directions. A spanning forest of that
face graph (breadth first from one face per component) fixes which faces flip: a face's parity is the xor of the
disagreements along its tree path to the root, found by pointer jumping (log depth numpy passes, no Python loop
over faces). Each component then faces out: its signed volume about its own centre is made positive. A surface
that cannot be oriented (a Moebius strip, non-manifold fans) keeps the tree's choice.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import breadth_first_order

from ..key_order import sorted_and_order
from ..mesh_graph import components

__all__ = ["edge_pairs", "unify_orientation", "orientation_agrees"]


def _pair_keys(f: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(int64 [3F] undirected key min * n + max, bool [3F] whether the half-edge runs from its lower vertex) per
    half-edge f[0]->f[1], f[1]->f[2], f[2]->f[0], face by face."""
    key = np.empty((len(f), 3), dtype=np.int64)
    forward = np.empty((len(f), 3), dtype=bool)
    for j, (s, t) in enumerate(((0, 1), (1, 2), (2, 0))):
        np.minimum(f[:, s], f[:, t], out=key[:, j])
        key[:, j] *= np.int64(n)
        key[:, j] += np.maximum(f[:, s], f[:, t])
        np.less(f[:, s], f[:, t], out=forward[:, j])
    return key.reshape(-1), forward.reshape(-1)


def edge_pairs(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(face a, face b, disagree) for every edge used by exactly two distinct faces, in the order of the edges'
    keys, face a < face b; ``disagree`` is True where both run the edge in the same direction (one of them must
    flip)."""
    f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    n = int(f.max()) + 1 if len(f) else 1
    key, forward = _pair_keys(f, n)
    sk, order = sorted_and_order(key)
    same = sk[1:] == sk[:-1]
    # exactly two half-edges on the key: equal to the next, and neither the one before nor the one after is
    before = np.concatenate([[False], same[:-1]])
    after = np.concatenate([same[1:], [False]])
    i = np.nonzero(same & ~before & ~after)[0]
    a, b = order[i], order[i + 1]
    fa, fb = a // 3, b // 3
    keep = fa != fb
    return fa[keep], fb[keep], (forward[a] == forward[b])[keep]


def orientation_agrees(faces) -> float:
    """Share of the two-face edges whose faces run them in opposite directions (1.0: consistently wound)."""
    _, _, disagree = edge_pairs(faces)
    return 1.0 - float(disagree.mean()) if len(disagree) else 1.0


def _first_nodes(label: np.ndarray, count: int) -> np.ndarray:
    """The lowest node of each component, by label (``np.unique(label, return_index=True)[1]``): scipy numbers the
    components in the order of their lowest nodes, where each label's first node is where the running maximum
    rises."""
    start = np.ones(len(label), dtype=bool)
    np.greater(label[1:], np.maximum.accumulate(label)[:-1], out=start[1:])
    first = np.flatnonzero(start)
    if len(first) == count and np.array_equal(label[first], np.arange(count)):
        return first
    return np.unique(label, return_index=True)[1]


def _tree_parity(n_faces: int, fa, fb, disagree) -> tuple[np.ndarray, int, np.ndarray]:
    """(per face whether it flips: the xor of ``disagree`` along its path to its component's root, the component
    count, the component of each face) of ``edge_pairs``' pairs (fa < fb)."""
    big = np.int64(n_faces + 1)
    # one sort of the pairs' keys gives the face graph's CSR rows and the tree edges' lookup
    sk, order = sorted_and_order(fa * big + fb)
    distinct = np.ones(len(sk), dtype=bool)
    np.not_equal(sk[1:], sk[:-1], out=distinct[1:])
    uk = sk[distinct]
    ua, ub = uk // big, uk % big
    count, label = components(n_faces, ua, ub)
    first = _first_nodes(label, count)
    root = n_faces                                            # a virtual node joined to one face per component
    # the CSR scipy makes of the pairs and the root's (first) entries: rows, each with its columns ascending, once
    indptr = np.zeros(n_faces + 2, dtype=np.int64)
    np.cumsum(np.bincount(ua, minlength=n_faces), out=indptr[1:n_faces + 1])
    indptr[-1] = indptr[-2] + len(first)
    index = np.int32 if n_faces + 1 < 2 ** 31 else np.int64
    g = sp.csr_array((np.ones(len(ub) + len(first)), np.concatenate([ub, first]).astype(index),
                      indptr.astype(index)), shape=(n_faces + 1, n_faces + 1))
    _, pred = breadth_first_order(g, root, directed=False, return_predecessors=True)
    # the disagreement of each tree edge (node, pred): the first pair with its key (a root's edge agrees)
    ptr = np.where(pred < 0, root, pred).astype(np.int64)
    node = np.arange(n_faces + 1)
    q = np.minimum(node, ptr) * big + np.maximum(node, ptr)
    pos = np.minimum(np.searchsorted(sk, q), len(sk) - 1)
    acc = np.where((ptr == node) | (ptr == root), False, disagree[order[pos]])
    while (ptr != root).any():                                # pointer jumping: each pass doubles the path
        acc = acc ^ acc[ptr]
        ptr = ptr[ptr]
    return acc[:n_faces], count, label


def unify_orientation(vertices, faces, outward: bool = True) -> np.ndarray:
    """int64 [F,3]: ``faces`` with some flipped (two corners swapped) so that neighbours agree; with ``outward``
    each connected component's signed volume about its centre is made positive (its faces look out)."""
    v = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    f = np.array(faces, dtype=np.int64).reshape(-1, 3)
    if len(f) == 0:
        return f
    fa, fb, disagree = edge_pairs(f)
    if len(fa):
        flip, count, label = _tree_parity(len(f), fa, fb, disagree)
    else:
        flip = np.zeros(len(f), dtype=bool)
        count, label = components(len(f), fa, fb)
    if outward:
        p = v[f]
        centre = np.stack([np.bincount(label, p[:, :, k].mean(1), count) for k in range(3)], 1)
        centre /= np.maximum(np.bincount(label, minlength=count), 1)[:, None]
        rel = p - centre[label][:, None, :]
        vol = np.einsum("ij,ij->i", rel[:, 0], np.cross(rel[:, 1], rel[:, 2]))
        vol = np.where(flip, -vol, vol)
        inward = np.bincount(label, vol, count) < 0
        flip ^= inward[label]
    f[flip] = f[flip][:, [0, 2, 1]]
    return f
