"""How well a UV atlas uses its texture: texel use, charts, single-triangle charts, overlaps; and which face
owns each texel (``uv_coverage``).

``atlas_stats(faces, uvs, texture_size)`` takes what ``unwrap_uv`` returns (faces index the
seam-split vertices, so a chart is a set of faces connected through shared UV edges) and measures:

* ``texel_use``: fraction of the ``texture_size``² texels whose centre lies in some triangle;
* ``charts`` and ``single_triangle_charts`` (and their share, ``single_triangle_share``);
* ``overlap_texels``: texel centres strictly inside two or more triangles (0 for a valid atlas;
  triangles sharing an edge never count twice, a centre must be inside both by a margin);
* ``outside``: corners outside [0, 1].

Plain numpy (``uv_coverage`` aside), no torch: benchmarks and tests can call it on any array.
"""
from __future__ import annotations

import numpy as np

from ..mesh_graph import components, face_adjacency_pairs
from ..rows import row_max, row_min

__all__ = ["atlas_stats", "texel_use", "faces_with_texel", "chart_ids", "texel_counts", "row_spans", "centre_counts", "uv_raster", "uv_coverage"]


def chart_ids(faces: np.ndarray) -> np.ndarray:
    """Chart id per face: faces connected through shared edges of the (seam-split) faces."""
    f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    pairs = face_adjacency_pairs(f)
    return components(len(f), pairs[:, 0], pairs[:, 1])[1]


def texel_counts(faces, uvs, texture_size: int, margin: float = 1e-4) -> np.ndarray:
    """[S,S] int32: how many triangles contain each texel centre (row 0 = v near 1, as stored).

    A centre counts for a triangle when it lies more than ``margin`` texels inside its span along
    the texel row, so neighbours along an edge never both claim it (a centre exactly on a shared
    edge counts for neither)."""
    s = int(texture_size)
    _, rows, c0, c1 = row_spans(faces, uvs, s, margin)
    return centre_counts(rows, c0, c1, s)


def faces_with_texel(faces, uvs, texture_size: int) -> float:
    """The share of the faces that hold at least one texel centre (a face without one takes its colours from its
    neighbours' texels: the bake cannot give it its own)."""
    f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if len(f) == 0:
        return 1.0
    tri = row_spans(f, uvs, int(texture_size), 1e-4)[0]
    return float(len(np.unique(tri)) / len(f))


def centre_counts(rows, c0, c1, s):
    """[S,S] int32: how many of the runs (``row_spans``) cover each texel centre."""
    n = s * (s + 1)
    diff = (np.bincount(rows * (s + 1) + c0, minlength=n)
            - np.bincount(rows * (s + 1) + c1 + 1, minlength=n)).reshape(s, s + 1)
    return np.cumsum(diff[:, :s], axis=1, dtype=np.int32)


def row_spans(faces, uvs, s: int, margin: float):
    """Scan conversion: (face id, texel row, first column, last column) of the runs of texel centres
    inside each face, one per face and row (empty runs left out)."""
    f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    t = np.asarray(uvs, dtype=np.float64)[f] * s                      # [F,3,2] texel units, v up
    t[..., 1] = s - t[..., 1]                                         # row-down
    y = t[..., 1]
    r0 = np.clip(np.floor(row_min(y) + margin - 0.5).astype(np.int64) + 1, 0, s)
    r1 = np.clip(np.ceil(row_max(y) - margin - 0.5).astype(np.int64) - 1, -1, s - 1)
    n = np.maximum(r1 - r0 + 1, 0)
    tri = np.repeat(np.arange(len(f)), n)
    rows = r0[tri] + (np.arange(len(tri)) - np.repeat(np.cumsum(n) - n, n))
    yc = rows + 0.5
    p = t[tri]
    xl = np.full(len(tri), np.inf)
    xr = np.full(len(tri), -np.inf)
    for k in range(3):
        a, b = p[:, k], p[:, (k + 1) % 3]
        dy = b[:, 1] - a[:, 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            u = (yc - a[:, 1]) / dy
        ok = (dy != 0) & (u >= 0) & (u <= 1)
        x = a[:, 0] + np.where(ok, u, 0) * (b[:, 0] - a[:, 0])
        xl = np.where(ok, np.minimum(xl, x), xl)
        xr = np.where(ok, np.maximum(xr, x), xr)
    c0 = np.floor(xl + margin - 0.5).astype(np.int64, copy=False) + 1 if len(tri) else np.zeros(0, np.int64)
    c1 = np.ceil(xr - margin - 0.5).astype(np.int64, copy=False) - 1 if len(tri) else np.zeros(0, np.int64)
    good = np.isfinite(xl) & np.isfinite(xr)
    c0 = np.clip(np.where(good, c0, 0), 0, s)
    c1 = np.clip(np.where(good, c1, -1), -1, s - 1)
    keep = good & (c1 >= c0)
    return tri[keep], rows[keep], c0[keep], c1[keep]


def texel_use(faces, uvs, texture_size: int) -> float:
    """The share of the ``texture_size``² texels whose centre lies in some triangle (``atlas_stats``' "texel_use")."""
    if len(np.asarray(faces).reshape(-1, 3)) == 0:
        return 0.0
    return float((texel_counts(faces, uvs, texture_size) > 0).mean())


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


def uv_raster(faces, uvs, texture_size: int, device=None, with_bary: bool = False, cancel=None):
    """Rasterise the UV layout: (face id per texel [S,S] int64 (0 = empty, f + 1), row 0 = top; barycentrics
    [S,S,3] with ``with_bary``, else None); ``cancel``: the rasteriser's, checked between its chunks."""
    import torch

    from ...renderers.mesh_render import rasterize
    uv = uvs if torch.is_tensor(uvs) else torch.from_numpy(np.asarray(uvs))
    fc = faces if torch.is_tensor(faces) else torch.from_numpy(np.asarray(faces))
    device = device if device is not None else uv.device
    uv = uv.to(device=device, dtype=torch.float32)
    fc = fc.to(device=device, dtype=torch.int64)
    clip = torch.stack([uv[:, 0] * 2 - 1, 1 - uv[:, 1] * 2, torch.zeros_like(uv[:, 0]),
                        torch.ones_like(uv[:, 0])], -1)
    face_id, bary, _ = rasterize(clip, fc, texture_size, texture_size, with_bary=with_bary, cancel=cancel)
    return face_id, bary


def uv_coverage(faces, uvs, texture_size: int, device=None, cancel=None):
    """Rasterise the UV layout: face id per texel [S,S] int64 (0 = empty, f + 1), row 0 = top (``cancel``: as in
    ``uv_raster``)."""
    return uv_raster(faces, uvs, texture_size, device, cancel=cancel)[0]
