"""Chart boxes packed in shelves (rows by decreasing height) at the largest uniform scale that fits: the
fallback layout's packer (``axis_charts``), fast and simple where the bitmap packer is dense."""
from __future__ import annotations

import numpy as np

from ...core.callbacks import CancelCheck, check

__all__ = ["shelf_pack", "pack_chart_boxes"]


def shelf_pack(widths, heights, size, padding, cancel: CancelCheck = None):
    """Largest scale s (texels per unit) at which boxes of s·w + 2p by s·h + 2p fit a size² square
    in shelves (rows by decreasing height). Returns (s, x0 [N], y0 [N]) in texels (row-down y). ``cancel`` is
    checked per scale tried; box sizes that are not finite numbers raise a ValueError."""
    area = float(np.sqrt((widths * heights).sum()))
    if not np.isfinite(area):              # (the search below would never end)
        raise ValueError("chart layout: chart sizes that are not finite numbers (non-finite vertex coordinates)")
    order = np.argsort(-heights, kind="stable")
    w_sorted, h_sorted = widths[order], heights[order]

    def place(s):
        bw = s * w_sorted + 2 * padding
        bh = s * h_sorted + 2 * padding
        if bw.max(initial=0) > size:
            return None
        cum = np.concatenate([[0.0], np.cumsum(bw)])
        xs, ys = np.empty(len(bw)), np.empty(len(bw))
        i, y = 0, 0.0
        while i < len(bw):
            j = int(np.searchsorted(cum, cum[i] + size, side="right")) - 1  # items i..j-1 fit
            j = max(j, i + 1)
            xs[i:j] = cum[i:j] - cum[i]
            ys[i:j] = y
            y += bh[i]
            if y > size:
                return None
            i = j
        return xs, ys

    lo, hi = 0.0, size / max(area, 1e-12)
    while place(hi) is not None:  # the area bound is rarely reachable; make sure hi is infeasible
        check(cancel)
        lo, hi = hi, hi * 2
    best = place(lo) if lo > 0 else None
    for _ in range(30):
        check(cancel)
        mid = 0.5 * (lo + hi)
        got = place(mid)
        if got is None:
            hi = mid
        else:
            lo, best = mid, got
        if hi - lo < 1e-4 * hi:
            break
    if best is None:
        raise RuntimeError("chart layout: too many charts for the texture size and padding")
    xs, ys = np.empty(len(order)), np.empty(len(order))
    xs[order], ys[order] = best
    return lo, xs, ys


def pack_chart_boxes(v, f, chart_of_face, planar_xy, size, padding, cancel: CancelCheck = None):
    """Pack charts given per-corner 2-D coordinates [F,3,2] (world units) and a chart id per face (``cancel``:
    ``shelf_pack``'s)."""
    nchart = int(chart_of_face.max()) + 1 if len(f) else 0
    corner_chart = np.repeat(chart_of_face, 3)
    pts = planar_xy.reshape(-1, 2)
    lo = np.full((nchart, 2), np.inf)
    hi = np.full((nchart, 2), -np.inf)
    np.minimum.at(lo, corner_chart, pts)
    np.maximum.at(hi, corner_chart, pts)
    ext = np.maximum(hi - lo, 1e-9)
    # So many charts (a noisy mesh of ~10^5 faces) that their margins alone overflow the texture: fewer
    # texels of margin (texture inpainting still fills the seams) rather than a failed export. At
    # zero padding every scale small enough fits.
    for pad in dict.fromkeys([padding, min(padding, 1), 0]):
        try:
            scale, x0, y0 = shelf_pack(ext[:, 0], ext[:, 1], size, pad, cancel)
            break
        except RuntimeError:
            if pad == 0:
                raise
    padding = pad
    tex = (pts - lo[corner_chart]) * scale + np.stack([x0, y0], 1)[corner_chart] + padding
    uv = np.stack([tex[:, 0] / size, 1.0 - tex[:, 1] / size], 1)
    # One output vertex per (chart, input vertex): duplicates along seams, shared inside a chart.
    key = corner_chart.astype(np.int64) * len(v) + f.reshape(-1)
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    vmapping = f.reshape(-1)[first]
    return v[vmapping], inverse.reshape(-1, 3).astype(np.int64), uv[first].astype(np.float32), vmapping
