"""How well a UV atlas uses its texture: texel use, charts, single-triangle charts, overlaps.

``atlas_stats(faces, uvs, texture_size)`` takes what ``unwrap_uv`` returns (faces index the
seam-split vertices, so a chart is a set of faces connected through shared UV edges) and measures:

* ``texel_use``: fraction of the ``texture_size``² texels whose centre lies in some triangle;
* ``charts`` and ``single_triangle_charts`` (and their share, ``single_triangle_share``);
* ``overlap_texels``: texel centres strictly inside two or more triangles (0 for a valid atlas;
  triangles sharing an edge never count twice, a centre must be inside both by a margin);
* ``outside``: corners outside [0, 1].

Plain numpy, no torch: benchmarks and tests can call it on any array.
"""
from __future__ import annotations

import numpy as np

from .graph import _components, face_adjacency_pairs

__all__ = ["atlas_stats", "chart_ids", "texel_counts", "overlapping_faces"]


def chart_ids(faces: np.ndarray) -> np.ndarray:
    """Chart id per face: faces connected through shared edges of the (seam-split) faces."""
    f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    pairs = face_adjacency_pairs(f)
    return _components(len(f), pairs[:, 0], pairs[:, 1])[1]


def texel_counts(faces, uvs, texture_size: int, margin: float = 1e-4) -> np.ndarray:
    """[S,S] int32: how many triangles contain each texel centre (row 0 = v near 1, as stored).

    A centre counts for a triangle when it lies more than ``margin`` texels inside each of the
    triangle's edges, so neighbours along an edge never both claim it."""
    s = int(texture_size)
    counts = np.zeros(s * s, dtype=np.int32)
    for _, pix in _texel_hits(faces, uvs, s, margin):
        np.add.at(counts, pix, 1)
    return counts.reshape(s, s)


def overlapping_faces(faces, uvs, texture_size: int, margin: float = 1e-4) -> np.ndarray:
    """Bool per face: some texel centre inside it is inside another face too."""
    s = int(texture_size)
    hits = list(_texel_hits(faces, uvs, s, margin))
    counts = np.zeros(s * s, dtype=np.int32)
    for _, pix in hits:
        np.add.at(counts, pix, 1)
    out = np.zeros(len(np.asarray(faces).reshape(-1, 3)), dtype=bool)
    for tri, pix in hits:
        out[tri[counts[pix] > 1]] = True
    return out


def _texel_hits(faces, uvs, s: int, margin: float, chunk: int = 1 << 22):
    """Yields (face ids, texel ids) of the texel centres inside each face, in chunks."""
    f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    t = np.asarray(uvs, dtype=np.float64)[f] * s                      # [F,3,2] texel units, v up
    t[..., 1] = s - t[..., 1]                                         # row-down
    lo = np.floor(t.min(1) - 0.5).astype(np.int64) + 1                # first centre index >= min
    hi = np.floor(t.max(1) - 0.5).astype(np.int64)                    # last centre index <= max
    lo, hi = np.clip(lo, 0, s - 1), np.clip(hi, 0, s - 1)
    w, h = hi[:, 0] - lo[:, 0] + 1, hi[:, 1] - lo[:, 1] + 1
    ok = (w > 0) & (h > 0)
    idx = np.nonzero(ok)[0]
    # bucket triangles by their box so that each bucket enumerates a fixed grid
    key = np.maximum(w[idx], h[idx])
    bucket = np.ceil(np.log2(np.maximum(key, 1))).astype(np.int64)
    for b in np.unique(bucket):
        tri = idx[bucket == b]
        side = int(2 ** b)
        per = side * side
        step = max(1, chunk // per)
        gy, gx = np.mgrid[0:side, 0:side]
        gx, gy = gx.reshape(-1), gy.reshape(-1)
        for a in range(0, len(tri), step):
            ti = tri[a:a + step]
            px = lo[ti, 0][:, None] + gx[None]
            py = lo[ti, 1][:, None] + gy[None]
            inside = (px <= hi[ti, 0][:, None]) & (py <= hi[ti, 1][:, None])
            cx, cy = px + 0.5, py + 0.5
            p = t[ti]
            e = [None] * 3
            for k in range(3):
                p0, p1 = p[:, k], p[:, (k + 1) % 3]
                ex, ey = p1[:, 0] - p0[:, 0], p1[:, 1] - p0[:, 1]
                length = np.maximum(np.hypot(ex, ey), 1e-12)
                # signed distance of the centre from edge k (positive on the left)
                e[k] = (ex[:, None] * (cy - p0[:, 1][:, None]) - ey[:, None] * (cx - p0[:, 0][:, None])) \
                    / length[:, None]
            pos = (e[0] > margin) & (e[1] > margin) & (e[2] > margin)
            neg = (e[0] < -margin) & (e[1] < -margin) & (e[2] < -margin)
            hit = inside & (pos | neg)
            yield np.broadcast_to(ti[:, None], hit.shape)[hit], (py * s + px)[hit]


def atlas_stats(faces, uvs, texture_size: int) -> dict:
    """Texel use, chart counts and overlaps of an atlas (see the module docstring)."""
    f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    uv = np.asarray(uvs, dtype=np.float64).reshape(-1, 2)
    chart = chart_ids(f)
    sizes = np.bincount(chart) if len(f) else np.zeros(0, dtype=np.int64)
    counts = texel_counts(f, uv, texture_size)
    n = int(len(sizes))
    single = int((sizes == 1).sum())
    return {
        "faces": int(len(f)),
        "charts": n,
        "single_triangle_charts": single,
        "single_triangle_share": single / max(n, 1),
        "texel_use": float((counts > 0).mean()),
        "overlap_texels": int((counts > 1).sum()),
        "outside": int(((uv[f.reshape(-1)] < 0) | (uv[f.reshape(-1)] > 1)).any(1).sum()),
    }
