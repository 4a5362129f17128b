"""The face graph the chart segmentation and the flattening work on (``ChartMesh``), and helpers on chart labels."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..mesh_graph import components, edges, face_adjacency_pairs
from ..rows import row_norm, row_sum

__all__ = ["SMOOTH_RINGS", "KEY_TABLE_LIMIT", "ChartMesh", "mesh_edges", "dense", "unique_keys", "sorted_pairs",
           "label_components", "members"]

# Rings of neighbours a face's normal is averaged over: a decimated iso-surface has spike faces whose own
# normal differs from all around them, which would otherwise end as single-triangle charts.
SMOOTH_RINGS = 4
# (chart, id) keys are told apart in a table of flags up to this many slots (``unique_keys``: and 64 per key;
# ``segment.distinct_per_chart``), by a sort beyond: the table's memory stays small while the layout's keys fit it
# (docs/benchmarks/export.md#charts).
KEY_TABLE_LIMIT = 1 << 25


class ChartMesh:
    """Per-face arrays the segmentation and the flattening need: areas, normals (own and smoothed over
    ``SMOOTH_RINGS`` rings), centroids, the pairs of faces sharing an edge, and edge tables on first use."""

    def __init__(self, v, f):
        self.v, self.f = v, f
        cr = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
        self.area = 0.5 * row_norm(cr)
        self.normal = cr / np.maximum(2 * self.area[:, None], 1e-30)
        self.centroid = row_sum(v[f]) / 3
        self.pairs = face_adjacency_pairs(f)
        self.edge_len = None              # shared edge per pair, on first use
        self.face_edges, self.n_edges = None, 0     # edge id per face side, on first use (mesh_edges)
        self.edge_ends = self.edge_count = None     # per edge: its two vertices, faces using it (ditto)
        self.stamp_v = self.stamp_e = None    # scratch of segment's Euler characteristic
        self.pairs_by_face = None         # pairs ordered by their first face, on first use
        nf = len(f)
        p = self.pairs
        self.adj = sp.csr_matrix((np.ones(2 * len(p)), (np.r_[p[:, 0], p[:, 1]], np.r_[p[:, 1], p[:, 0]])),
                                 shape=(nf, nf))
        ns = cr.copy()                    # area-weighted: slivers count little
        for _ in range(SMOOTH_RINGS):
            ns = ns + self.adj @ ns
        self.smooth = ns / np.maximum(row_norm(ns)[:, None], 1e-30)


def mesh_edges(m: ChartMesh) -> None:
    """Fill the mesh's edge tables on first use: ``face_edges`` (edge id per face side), ``n_edges``,
    ``edge_ends`` [E,2], ``edge_count`` [E] (faces per edge) and the stamp arrays of the segmentation's Euler
    characteristic."""
    if m.face_edges is None:
        edge_of_he, m.edge_ends, m.edge_count = edges(m.f, len(m.v))
        m.face_edges = edge_of_he.reshape(-1, 3)
        m.n_edges = int(m.face_edges.max(initial=-1)) + 1
        m.stamp_v = np.zeros(len(m.v), np.int64)
        m.stamp_e = np.zeros(max(m.n_edges, 1), np.int64)


def dense(label: np.ndarray) -> np.ndarray:
    """Labels renumbered 0..K-1 in their order (``np.unique(label, return_inverse=True)[1]`` without
    the sort)."""
    label = np.asarray(label, np.int64)
    if len(label) == 0:
        return label.copy()
    return (np.cumsum(np.bincount(label) > 0) - 1)[label]


def unique_keys(keys: np.ndarray, size: int, return_index: bool = False):
    """``np.unique(keys, return_inverse=True)`` (with ``return_index``: ``return_index=True`` too, the values in
    numpy's order) of non-negative integer keys below ``size``, the same arrays: through a table of ``size`` flags
    where it is small (``KEY_TABLE_LIMIT``), without numpy's sort or hash."""
    flat = np.asarray(keys, np.int64).reshape(-1)
    if size > min(KEY_TABLE_LIMIT, 64 * max(len(flat), 1)):
        return np.unique(flat, return_index=return_index, return_inverse=True)
    seen = np.zeros(size, bool)
    seen[flat] = True
    uniq = np.flatnonzero(seen)
    inverse = (np.cumsum(seen, dtype=np.intp) - 1)[flat]
    if not return_index:
        return uniq, inverse
    first = np.full(len(uniq), len(flat), np.intp)
    np.minimum.at(first, inverse, np.arange(len(flat), dtype=np.intp))
    return uniq, first, inverse


def sorted_pairs(m: ChartMesh) -> np.ndarray:
    """``m.pairs`` ordered by their first face (``components`` then builds its graph directly)."""
    if m.pairs_by_face is None:
        m.pairs_by_face = m.pairs[np.argsort(m.pairs[:, 0], kind="stable")]
    return m.pairs_by_face


def label_components(m: ChartMesh, label: np.ndarray) -> np.ndarray:
    """Labels split into edge-connected parts: one label per connected part of each chart."""
    p = sorted_pairs(m)
    same = label[p[:, 0]] == label[p[:, 1]]
    return components(len(label), p[same, 0], p[same, 1])[1]


def members(label: np.ndarray) -> dict:
    """{chart: its faces, ascending} for every chart that has faces."""
    order = np.argsort(label, kind="stable")
    bounds = np.searchsorted(label[order], np.arange(int(label.max()) + 2))
    return {i: order[bounds[i]:bounds[i + 1]] for i in range(int(label.max()) + 1)
            if bounds[i + 1] > bounds[i]}
