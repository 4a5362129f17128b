"""Vertex normals for the exported mesh: smooth across gentle bends, split at creases.

A vertex gets one normal per *smoothing group*: the corners (face, vertex) around it that are joined
through edges whose two faces bend by less than ``crease_angle``. A smooth vertex has one group; the
corner of a box has three, so it is written three times, each copy with its face's normal.

Choices:

* **Crease angle 60°** (``DEFAULT_CREASE_ANGLE``). The meshes we export are decimated iso-surfaces:
  neighbouring triangles of a curved or slightly noisy surface bend by tens of degrees, and splitting
  there would shade the decimation's noise as facets (a low angle such as 30° does); the edges of made
  objects that should look sharp are mostly right angles (90°), which a high angle such as 90° would
  round off. 60° keeps room on both sides. ``crease_angle`` is a parameter of the writers.
* **Angle-weighted face normals** (each face counts with its corner angle at the vertex). Area
  weighting lets one long thin sliver, common after decimation, pull the normal towards itself;
  the corner angle depends only on the local shape, not on how the surface was triangulated.
* **Adjacency on positions, not indices.** The UV unwrap already duplicates vertices along its seams;
  faces on both sides of a seam are still neighbours here, so a UV seam never shows as a shading
  seam, and every UV copy of a point that lies in one smoothing group gets the same normal.
* Faces of zero area have no direction: they join whatever they touch and add nothing to a normal.
  Edges of more than two faces (non-manifold) are treated as creases.
"""
from __future__ import annotations

import threading

import numpy as np

from ..core.callbacks import check
from ..core.concurrency import start_thread
from .rows import row_norm

__all__ = ["DEFAULT_CREASE_ANGLE", "face_normals", "corner_angles", "split_vertex_normals", "point_ids", "SharedSplit"]

DEFAULT_CREASE_ANGLE = 60.0   # degrees; see the module docstring


def face_normals(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit normals of the faces (right-hand rule on their winding) and a mask of faces with area."""
    p = vertices[faces]
    n = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    length = row_norm(n)
    scale = np.abs(p).max() if len(p) else 1.0
    has_area = length > max(float(scale), 1e-30) ** 2 * 1e-14   # relative to the mesh's size
    unit = np.zeros_like(n)
    unit[has_area] = n[has_area] / length[has_area, None]
    return unit, has_area


def corner_angles(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """[F, 3] interior angle (radians) of each face at each of its corners."""
    p = vertices[faces]
    out = np.empty(faces.shape, dtype=np.float64)
    for k in range(3):
        a = p[:, (k + 1) % 3] - p[:, k]
        b = p[:, (k + 2) % 3] - p[:, k]
        # atan2(|a x b|, a . b) stays accurate for angles near 0 and pi, unlike acos of the dot
        out[:, k] = np.arctan2(row_norm(np.cross(a, b)), np.einsum("ij,ij->i", a, b))
    return out


def split_vertex_normals(vertices, faces, crease_angle: float = DEFAULT_CREASE_ANGLE, cancel=None):
    """Smooth vertex normals, split where faces meet at more than ``crease_angle`` degrees.

    Returns ``(source, new_faces, normals)``: output vertex ``i`` is input vertex ``source[i]`` (so
    positions and UVs are ``vertices[source]``, ``uvs[source]``), ``new_faces`` index the output
    vertices in the input's face order and winding, and ``normals`` [V', 3] are unit vectors.
    ``source`` is sorted, so a mesh with no crease comes back with its vertices in their order. ``cancel()``
    returning True raises ``Cancelled`` (asked between the passes, each a second's work for a million faces on a CPU).
    """
    v = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    n_faces = len(f)
    if n_faces == 0:
        return np.zeros(0, np.int64), f.copy(), np.zeros((0, 3), np.float64)

    fn, has_area = face_normals(v, f)
    weight = corner_angles(v, f) * has_area[:, None]

    # Welded ids: vertices at the same position are one point (the UV seams' copies).
    check(cancel)
    point = point_ids(v)
    fp = point[f]                                            # [F, 3] point of each corner
    check(cancel)

    # Half-edges (corner k -> corner k+1 of each face), keyed by their unordered point pair.
    corner = np.arange(3 * n_faces, dtype=np.int64).reshape(n_faces, 3)
    ca = corner.reshape(-1)
    cb = np.roll(corner, -1, axis=1).reshape(-1)
    pa, pb = fp.reshape(-1), np.roll(fp, -1, axis=1).reshape(-1)
    face_of = np.repeat(np.arange(n_faces), 3)
    keep = pa != pb                                          # an edge of one point joins nothing
    ca, cb, pa, pb, face_of = ca[keep], cb[keep], pa[keep], pb[keep], face_of[keep]
    edge = np.minimum(pa, pb) * (int(point.max()) + 1) + np.maximum(pa, pb)
    order = np.argsort(edge, kind="stable")        # the faces' order leaves runs that a merge sort uses
    check(cancel)
    edge = edge[order]
    starts = np.flatnonzero(np.r_[True, edge[1:] != edge[:-1]])
    counts = np.diff(np.r_[starts, len(edge)])
    pairs = starts[counts == 2]                              # manifold edges: exactly two faces
    h1, h2 = order[pairs], order[pairs + 1]

    f1, f2 = face_of[h1], face_of[h2]
    cos_crease = np.cos(np.radians(float(crease_angle)))
    smooth = np.einsum("ij,ij->i", fn[f1], fn[f2]) >= cos_crease
    smooth |= ~has_area[f1] | ~has_area[f2]
    h1, h2 = h1[smooth], h2[smooth]

    # Join the two faces' corners at each end of a smooth edge, matched by point.
    same = pa[h1] == pa[h2]
    join_a = np.stack([ca[h1], np.where(same, ca[h2], cb[h2])], axis=1)
    join_b = np.stack([cb[h1], np.where(same, cb[h2], ca[h2])], axis=1)
    joins = np.concatenate([join_a, join_b])

    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    n_corners = 3 * n_faces
    graph = coo_matrix((np.ones(len(joins), np.int8), (joins[:, 0], joins[:, 1])),
                       shape=(n_corners, n_corners))
    _, group = connected_components(graph, directed=False)
    check(cancel)

    # Normal of each group: the angle-weighted sum of its faces' normals.
    n_groups = int(group.max()) + 1
    contrib = (fn[:, None, :] * weight[:, :, None]).reshape(-1, 3)
    summed = np.stack([np.bincount(group, contrib[:, j], minlength=n_groups) for j in range(3)], axis=1)
    length = row_norm(summed)
    flat = length <= 1e-300
    if flat.any():
        # Only faces without area in this group: take the point's normal over all its faces, else +z.
        by_point = np.stack([np.bincount(fp.reshape(-1), contrib[:, j], minlength=int(point.max()) + 1)
                             for j in range(3)], axis=1)
        group_point = np.zeros(n_groups, np.int64)
        group_point[group] = fp.reshape(-1)
        summed[flat] = by_point[group_point[flat]]
        length = row_norm(summed)
        still = length <= 1e-300
        summed[still] = (0.0, 0.0, 1.0)
        length[still] = 1.0
    group_normal = summed / length[:, None]

    # Output vertices: one per (input vertex, group) pair in use, ordered by vertex, then group. Most groups
    # hold one vertex: each group's pair with a vertex of its own, plus the few pairs of its corners at another
    # vertex (UV seam copies), are every pair once; only those are sorted, not every corner's pair.
    corner_vertex = f.reshape(-1)
    some_vertex = np.empty(n_groups, np.int64)
    some_vertex[group] = corner_vertex                       # one of its corners' vertices: which, does not matter
    other = np.flatnonzero(corner_vertex != some_vertex[group])
    other_key, other_pair = np.unique(corner_vertex[other] * n_groups + group[other], return_inverse=True)
    key = np.concatenate([some_vertex * n_groups + np.arange(n_groups), other_key])
    order = np.argsort(key)
    rank = np.empty(len(key), np.int64)
    rank[order] = np.arange(len(key))
    index = rank[group]
    index[other] = rank[n_groups + other_pair.reshape(-1)]
    key = key[order]
    return key // n_groups, index.reshape(n_faces, 3), group_normal[key % n_groups]


def point_ids(vertices: np.ndarray) -> np.ndarray:
    """[V] int64: for each vertex, the smallest index of a vertex at its position (rows compared with ``==``, as
    ``np.unique(axis=0)`` compares them: -0.0 is 0.0, a NaN is no other row).

    One sort of a 64-bit hash of each row, not a sort of whole rows: neighbours in that order with equal hashes
    and equal rows are one point. Only runs of one hash that hold different rows (a collision) are sorted whole.
    """
    v = np.ascontiguousarray(vertices, dtype=np.float64).reshape(-1, 3)
    n = len(v)
    bits = (v + 0.0).view(np.uint64)                  # + 0.0: -0.0 takes 0.0's bits, as == makes them equal
    h = bits[:, 0] * _MIX[0] ^ bits[:, 1] * _MIX[1] ^ bits[:, 2] * _MIX[2]
    order = np.argsort(h)
    h, s = h[order], v[order]
    same_h = h[1:] == h[:-1]
    same = same_h & (s[1:, 0] == s[:-1, 0]) & (s[1:, 1] == s[:-1, 1]) & (s[1:, 2] == s[:-1, 2])
    ids = np.empty(n, np.int64)
    if n:
        ids[0] = 0
        np.cumsum(~same, out=ids[1:])
    mixed = same_h & ~same
    if mixed.any():
        run = np.concatenate([[0], np.cumsum(~same_h)])      # runs of one hash, in sorted order
        whole = np.zeros(int(run[-1]) + 1, dtype=bool)
        whole[run[1:][mixed]] = True
        sel = whole[run]
        _, sub = np.unique(s[sel], axis=0, return_inverse=True)
        ids[sel] = n + sub.reshape(-1)
    # Each point named by its first vertex: names in the vertices' order keep the mesh's locality for later sorts.
    first = np.full(int(ids.max()) + 1 if n else 0, n, dtype=np.int64)
    np.minimum.at(first, ids, order)
    point = np.empty(n, np.int64)
    point[order] = first[ids]
    return point


_MIX = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9], dtype=np.uint64)  # odd: bijective


class SharedSplit:
    """``split_vertex_normals`` of one mesh at one crease angle, made once for every file written from it (each
    writer would make the same split); ``start()`` makes it in a thread meanwhile. A mesh placed for a file
    (scaled, moved) has the same split: ``for_faces`` gives it to writers of these very faces."""

    def __init__(self, vertices, faces, crease_angle: float = DEFAULT_CREASE_ANGLE):
        self.vertices, self.faces, self.crease_angle = vertices, faces, crease_angle
        self._lock = threading.Lock()
        self._value = None

    def __getstate__(self):               # pickled without its lock (a mesh sent to another process)
        return self.vertices, self.faces, self.crease_angle, self._value

    def __setstate__(self, state):
        self.vertices, self.faces, self.crease_angle, self._value = state
        self._lock = threading.Lock()

    def start(self) -> "SharedSplit":
        def run():
            try:
                self.value()
            except Exception:          # the first writer makes it again and raises there
                pass
        start_thread(run, "trellis-split-normals")
        return self

    def value(self) -> tuple:
        """(source, faces, normals) as ``split_vertex_normals`` returns them (waits for a split under way)."""
        with self._lock:
            if self._value is None:
                self._value = split_vertex_normals(self.vertices, self.faces, self.crease_angle)
            return self._value

    def for_faces(self, faces, crease_angle):
        """The split for a writer of ``faces`` at ``crease_angle``: this one's when both are its own, else None."""
        if faces is not self.faces or crease_angle is None or float(crease_angle) != float(self.crease_angle):
            return None
        return self.value()
