"""The fallback UV layout ("charts" in ``unwrap_uv``): charts projected onto the axis planes, shelf-packed.

Every face is assigned to the signed axis (one of 6) of the largest component of its normal, averaged over a
few rings of neighbours so that surface noise does not shatter the charts; edge-connected faces of one class
form a chart, projected orthographically onto that axis plane (area distortion at most 1/0.3 for the faces it
keeps, no fold-over except for surfaces that wind around an axis). Charts are shelf-packed into the square with
a margin of ``padding`` texels (``pack_shelf``). The packed layout is rasterised to find faces lying under
others; such a chart is rebuilt from the faces' own normals, then, if still needed, split into one chart per
face. It uses fewer texels than the other layouts but takes a fraction of a second.
"""
from __future__ import annotations

import numpy as np

from ...core.callbacks import check
from ..arrays import to_numpy
from ..mesh_graph import components, face_adjacency_pairs
from ..options import DEFAULT_TEXTURE_SIZE
from .overlap import under_covered_faces
from .pack_shelf import pack_chart_boxes
from .winding import unmirror_charts

__all__ = ["SMOOTH_ITERATIONS", "chart_layout"]

# Rings of neighbours over which face normals are averaged before choosing a chart's axis: more texels in use
# on noisy surfaces (docs/benchmarks/export.md#uv-unwrap).
SMOOTH_ITERATIONS = 8


def _per_face_planar(v, f):
    """Each triangle in its own plane: corner 2-D coordinates [F,3,2] (isometric, world units)."""
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    e0 = b - a
    n = np.cross(e0, c - a)
    e0 /= np.maximum(np.linalg.norm(e0, axis=1, keepdims=True), 1e-20)
    e1 = np.cross(n, e0)
    e1 /= np.maximum(np.linalg.norm(e1, axis=1, keepdims=True), 1e-20)
    rel = np.stack([np.zeros_like(a), b - a, c - a], 1)
    return np.stack([(rel * e0[:, None]).sum(-1), (rel * e1[:, None]).sum(-1)], -1)


def _signed_axis_class(n):
    axis = np.abs(n).argmax(1)
    return axis, axis * 2 + (n[np.arange(len(n)), axis] < 0)


def chart_layout(vertices, faces, texture_size: int = DEFAULT_TEXTURE_SIZE, padding: int = 2, cancel=None,
                 smooth_iterations: int = SMOOTH_ITERATIONS):
    """The fallback parametrisation (see the module docstring). Same outputs as ``unwrap_uv``.

    Faces are classed by their normal averaged over ``smooth_iterations`` rings of neighbours
    (so surface noise does not shatter charts), except where their own normal leans less than
    ~73° toward that axis (then by their own normal, which keeps the projection unfolded).
    """
    v, f = to_numpy(vertices, faces)
    if len(f) == 0:
        return (v.astype(np.float32), f, np.zeros((len(v), 2), np.float32), np.arange(len(v)))
    n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    check(cancel)
    pairs = face_adjacency_pairs(f)
    check(cancel)
    axis, cls = _signed_axis_class(n)
    if smooth_iterations > 0 and len(pairs):
        from scipy.sparse import coo_matrix
        adj = coo_matrix((np.ones(2 * len(pairs)), (np.r_[pairs[:, 0], pairs[:, 1]],
                                                     np.r_[pairs[:, 1], pairs[:, 0]])),
                         shape=(len(f), len(f))).tocsr()
        ns = n.copy()
        for _ in range(smooth_iterations):
            check(cancel)
            ns = ns + adj @ ns
            ns /= np.maximum(np.linalg.norm(ns, axis=1, keepdims=True), 1e-30)
        axis_s, cls_s = _signed_axis_class(ns)
        sign = np.where(cls_s % 2 == 1, -1.0, 1.0)
        lean = n[np.arange(len(f)), axis_s] * sign / np.maximum(np.linalg.norm(n, axis=1), 1e-30)
        ok = lean >= 0.3
        axis, cls = np.where(ok, axis_s, axis), np.where(ok, cls_s, cls)
    own_axis, own_cls = _signed_axis_class(n)
    per_face = np.zeros(len(f), dtype=bool)
    for attempt in range(3):
        # Charts: edge-connected faces of one class (or single faces), projected orthographically
        # onto their axis plane; a chart found overlapping itself is rebuilt with the faces' own
        # classes, and if it still overlaps, split into one chart per face.
        same = (cls[pairs[:, 0]] == cls[pairs[:, 1]]) & ~per_face[pairs[:, 0]] & ~per_face[pairs[:, 1]]
        kept = pairs[same]
        chart = components(len(f), kept[:, 0], kept[:, 1])[1]
        keep = np.array([[1, 2], [2, 0], [0, 1]])[axis]  # the two other coordinates, [F,2]
        planar = np.take_along_axis(v[f], np.broadcast_to(keep[:, None, :], (len(f), 3, 2)), axis=2)
        if per_face.any():
            planar[per_face] = _per_face_planar(v, f[per_face])
        check(cancel)
        out = pack_chart_boxes(v, f, chart, planar, texture_size, padding, cancel)
        check(cancel)
        if attempt == 2:
            break
        overlapped = under_covered_faces(out[1], out[2], texture_size, cancel)
        check(cancel)
        if not overlapped.any():
            break
        bad = np.isin(chart, np.unique(chart[overlapped]))
        if attempt == 0:
            axis, cls = np.where(bad, own_axis, axis), np.where(bad, own_cls, cls)
        else:
            per_face |= bad
    vv, ff, uv, vm = out
    check(cancel)
    return vv.astype(np.float32), ff, unmirror_charts(ff, uv, texture_size, own_boxes=True), vm.astype(np.int64)
