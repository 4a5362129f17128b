"""Flat charts packed on a skyline by their column profiles: the grouped layout's packer (``grouped``).

A box packer (``pack_turned``) leaves empty what a ragged chart does not fill of its box; here each chart is known by
the lowest and highest texel it covers in each texel column (from its triangles' own spans, grown by the margin), and
is set down where its underside meets the charts below it (the skyline: the height filled so far in each column):
its bottom rests on the skyline, charts interlock. Charts are turned as ``pack_turned.chart_boxes`` turns them, taken
tallest first, each placed at the column where it rests lowest (the leftmost of equals). A scale search keeps the
largest scale whose layout fits, starting from the box packer's (nearly always fits); per chart
the work is one vectorised window over the texture's columns, so a layout of thousands of charts takes a fraction
of a second.
"""
from __future__ import annotations

import numpy as np

from ...core.callbacks import CancelCheck, check
from .pack_shelf import shelf_pack
from .pack_turned import MAX_STRETCH, chart_boxes, pack_turned

__all__ = ["SCALE_STEPS", "WIDE", "MAX_CHARTS", "CROWDED", "MAX_GAIN", "column_profiles", "skyline_layout", "pack_skyline"]

SCALE_STEPS = 4             # layouts tried between the box packer's scale and MAX_GAIN times it (bisection)
WIDE = 16                   # charts wider than this many columns are tried at every (width // WIDE)-th column
MAX_CHARTS = 20_000         # more charts than this: the box packer (vectorised)
CROWDED = 0.5               # charts x (one column and margins)² over this share of the texture: boxes at once
MAX_GAIN = 1.3              # the skyline fits charts at most this much larger than the boxes would


def column_profiles(local, chart, k, scale, pad):
    """(columns per chart [K], first entry of each chart [K], lowest [N], highest [N]) texel heights covered in each
    column of each chart at ``scale`` with a margin of ``pad`` texels (chart-local corners ``local`` [F,3,2] >= 0;
    a column no triangle spans has lowest +inf, highest -inf)."""
    t = local * scale
    x0, x1 = np.floor(t[..., 0].min(1)).astype(np.int64), np.floor(t[..., 0].max(1) + 2 * pad).astype(np.int64)
    y0, y1 = t[..., 1].min(1), t[..., 1].max(1) + 2 * pad
    cols = np.zeros(k, np.int64)
    np.maximum.at(cols, chart, x1 + 1)
    first = np.cumsum(cols) - cols
    n = x1 - x0 + 1
    face = np.repeat(np.arange(len(t)), n)
    j = x0[face] + np.arange(len(face)) - np.repeat(np.cumsum(n) - n, n)
    entry = first[chart[face]] + j
    low = np.full(int(cols.sum()), np.inf)
    high = np.full(int(cols.sum()), -np.inf)
    np.minimum.at(low, entry, y0[face])
    np.maximum.at(high, entry, y1[face])
    return cols, first, low, high


def skyline_layout(local, chart, k, scale, size, pad, order, cancel: CancelCheck = None):
    """(column [K], row [K]) of each chart's local origin in texels (rows up), or None where the layout at ``scale``
    does not fit a ``size``² texture; charts placed in ``order``."""
    cols, first, low, high = column_profiles(local, chart, k, scale, pad)
    if cols.max() > size:
        return None
    sky = np.zeros(size)
    low_f = np.where(np.isfinite(low), low, 1e30)
    at_x, at_y = np.zeros(k, np.int64), np.zeros(k)
    for i, c in enumerate(order):
        if i % 256 == 0:
            check(cancel)
        w, s = int(cols[c]), int(first[c])
        b, t = low_f[s:s + w], high[s:s + w]
        if w == 1:
            rest, xs = sky - b[0], None
        elif w <= WIDE:
            rest, xs = (np.lib.stride_tricks.sliding_window_view(sky, w) - b).max(1), None
        else:                          # a wide chart tries every (w // WIDE)-th column: its cost stays ~WIDE per column
            xs = np.arange(0, size - w + 1, w // WIDE)
            rest = (sky[xs[:, None] + np.arange(w)] - b).max(1)
        x = int(np.argmin(rest))
        y = max(float(rest[x]), 0.0)
        x = int(xs[x]) if xs is not None else x
        if y + t.max() > size:
            return None
        sky[x:x + w] = np.maximum(sky[x:x + w], y + t)
        at_x[c], at_y[c] = x, y
    return at_x, at_y


def pack_skyline(tri, chart, size: int, padding: int = 2, cancel: CancelCheck = None, info: dict | None = None):
    """Corner UVs [F,3,2] in [0,1] (v up) of flat charts ``tri`` [F,3,2] (world units; chart ids ``chart`` [F],
    0..K-1 all used), packed into a ``size``² texture ``padding`` texels apart (module docstring); by ``pack_turned``
    where no skyline layout fits (charts so many and small that their whole columns and margins overflow) or there
    are more than ``MAX_CHARTS`` charts.
    ``info`` gets "scale_tries" (layouts made), "box_scale" (the scale found against the box packer's) and
    "packer" ("skyline" or "boxes")."""
    chart = np.asarray(chart, np.int64)
    k = int(chart.max()) + 1
    q, lo, ext = chart_boxes(np.asarray(tri, np.float64), chart, k, cancel)
    local = q - lo[chart][:, None, :]
    pad = -(-int(padding) // 2)
    try:
        s_lo = shelf_pack(ext[:, 0], ext[:, 1], size, pad, cancel)[0]
    except RuntimeError:               # not even the boxes fit with margins: none (the bake's dilation fills gutters)
        pad = 0
        s_lo = shelf_pack(ext[:, 0], ext[:, 1], size, pad, cancel)[0]
    area = 0.5 * np.abs((local[:, 1, 0] - local[:, 0, 0]) * (local[:, 2, 1] - local[:, 0, 1])
                        - (local[:, 1, 1] - local[:, 0, 1]) * (local[:, 2, 0] - local[:, 0, 0])).sum()
    s_hi = max(min(size / np.sqrt(max(area, 1e-30)), MAX_GAIN * s_lo), s_lo)
    # whole columns with margins alone would fill the texture, or so many charts that placing them one by one (a
    # Python step each, per scale tried) would take longer than the rest of the layout
    if k * (2 * pad + 1) ** 2 > CROWDED * size * size or k > MAX_CHARTS:
        if info is not None:
            info.update(scale_tries=0, box_scale=1.0, packer="boxes")
        return pack_turned(tri, chart, size, padding, cancel)
    order = np.lexsort((-ext[:, 0], -ext[:, 1]))          # tallest first, then widest
    best, best_s, tries = None, s_lo, 0
    lo_s, hi_s = s_lo, s_hi
    for _ in range(SCALE_STEPS):
        s = 0.5 * (lo_s + hi_s) if best is not None else lo_s
        got = skyline_layout(local, chart, k, s, size, pad, order, cancel)
        tries += 1
        if got is None:
            hi_s = s
            if best is None:           # the box packer's scale did not fit the skyline: smaller
                lo_s = best_s = s * 0.9
            continue
        best, best_s, lo_s = got, s, s
    while best is None and tries < 4 * SCALE_STEPS:   # (greedy layouts need not shrink with the scale: a few more)
        best_s *= 0.9
        best = skyline_layout(local, chart, k, best_s, size, pad, order, cancel)
        tries += 1
    if info is not None:
        info.update(scale_tries=tries, box_scale=round(best_s / s_lo, 3) if s_lo > 0 else None,
                    packer="skyline" if best is not None else "boxes")
    if best is None:
        # so many tiny charts that whole texel columns with margins do not fit: the boxes' fractional sizes do
        return pack_turned(tri, chart, size, padding, cancel)
    at_x, at_y = best
    tx = local[..., 0] * best_s + at_x[chart, None] + pad
    ty = local[..., 1] * best_s + at_y[chart, None] + pad
    top = float((at_y + ext[:, 1] * best_s + 2 * pad).max())
    stretch = min(MAX_STRETCH, size / max(top, 1e-9))
    uv = np.stack([tx / size, ty * stretch / size], -1)
    return np.clip(uv, 0.0, 1.0)
