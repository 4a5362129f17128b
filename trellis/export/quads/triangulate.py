"""A quad mesh as triangles for formats without quads (glTF, STL, 3MF), the quads recoverable.

Quads come first, each as two consecutive triangles split along its shorter diagonal; the lone triangles follow.
So triangles ``2 i`` and ``2 i + 1`` (``i < quad_count``) are quad ``i`` again: ``GLTF_EXTRAS`` names that layout.
"""
from __future__ import annotations

import numpy as np

# The glTF mesh's ``extras`` key that says how many leading triangle pairs are quads.
GLTF_EXTRAS_KEY = "trellis_quads"


def triangulate_quads(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, int]:
    """(triangles (T, 3), quad_count): pairs for the quads first, along each quad's shorter diagonal."""
    vertices = np.asarray(vertices, np.float64)
    faces = np.asarray(faces, np.int64)
    quads = faces[faces[:, 3] >= 0]
    lone = faces[faces[:, 3] < 0][:, :3]
    a, b, c, d = (quads[:, i] for i in range(4))
    ac = np.linalg.norm(vertices[a] - vertices[c], axis=1)
    bd = np.linalg.norm(vertices[b] - vertices[d], axis=1)
    use_ac = (ac <= bd)[:, None]
    first = np.where(use_ac, np.stack([a, b, c], 1), np.stack([a, b, d], 1))
    second = np.where(use_ac, np.stack([a, c, d], 1), np.stack([b, c, d], 1))
    pairs = np.stack([first, second], axis=1).reshape(-1, 3)
    return np.concatenate([pairs, lone], axis=0), len(quads)


def quads_from_pairs(triangles: np.ndarray, quad_count: int) -> np.ndarray:
    """The inverse: each leading pair of triangles back into one quad (corner order kept around the quad)."""
    tris = np.asarray(triangles, np.int64)
    out = []
    for i in range(quad_count):
        t0, t1 = tris[2 * i].tolist(), tris[2 * i + 1].tolist()
        lone = [v for v in t1 if v not in t0][0]
        # Insert t1's extra corner between the two corners of t0 that t1 shares, in t0's winding.
        for k in range(3):
            u, w = t0[k], t0[(k + 1) % 3]
            if u in t1 and w in t1:
                out.append(t0[:k + 1] + [lone] + t0[k + 1:])
                break
    rest = tris[2 * quad_count:]
    quads = np.asarray(out, np.int64).reshape(-1, 4)
    rest4 = np.concatenate([rest, np.full((len(rest), 1), -1)], axis=1)
    return np.concatenate([quads, rest4], axis=0)


def corner_keys(*arrays) -> np.ndarray:
    """One id per vertex, equal where every array's row is equal (e.g. position and UV): copies of a corner that
    differ only in what a file may vary per face (its normal) share an id."""
    rows = np.concatenate([np.round(np.asarray(a, np.float64).reshape(len(a), -1), 6) for a in arrays], axis=1)
    _, ids = np.unique(rows, axis=0, return_inverse=True)
    return ids.reshape(-1)


def merge_pairs(triangles: np.ndarray, quad_count: int, keys=None) -> tuple[np.ndarray, np.ndarray]:
    """(face sizes, flat corner indices) with each leading pair that shares an edge written as one quad: its first
    triangle's corners and the second's other corner.

    ``keys`` (``corner_keys``; None: the indices themselves) say which corners are the same: a pair whose diagonal
    was cut (a UV seam gave its triangles their own copies of the diagonal's corners) stays two triangles, so the
    file stays exact and the quad share it reports is what it holds.
    """
    tris = np.asarray(triangles, np.int64).reshape(-1, 3)
    ids = tris if keys is None else np.asarray(keys, np.int64)[tris]
    pairs = min(int(quad_count), len(tris) // 2)
    sizes, flat = [], []
    for i in range(pairs):
        t0, t1 = tris[2 * i].tolist(), tris[2 * i + 1].tolist()
        k0, k1 = ids[2 * i].tolist(), ids[2 * i + 1].tolist()
        extra = [j for j in range(3) if k1[j] not in k0]
        quad = None
        if len(extra) == 1 and len(set(k0)) == 3:
            for k in range(3):
                u, w = k0[k], k0[(k + 1) % 3]
                # t1 holds the shared edge the other way round when both wind alike
                if u in k1 and w in k1 and k1[(k1.index(w) + 1) % 3] == u:
                    quad = t0[:k + 1] + [t1[extra[0]]] + t0[k + 1:]
                    break
        if quad is None:
            sizes += [3, 3]
            flat += t0 + t1
        else:
            sizes.append(4)
            flat += quad
    rest = tris[2 * pairs:]
    sizes += [3] * len(rest)
    flat += rest.ravel().tolist()
    return np.asarray(sizes, np.int64), np.asarray(flat, np.int64)
