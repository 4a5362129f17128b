"""Flat charts turned to their smallest box and shelf-packed (``pack_shelf``), every step vectorised over the charts:
the turn the skyline packer (``pack_skyline``) uses, and its packer where the charts are too many and small for it.

Each chart is turned (a rotation, never a mirror, so faces keep their winding) by the angle of ``TURNS`` whose
bounding box has the least area, then a quarter more when it stands taller than wide (shelves of low, wide boxes
waste less). The boxes are shelf-packed at the largest uniform scale that fits, and the layout is stretched
upward into the rows left empty at the top by at most ``MAX_STRETCH``.
"""
from __future__ import annotations

import numpy as np

from ...core.callbacks import CancelCheck, check
from .pack_shelf import shelf_pack

__all__ = ["TURNS", "MAX_STRETCH", "chart_boxes", "pack_turned"]

TURNS = np.radians(np.arange(0.0, 90.0, 15.0))     # box angles tried (a quarter turn more is the same box)
MAX_STRETCH = 1.15


def _segments(chart, k):
    """(order of the faces by chart, start of each chart's run in it) for ``np.*.reduceat``."""
    order = np.argsort(chart, kind="stable")
    start = np.searchsorted(chart[order], np.arange(k))
    return order, start


def chart_boxes(tri, chart, k, cancel: CancelCheck = None):
    """(turned corners [F,3,2], box low corner [K,2], box size [K,2]): each chart turned as the module docstring
    says. ``cancel`` is asked between the turns tried (a pass over every face each)."""
    order, start = _segments(chart, k)
    pts = tri[order].reshape(len(order), 6)
    best_area, best = np.full(k, np.inf), np.zeros(k)
    for a in TURNS:
        check(cancel)
        c, s = np.cos(a), np.sin(a)
        x = pts[:, 0::2] * c - pts[:, 1::2] * s
        y = pts[:, 0::2] * s + pts[:, 1::2] * c
        w = np.maximum.reduceat(_most(x, np.maximum), start) - np.minimum.reduceat(_most(x, np.minimum), start)
        h = np.maximum.reduceat(_most(y, np.maximum), start) - np.minimum.reduceat(_most(y, np.minimum), start)
        better = w * h < best_area
        best_area = np.where(better, w * h, best_area)
        best = np.where(better, a, best)
    ang = best[chart]
    c, s = np.cos(ang)[:, None], np.sin(ang)[:, None]
    q = np.stack([tri[..., 0] * c - tri[..., 1] * s, tri[..., 0] * s + tri[..., 1] * c], -1)
    lo, hi = _bounds(q, order, start)
    tall = (hi[:, 1] - lo[:, 1]) > (hi[:, 0] - lo[:, 0])
    turn = tall[chart]
    q = np.where(turn[:, None, None], np.stack([-q[..., 1], q[..., 0]], -1), q)   # a quarter turn: (x, y) -> (-y, x)
    lo, hi = _bounds(q, order, start)
    return q, lo, np.maximum(hi - lo, 1e-12)


def _most(x, op):
    """``op`` (np.maximum or np.minimum) of the three columns of ``x`` [N,3] (faster than a reduction along rows)."""
    return op(op(x[:, 0], x[:, 1]), x[:, 2])


def _bounds(q, order, start):
    p = q[order]
    lo = np.stack([np.minimum.reduceat(_most(p[..., i], np.minimum), start) for i in range(2)], 1)
    hi = np.stack([np.maximum.reduceat(_most(p[..., i], np.maximum), start) for i in range(2)], 1)
    return lo, hi


def pack_turned(tri, chart, size: int, padding: int = 2, cancel: CancelCheck = None):
    """Corner UVs [F,3,2] in [0,1] (v up) of flat charts ``tri`` [F,3,2] (world units; chart ids ``chart`` [F],
    0..K-1 all used), packed into a ``size``² texture ``padding`` texels apart (fewer where so many charts' margins
    alone would overflow it: the bake's dilation still fills the gutters)."""
    chart = np.asarray(chart, np.int64)
    k = int(chart.max()) + 1
    q, lo, ext = chart_boxes(np.asarray(tri, np.float64), chart, k, cancel)
    half = -(-int(padding) // 2)                      # each box's own margin: two boxes are ``padding`` apart
    for pad in dict.fromkeys([half, min(half, 1), 0]):
        try:
            scale, x0, y0 = shelf_pack(ext[:, 0], ext[:, 1], size, pad, cancel)
            break
        except RuntimeError:
            if pad == 0:
                raise
    # texel coordinates, rows down: a chart's top (its largest y) at its box's top row, so v keeps the chart's y
    hi_y = lo[:, 1] + ext[:, 1]
    tx = (q[..., 0] - lo[chart, None, 0]) * scale + x0[chart, None] + pad
    ty = (hi_y[chart, None] - q[..., 1]) * scale + y0[chart, None] + pad
    used = float((y0 + ext[:, 1] * scale + 2 * pad).max())
    stretch = min(MAX_STRETCH, size / max(used, 1e-9))
    uv = np.stack([tx / size, 1.0 - ty * stretch / size], -1)
    return np.clip(uv, 0.0, 1.0)
