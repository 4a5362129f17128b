"""Quads that a UV seam cut along their diagonal, joined again after the unwrap.

Where the atlas put a quad's two triangles in different charts, the second triangle is moved into the first one's
chart: its far corner gets the UV that the first triangle's own affine map gives it (the quad is nearly planar), so
the pair shares its diagonal again and the files write one quad. A move is made only where the moved triangle lands
inside the atlas, keeps its winding and stays ``padding`` texels away from every other chart; else the quad stays
two triangles. The triangle's old texels are left unused.
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import binary_dilation
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from .triangulate import corner_keys, merge_pairs

__all__ = ["rejoin_cut_quads"]


def _texels(uv_tri: np.ndarray, size: int, window):
    """Mask of the texel centres inside the UV triangle, within ``window`` (x0, y0, x1, y1) of the grid."""
    x0, y0, x1, y1 = window
    xs, ys = np.meshgrid((np.arange(x0, x1) + 0.5) / size, (np.arange(y0, y1) + 0.5) / size)
    a, b, c = uv_tri
    area = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
    if abs(area) < 1e-20:
        return np.zeros(xs.shape, bool)
    w0 = ((b[0] - xs) * (c[1] - ys) - (b[1] - ys) * (c[0] - xs)) / area
    w1 = ((c[0] - xs) * (a[1] - ys) - (c[1] - ys) * (a[0] - xs)) / area
    return (w0 >= 0) & (w1 >= 0) & (1 - w0 - w1 >= 0)


def _window(uv_tri, size, margin):
    lo = np.floor(uv_tri.min(axis=0) * size).astype(int) - margin
    hi = np.ceil(uv_tri.max(axis=0) * size).astype(int) + margin + 1
    return max(lo[0], 0), max(lo[1], 0), min(hi[0], size), min(hi[1], size)


def _charts(faces: np.ndarray, n: int) -> np.ndarray:
    rows = np.repeat(np.arange(len(faces)), 3)
    graph = coo_matrix((np.ones(len(rows)), (rows, faces.ravel())), shape=(len(faces), n)).tocsr()
    _, labels = connected_components(graph @ graph.T, directed=False)
    return labels


def _signed(uv_tri):
    a, b, c = uv_tri
    return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])


def rejoin_cut_quads(vertices, faces, uvs, quad_pairs: int, texture_size: int, padding: int = 2):
    """(vertices, faces, uvs, joined) with the cut quads that could be moved made whole again (module doc)."""
    v, f, uv = np.asarray(vertices, np.float32), np.asarray(faces, np.int64).copy(), np.asarray(uvs, np.float32)
    size = int(texture_size)
    keys, places = corner_keys(v, uv), corner_keys(v)
    sizes, _ = merge_pairs(f[:2 * quad_pairs], quad_pairs, keys)
    whole, entry = [], 0            # a whole pair is one entry of sizes, a cut one two
    for _ in range(quad_pairs):
        whole.append(sizes[entry] == 4)
        entry += 1 if sizes[entry] == 4 else 2
    chart = _charts(f, len(v))
    label = np.full((size, size), -1, np.int64)
    for t, tri in enumerate(f):
        win = _window(uv[tri], size, 0)
        if win[2] > win[0] and win[3] > win[1]:
            inside = _texels(uv[tri], size, win)
            label[win[1]:win[3], win[0]:win[2]][inside] = chart[t]
    new_v, new_uv, joined = [], [], 0
    for i in np.flatnonzero(~np.asarray(whole, bool)):
        t0, t1 = f[2 * i], f[2 * i + 1]
        p0, p1 = places[t0].tolist(), places[t1].tolist()
        far = [j for j in range(3) if p1[j] not in p0]
        if len(far) != 1:
            continue
        d = int(t1[far[0]])
        # the far corner in the first triangle's frame: least squares in its plane
        a, b, c = v[t0].astype(np.float64)
        st, *_ = np.linalg.lstsq(np.stack([b - a, c - a], 1), v[d] - a, rcond=None)
        ua, ub, uc = uv[t0].astype(np.float64)
        uv_d = ua + st[0] * (ub - ua) + st[1] * (uc - ua)
        moved = np.array([t0[p0.index(p)] if j != far[0] else -1 for j, p in enumerate(p1)], np.int64)
        tri_uv = np.array([uv_d if j == -1 else uv[j] for j in moved], np.float64)
        if (tri_uv < 0).any() or (tri_uv > 1).any() or _signed(tri_uv) * _signed(uv[t1].astype(np.float64)) <= 0:
            continue
        win = _window(tri_uv, size, padding + 1)
        if win[2] <= win[0] or win[3] <= win[1]:
            continue
        inside = _texels(tri_uv, size, win)
        patch = label[win[1]:win[3], win[0]:win[2]]
        others = (patch >= 0) & (patch != chart[2 * i])
        if (binary_dilation(others, iterations=padding) & inside).any():
            continue
        patch[inside] = chart[2 * i]
        moved[far[0]] = len(v) + len(new_v)
        new_v.append(v[d])
        new_uv.append(uv_d.astype(np.float32))
        f[2 * i + 1] = moved
        joined += 1
    if new_v:
        v = np.concatenate([v, np.asarray(new_v, np.float32)])
        uv = np.concatenate([uv, np.asarray(new_uv, np.float32)])
    return v, f, uv, joined
