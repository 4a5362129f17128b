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

from ..mesh_graph import components

__all__ = ["edge_pairs", "unify_orientation", "orientation_agrees"]


def edge_pairs(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(face a, face b, disagree) for every edge used by exactly two distinct faces; ``disagree`` is True where both
    run the edge in the same direction (one of them must flip)."""
    f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    he = f[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
    lo, hi = np.minimum(he[:, 0], he[:, 1]), np.maximum(he[:, 0], he[:, 1])
    n = int(f.max()) + 1 if len(f) else 1
    key = lo * np.int64(n) + hi
    order = np.argsort(key, kind="stable")
    sk = key[order]
    same = sk[1:] == sk[:-1]
    # exactly two half-edges on the key: equal to the next, and neither the one before nor the one after is
    before = np.concatenate([[False], same[:-1]])
    after = np.concatenate([same[1:], [False]])
    i = np.nonzero(same & ~before & ~after)[0]
    a, b = order[i], order[i + 1]
    forward = he[:, 0] < he[:, 1]
    fa, fb = a // 3, b // 3
    keep = fa != fb
    return fa[keep], fb[keep], (forward[a] == forward[b])[keep]


def orientation_agrees(faces) -> float:
    """Share of the two-face edges whose faces run them in opposite directions (1.0: consistently wound)."""
    _, _, disagree = edge_pairs(faces)
    return 1.0 - float(disagree.mean()) if len(disagree) else 1.0


def _tree_parity(n_faces: int, fa, fb, disagree) -> np.ndarray:
    """Per face, whether it flips: the xor of ``disagree`` along its path to its component's root."""
    _, label = components(n_faces, fa, fb)
    _, first = np.unique(label, return_index=True)
    root = n_faces                                            # a virtual node joined to one face per component
    a = np.concatenate([fa, np.full(len(first), root)])
    b = np.concatenate([fb, first])
    flip = np.concatenate([disagree, np.zeros(len(first), dtype=bool)])
    g = sp.csr_array((np.ones(len(a)), (a, b)), shape=(n_faces + 1, n_faces + 1))
    _, pred = breadth_first_order(g, root, directed=False, return_predecessors=True)
    # the disagreement of each tree edge (node, pred), looked up by its face-pair key
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    key = lo * np.int64(n_faces + 1) + hi
    order = np.argsort(key, kind="stable")
    ptr = np.where(pred < 0, root, pred).astype(np.int64)
    node = np.arange(n_faces + 1)
    q = np.minimum(node, ptr) * np.int64(n_faces + 1) + np.maximum(node, ptr)
    pos = np.minimum(np.searchsorted(key[order], q), len(key) - 1)
    acc = np.where(ptr == node, False, flip[order][pos])
    while (ptr != root).any():                                # pointer jumping: each pass doubles the path
        acc = acc ^ acc[ptr]
        ptr = ptr[ptr]
    return acc[:n_faces]


def unify_orientation(vertices, faces, outward: bool = True) -> np.ndarray:
    """int64 [F,3]: ``faces`` with some flipped (two corners swapped) so that neighbours agree; with ``outward``
    each connected component's signed volume about its centre is made positive (its faces look out)."""
    v = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    f = np.array(faces, dtype=np.int64).reshape(-1, 3)
    if len(f) == 0:
        return f
    fa, fb, disagree = edge_pairs(f)
    flip = _tree_parity(len(f), fa, fb, disagree) if len(fa) else np.zeros(len(f), dtype=bool)
    if outward:
        count, label = components(len(f), fa, fb)
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
