"""Each flat chart turned before packing: the sides of its smallest enclosing box horizontal and vertical
(``how="box"``), or its principal axis horizontal (``how="axis"``). Charts cut along the geometry are polygons
of a few long straight runs, which a tilted box would meet its neighbours corner to side with."""
from __future__ import annotations

import numpy as np

__all__ = ["orient_charts", "box_angles"]


def orient_charts(tri, chart, nchart, how: str = "axis"):
    """Turn each chart so that its principal axis is horizontal (``how`` "axis") or the sides of its
    smallest enclosing box are horizontal and vertical ("box", ``box_angles``). tri [F,3,2] -> same shape."""
    pts = tri.reshape(-1, 2)
    cc = np.repeat(chart, 3)
    cnt = np.bincount(cc, minlength=nchart).astype(np.float64)
    mean = np.stack([np.bincount(cc, pts[:, k], nchart) for k in range(2)], 1) / np.maximum(cnt, 1)[:, None]
    d = pts - mean[cc]
    if how == "box":
        ang = box_angles(d, chart, nchart)
    else:
        sxx = np.bincount(cc, d[:, 0] * d[:, 0], nchart)
        syy = np.bincount(cc, d[:, 1] * d[:, 1], nchart)
        sxy = np.bincount(cc, d[:, 0] * d[:, 1], nchart)
        ang = 0.5 * np.arctan2(2 * sxy, sxx - syy)
    c, s = np.cos(-ang)[cc], np.sin(-ang)[cc]
    out = np.stack([c * d[:, 0] - s * d[:, 1], s * d[:, 0] + c * d[:, 1]], 1)
    return out.reshape(-1, 3, 2)


def box_angles(d, chart, nchart):
    """Per chart the angle (mod 90°) of the sides of the smallest box around its points ``d`` [3F,2]
    (the corners of faces of chart ``chart`` [F]): that box has a side along an edge of the chart's
    convex hull (qhull), each edge's box is measured; a chart whose points are all on a line keeps 0."""
    from scipy.spatial import ConvexHull
    from scipy.spatial import QhullError

    order = np.argsort(chart, kind="stable")
    p = d.reshape(-1, 3, 2)[order].reshape(-1, 2)
    start = 3 * np.searchsorted(np.asarray(chart)[order], np.arange(nchart + 1))
    hulls = []
    for k in range(nchart):
        pts = p[start[k]:start[k + 1]]
        try:
            hulls.append(pts[ConvexHull(pts).vertices] if len(pts) >= 3 else pts[:0])
        except QhullError:
            hulls.append(pts[:0])
    n = np.array([len(h) for h in hulls], np.int64)
    out = np.zeros(nchart)
    if n.sum() == 0:
        return out
    h = np.concatenate(hulls)
    first = np.cumsum(n) - n
    owner = np.repeat(np.arange(nchart), n)
    nxt = np.arange(len(h)) + 1
    nxt[first[n > 0] + n[n > 0] - 1] = first[n > 0]                 # each hull closed
    side = h[nxt] - h
    ang = np.arctan2(side[:, 1], side[:, 0]) % (0.5 * np.pi)        # per hull edge
    # each edge against every point of its hull: the box with a side along the edge
    m = n[owner]
    e = np.repeat(np.arange(len(h)), m)
    q = first[owner[e]] + (np.arange(len(e)) - np.repeat(np.cumsum(m) - m, m))
    cs, sn = np.cos(ang[e]), np.sin(ang[e])
    x = h[q, 0] * cs + h[q, 1] * sn
    y = h[q, 1] * cs - h[q, 0] * sn
    at = np.cumsum(m) - m
    area = (np.maximum.reduceat(x, at) - np.minimum.reduceat(x, at)) * \
           (np.maximum.reduceat(y, at) - np.minimum.reduceat(y, at))
    best = np.lexsort((area, owner))                                  # per chart its smallest box first
    lead = np.r_[True, owner[best][1:] != owner[best][:-1]]
    out[owner[best][lead]] = ang[best][lead]
    return out
