"""Conservative texel masks of flat charts: every texel a chart's triangles touch (what the packer places
and the winding fix moves)."""
from __future__ import annotations

import numpy as np

from ..rows import row_max, row_min

__all__ = ["chart_masks", "grow_mask"]


def chart_masks(q, chart, nchart):
    """Conservative texel masks of charts from local texel coordinates ``q`` [F,3,2] (x right, y up,
    each chart's minimum at >= 0): texel (i, j) = square [i, i+1] x [j, j+1] is set when a triangle of
    the chart overlaps it. Per triangle and texel row, the triangle clipped to the row's band spans
    x from the least to the greatest x of its edges clipped to the band; every texel that span touches
    is set. Returns (h [K], w [K], offsets [K+1], flat bool): chart k's mask is
    flat[off[k]:off[k+1]].reshape(h[k], w[k]), row = y."""
    q = np.asarray(q, np.float64)
    x, y = q[..., 0], q[..., 1]
    w = np.zeros(nchart, np.int64)
    h = np.zeros(nchart, np.int64)
    np.maximum.at(w, chart, np.floor(row_max(x)).astype(np.int64) + 1)
    np.maximum.at(h, chart, np.floor(row_max(y)).astype(np.int64) + 1)
    w, h = np.maximum(w, 1), np.maximum(h, 1)
    off = np.r_[0, np.cumsum(h * w)]
    # triangles chart by chart: the texel spans below land in one chart's mask after another (the
    # scatter into all the masks' texels stays local, which is faster; the same masks)
    order = np.argsort(chart, kind="stable")
    q, chart = q[order], np.asarray(chart)[order]
    x, y = q[..., 0], q[..., 1]
    j0 = np.floor(row_min(y)).astype(np.int64)
    n = np.floor(row_max(y)).astype(np.int64) - j0 + 1
    t = np.repeat(np.arange(len(q)), n)
    j = j0[t] + (np.arange(len(t)) - np.repeat(np.cumsum(n) - n, n))
    yb = j.astype(np.float64)
    yt = yb + 1.0
    lo = np.full(len(t), np.inf)
    hi = np.full(len(t), -np.inf)
    c0, c1, x0, x1 = (np.empty(len(t)) for _ in range(4))
    for e in range(3):
        xa, ya = x[:, e], y[:, e]
        xb, yb2 = x[:, (e + 1) % 3], y[:, (e + 1) % 3]
        dy = yb2 - ya
        with np.errstate(divide="ignore", invalid="ignore"):
            slope = np.where(dy != 0, (xb - xa) / dy, 0.0)
        # the edge clipped to the row's band: its points from y = c0 to y = c1 (none where c0 > c1), x at
        # both ends (a level edge gives its first corner; its second is the next edge's first). Per edge
        # rather than per corner and crossing: the same spans, less work
        np.maximum(yb, np.minimum(ya, yb2)[t], out=c0)
        np.minimum(yt, np.maximum(ya, yb2)[t], out=c1)
        miss = c0 > c1
        xa_t, ya_t, s_t = xa[t], ya[t], slope[t]
        np.subtract(c0, ya_t, out=x0)
        x0 *= s_t
        x0 += xa_t
        np.subtract(c1, ya_t, out=x1)
        x1 *= s_t
        x1 += xa_t
        lo_e = np.minimum(x0, x1)
        hi_e = np.maximum(x0, x1, out=x1)
        lo_e[miss] = np.inf
        hi_e[miss] = -np.inf
        np.minimum(lo, lo_e, out=lo)
        np.maximum(hi, hi_e, out=hi)
    good = np.isfinite(lo)
    c = chart[t[good]]
    row = off[c] + j[good] * w[c]
    c0 = np.clip(np.floor(lo[good]).astype(np.int64), 0, w[c] - 1)
    c1 = np.clip(np.floor(hi[good]).astype(np.int64), 0, w[c] - 1)
    total = int(off[-1])
    diff = np.bincount(row + c0, minlength=total + 1) - np.bincount(row + c1 + 1, minlength=total + 1)
    flat = np.cumsum(diff[:total]) > 0
    return h, w, off, flat


def grow_mask(m, padding):
    """Mask grown by ``padding`` texels on every side (square dilation), shape + 2 padding."""
    if padding <= 0:
        return m.copy()
    h, w = m.shape
    rows = np.zeros((h, w + 2 * padding), bool)
    for d in range(2 * padding + 1):
        rows[:, d:d + w] |= m
    out = np.zeros((h + 2 * padding, w + 2 * padding), bool)
    for d in range(2 * padding + 1):
        out[d:d + h] |= rows
    return out
