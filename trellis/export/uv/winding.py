"""UV charts that wind the way their triangles do.

Faces are stored counter-clockwise seen from outside; a triangle's UV winding (the sign of its area in the
(u, v) plane, v up as everywhere in this package) should be counter-clockwise too. A chart laid out
mirrored shows its texture mirror-imaged to texture painting and to tangent-space normal maps, and the
Khronos 3D Commerce asset auditor counts each of its triangles under "Inverted UVs": it reads a glTF
triangle's stored TEXCOORD_0 (v down) and calls it inverted when it winds counter-clockwise there, which is
clockwise with v up, the test ``mirrored_faces`` makes.

xatlas's packer turns a chart a quarter by transposing it, which mirrors it (about half of its charts), so
our call (``uv.xatlas``) asks it not to turn charts, and to flip a chart its parametrisation mirrored
(``fix_winding``).
``axis_charts.chart_layout`` projects the charts of half its axes mirrored. A chart is mirrored or not as a
whole (flattening neither folds nor tears it), so ``unmirror_charts`` mirrors each chart whose UV area is
negative overall across its own extent (u -> u_min + u_max - u, which keeps it in the box it was packed in),
else across its height, whichever keeps its texels ``padding`` texels off every other chart's; a chart that
neither mirror can place is left as it is (``info["left"]`` counts those).
"""
from __future__ import annotations

import numpy as np
from scipy.sparse import csr_array
from scipy.sparse.csgraph import connected_components

from .masks import chart_masks, grow_mask
from ..rows import row_max, row_min

__all__ = ["mirrored_faces", "unmirror_charts", "uv_charts", "uv_signed_areas"]


def uv_signed_areas(faces, uvs) -> np.ndarray:
    """Twice each face's signed area in UV space (v up): > 0 where its UVs wind counter-clockwise."""
    t = np.asarray(uvs, np.float64)[np.asarray(faces, np.int64)]
    d1, d2 = t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]
    return d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0]


def mirrored_faces(faces, uvs) -> np.ndarray:
    """Faces whose UVs wind clockwise (v up), the auditor's "inverted" UV triangles."""
    return uv_signed_areas(faces, uvs) < 0


def uv_charts(faces, n_vertices: int) -> tuple[int, np.ndarray]:
    """(count, chart id per face): faces joined through shared vertices, as ``unwrap_uv`` returns them
    (vertices duplicated along seams, so each chart has vertices of its own)."""
    f = np.asarray(faces, np.int64).reshape(-1, 3)
    if len(f) == 0:
        return 0, np.zeros(0, np.int64)
    node = np.arange(len(f), dtype=np.int64)
    # face i is node n_vertices + i, joined to its three vertices
    rows = np.repeat(node + n_vertices, 3)
    graph = csr_array((np.ones(3 * len(f), np.int8), (rows, f.reshape(-1))),
                      shape=(n_vertices + len(f), n_vertices + len(f)))
    _, label = connected_components(graph, directed=False)
    face_label = label[n_vertices:]
    _, chart = np.unique(face_label, return_inverse=True)
    return int(chart.max()) + 1, chart.astype(np.int64)


class _Atlas:
    """How many charts cover each texel (conservative masks), with room for a margin around the square."""

    def __init__(self, size: int, margin: int):
        self.m = margin
        self.count = np.zeros((size + 2 * margin, size + 2 * margin), np.int32)

    def _window(self, y: int, x: int, h: int, w: int):
        return self.count[y + self.m:y + self.m + h, x + self.m:x + self.m + w]

    def add(self, mask, y, x, sign=1):
        self._window(y, x, *mask.shape)[mask] += sign

    def free(self, mask, y, x, padding) -> bool:
        """Whether ``mask`` at texel (y, x), grown by ``padding``, touches no chart and stays inside."""
        size = self.count.shape[0] - 2 * self.m
        h, w = mask.shape
        if y < 0 or x < 0 or y + h > size or x + w > size:
            return False
        grown = grow_mask(mask, padding)
        return not self._window(y - padding, x - padding, *grown.shape)[grown].any()


def _masks(q, chart, nchart):
    """Per chart its conservative texel mask (rows = y) and the texel (x, y) of its corner, from texel coordinates."""
    corner_chart = np.repeat(chart, 3)
    lo = np.full((nchart, 2), np.inf)
    np.minimum.at(lo, corner_chart, q.reshape(-1, 2))
    origin = np.floor(np.where(np.isfinite(lo), lo, 0)).astype(np.int64)
    h, w, off, flat = chart_masks(q - origin[chart][:, None, :], chart, nchart)
    masks = [flat[off[k]:off[k + 1]].reshape(h[k], w[k]) for k in range(nchart)]
    return masks, origin


def unmirror_charts(faces, uvs, texture_size: int, padding: int = 2, info: dict | None = None,
                    own_boxes: bool = False) -> np.ndarray:
    """``uvs`` [V,2] with every mirrored chart of ``faces`` [F,3] mirrored back (see the module docstring),
    as float32; ``texture_size`` and ``padding`` (texels) are those the charts were packed for. With
    ``own_boxes`` (each chart was packed alone in its box, as a shelf packer does) a chart is mirrored across
    its width without a look at the others. ``info`` (a dict) receives "mirrored" (charts found mirrored)
    and "left" (of those, charts left so)."""
    f = np.asarray(faces, np.int64).reshape(-1, 3)
    uv = np.array(uvs, np.float64).reshape(-1, 2)
    info = {} if info is None else info
    info.update(mirrored=0, left=0)
    if len(f) == 0:
        return uv.astype(np.float32)
    nchart, chart = uv_charts(f, len(uv))
    area = np.bincount(chart, uv_signed_areas(f, uv), nchart)
    flip = np.flatnonzero(area < 0)
    info["mirrored"] = len(flip)
    if len(flip) == 0:
        return uv.astype(np.float32)
    corner_chart = np.repeat(chart, 3)
    lo = np.full((nchart, 2), np.inf)
    hi = np.full((nchart, 2), -np.inf)
    np.minimum.at(lo, corner_chart, uv[f].reshape(-1, 2))
    np.maximum.at(hi, corner_chart, uv[f].reshape(-1, 2))
    choice = np.zeros(len(flip), np.int64) if own_boxes else _choose_mirrors(f, uv, chart, nchart, flip,
                                                                              texture_size, padding)
    info["left"] = int((choice < 0).sum())
    vert_chart = np.full(len(uv), -1)
    vert_chart[f.reshape(-1)] = corner_chart
    turn = np.full(nchart, -1)
    turn[flip] = np.arange(len(flip))
    at = np.where(vert_chart >= 0, turn[vert_chart], -1)    # per vertex: its chart's place in ``flip``, or -1
    for axis in (0, 1):
        sel = at >= 0
        sel[sel] = choice[at[sel]] == axis
        k = flip[at[sel]]
        uv[sel, axis] = lo[k, axis] + hi[k, axis] - uv[sel, axis]
    return uv.astype(np.float32)


def _choose_mirrors(f, uv, chart, nchart, flip, texture_size, padding) -> np.ndarray:
    """Per chart of ``flip``, the mirror that keeps it ``padding`` texels off the other charts: 0 across its
    width, 1 across its height, -1 none (each chart against the others as they are when its turn comes)."""
    size = int(texture_size)
    pad = max(int(padding), 0)
    q = uv[f] * size                                    # texel coordinates: x = u, y = v (up)
    masks, origin = _masks(q, chart, nchart)
    atlas = _Atlas(size, pad + 2 + int(np.ceil(max(0.0, -q.min(), q.max() - size))))
    for k in range(nchart):
        atlas.add(masks[k], origin[k, 1], origin[k, 0])
    # the charts to turn, numbered 0..len(flip)-1, mirrored across their width, then across their height
    sub = np.flatnonzero(np.isin(chart, flip))
    sub_chart = np.searchsorted(flip, chart[sub])
    mirrors = []
    for axis in (0, 1):
        lo = np.full(len(flip), np.inf)
        hi = np.full(len(flip), -np.inf)
        np.minimum.at(lo, sub_chart, row_min(q[sub, :, axis]))
        np.maximum.at(hi, sub_chart, row_max(q[sub, :, axis]))
        qm = q[sub].copy()
        qm[..., axis] = (lo + hi)[sub_chart][:, None] - qm[..., axis]
        mirrors.append(_masks(qm, sub_chart, len(flip)))
    choice = np.full(len(flip), -1)
    for i, k in enumerate(flip):
        atlas.add(masks[k], origin[k, 1], origin[k, 0], -1)
        for axis, (mm, mo) in enumerate(mirrors):
            if atlas.free(mm[i], mo[i, 1], mo[i, 0], pad):
                atlas.add(mm[i], mo[i, 1], mo[i, 0])
                choice[i] = axis
                break
        else:
            atlas.add(masks[k], origin[k, 1], origin[k, 0])
    return choice
