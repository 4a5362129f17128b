"""Packing flat charts into one square texture: skyline placement of each chart's column profile.

Each chart is rasterised conservatively as a column profile (per texel column, the lowest and
highest texel any of its triangles touches), grown by ``padding`` texels on every side. Charts are
placed largest first; for each, every column of the atlas and four rotations (0°, 90°, 180°, 270°
after turning the chart's principal axis horizontal) are tried at once (numpy sliding windows):
the chart rests on the skyline (the top of what is placed so far), and the position that leaves
the least empty space under it wins, then the lowest. Empty space under a chart is lost (a
skyline never fills it again); compact charts, as ``charts.geometric_charts`` makes, lose little.

The scale (texels per world unit, the same for every chart) is searched from a first guess
(``FIRST_FILL`` of the area bound): larger while a layout fits and ends well below the top, smaller
while it does not. The layout that fits is then stretched vertically to the texture's top (at most
``MAX_STRETCH``), as xatlas does with its atlas size. Neighbouring charts are ``padding`` texels
apart (a chart's margin may lie over the next one's, as in xatlas).

On the realistic bunny (18 k faces, 92 charts, texture 1024, padding 2) the triangles cover 57 % of
the texels; of the rest, ~10 % of the texture goes to the conservative column profiles and the
margins, ~28 % to space left under the skyline. Candidate columns every 2 or 3 texels
(``X_STEP``) lost 1-1.6 points of texel use.
"""
from __future__ import annotations

import numpy as np

__all__ = ["pack_charts"]

MAX_STRETCH = 1.15
X_STEP = 1                 # candidate columns for a chart's left edge: every X_STEP-th
FIRST_FILL = 0.74          # linear: the first layout tries 0.74² = 55 % of the texture in triangles


def _orient(tri, chart, nchart):
    """Turn each chart so that its principal axis is horizontal. tri [F,3,2] -> same shape."""
    pts = tri.reshape(-1, 2)
    cc = np.repeat(chart, 3)
    cnt = np.bincount(cc, minlength=nchart).astype(np.float64)
    mean = np.stack([np.bincount(cc, pts[:, k], nchart) for k in range(2)], 1) / np.maximum(cnt, 1)[:, None]
    d = pts - mean[cc]
    sxx = np.bincount(cc, d[:, 0] * d[:, 0], nchart)
    syy = np.bincount(cc, d[:, 1] * d[:, 1], nchart)
    sxy = np.bincount(cc, d[:, 0] * d[:, 1], nchart)
    ang = 0.5 * np.arctan2(2 * sxy, sxx - syy)
    c, s = np.cos(-ang)[cc], np.sin(-ang)[cc]
    out = np.stack([c * d[:, 0] - s * d[:, 1], s * d[:, 0] + c * d[:, 1]], 1)
    return out.reshape(-1, 3, 2)


def _profiles(q, chart, nchart, padding):
    """Column profiles of charts given local texel coordinates q [F,3,2] (>= 0 per chart).

    Returns (width [K] in columns, start offsets [K+1], lo [sum], hi [sum]) with lo/hi the
    occupied rows [lo, hi) of each column, grown by ``padding`` in both directions."""
    xmin, xmax = q[..., 0].min(1), q[..., 0].max(1)
    c0 = np.floor(xmin).astype(np.int64)
    c1 = np.floor(xmax).astype(np.int64)
    ncol = c1 - c0 + 1
    width = np.zeros(nchart, dtype=np.int64)
    np.maximum.at(width, chart, c1 + 1)
    tri_id = np.repeat(np.arange(len(q)), ncol)
    col = c0[tri_id] + (np.arange(len(tri_id)) - np.repeat(np.cumsum(ncol) - ncol, ncol))
    p = q[tri_id]                                   # [P,3,2]
    x0, x1 = col.astype(np.float64), col + 1.0
    ylo = np.full(len(col), np.inf)
    yhi = np.full(len(col), -np.inf)
    inside = (p[..., 0] >= x0[:, None]) & (p[..., 0] <= x1[:, None])
    ylo = np.minimum(ylo, np.where(inside, p[..., 1], np.inf).min(1))
    yhi = np.maximum(yhi, np.where(inside, p[..., 1], -np.inf).max(1))
    for k in range(3):
        a, b = p[:, k], p[:, (k + 1) % 3]
        dx = b[:, 0] - a[:, 0]
        for xs in (x0, x1):
            with np.errstate(divide="ignore", invalid="ignore"):
                t = (xs - a[:, 0]) / dx
            ok = (t >= 0) & (t <= 1) & (dx != 0)
            y = a[:, 1] + np.where(ok, t, 0) * (b[:, 1] - a[:, 1])
            ylo = np.where(ok, np.minimum(ylo, y), ylo)
            yhi = np.where(ok, np.maximum(yhi, y), yhi)
    wpad = width + 2 * padding
    start = np.r_[0, np.cumsum(wpad)]
    lo = np.full(start[-1], np.inf)
    hi = np.full(start[-1], -np.inf)
    idx = start[chart[tri_id]] + col + padding
    good = np.isfinite(ylo)
    idx, ylo, yhi = idx[good], np.floor(ylo[good]), np.ceil(yhi[good])
    if len(idx):        # per column min / max: sorted runs and reduceat (ufunc.at is slow)
        order = np.argsort(idx, kind="stable")
        idx, ylo, yhi = idx[order], ylo[order], yhi[order]
        first = np.r_[0, np.nonzero(idx[1:] != idx[:-1])[0] + 1]
        lo[idx[first]] = np.minimum.reduceat(ylo, first)
        hi[idx[first]] = np.maximum.reduceat(yhi, first)
    body_hi = np.where(np.isfinite(hi), hi, -np.inf)     # the chart's own texels (no margin)
    body_lo = np.where(np.isfinite(lo), lo, np.inf)
    # grow by padding sideways (window min / max) and up / down
    if padding > 0:
        lo2, hi2 = lo.copy(), hi.copy()
        for s in range(1, padding + 1):
            lo2[s:] = np.minimum(lo2[s:], lo[:-s])
            lo2[:-s] = np.minimum(lo2[:-s], lo[s:])
            hi2[s:] = np.maximum(hi2[s:], hi[:-s])
            hi2[:-s] = np.maximum(hi2[:-s], hi[s:])
        # (each chart's first and last ``padding`` columns are empty, so no window reaches the texels
        # of the next chart)
        lo, hi = lo2 - padding, hi2 + padding
    # a column no triangle touches (a gap inside a chart) takes the span of its neighbours
    lo = np.where(np.isfinite(lo), lo, 0.0)
    hi = np.where(np.isfinite(hi), hi, 0.0)
    return width, wpad, start, lo, hi, body_lo, body_hi


def _place(orients, size):
    """Skyline placement. orients: per chart a list of (lo, hi, body_hi) arrays (one per rotation).
    Returns ([(x, y, rotation)] per chart, used height) or None when the atlas overflows ``size``."""
    sky = np.zeros(size)
    out = []
    for options in orients:
        best = None
        csum = np.r_[0.0, np.cumsum(sky)]
        for r, (lo, hi, _) in enumerate(options):
            w = len(lo)
            if w > size:
                continue
            n = size - w + 1
            # y(x) = max_c sky[x + c] - lo[c]: the chart rests on the skyline (w vector ops over the
            # candidate columns, every X_STEP-th)
            y = np.full((n + X_STEP - 1) // X_STEP, -lo.min())
            for c in range(w):
                np.maximum(y, sky[c:c + n:X_STEP] - lo[c], out=y)
            top = y + hi.max()
            waste = w * y + lo.sum() - (csum[w:] - csum[:n])[::X_STEP]   # empty texels left under it
            score = np.where(top <= size, top + waste / w, np.inf)
            i = int(np.argmin(score))
            if np.isfinite(score[i]) and (best is None or score[i] < best[0]):
                best = (score[i], i * X_STEP, float(y[i]), r)
        if best is None:
            return None
        _, x, y, r = best
        # the skyline keeps the chart's own texels: the next chart's margin may lie over this one's,
        # so neighbouring charts are ``padding`` texels apart, not twice that (as in xatlas)
        lo, hi, body = options[r]
        sky[x:x + len(lo)] = np.maximum(sky[x:x + len(lo)], y + body)
        out.append((x, y, r))
    return out, float(sky.max())


def _turned(q, r):
    """q [F,3,2] turned by r quarter turns."""
    if r == 1:
        return np.stack([-q[..., 1], q[..., 0]], -1)
    if r == 2:
        return -q
    if r == 3:
        return np.stack([q[..., 1], -q[..., 0]], -1)
    return q


def _half_turn(prof, q, chart):
    """The profile and coordinates of the charts turned by 180°, from the unturned ones (exact on
    the texel grid: columns reversed, rows mirrored in the chart's own height)."""
    width, wpad, start, lo, hi, blo, bhi = prof
    col_chart = np.repeat(np.arange(len(wpad)), wpad)
    j = np.arange(len(lo)) - start[col_chart]
    rev = start[col_chart] + wpad[col_chart] - 1 - j
    top = np.maximum.reduceat(np.where(np.isfinite(bhi), bhi, -np.inf), start[:-1]) if len(lo) else bhi
    top = np.where(np.isfinite(top), top, 0.0)[col_chart]
    lo2, hi2 = top - hi[rev], top - lo[rev]
    blo2, bhi2 = top - bhi[rev], top - blo[rev]
    q2 = np.stack([width[chart][:, None] - q[..., 0],
                   np.maximum.reduceat(np.where(np.isfinite(bhi), bhi, -np.inf), start[:-1])[chart][:, None]
                   - q[..., 1]], -1)
    return (width, wpad, start, lo2, hi2, blo2, bhi2), q2


def _attempt(q0, chart, nchart, scale, size, padding):
    """Pack at ``scale``: (uv texel coordinates [F,3,2], used height) or None."""
    variants = []
    cc = np.repeat(chart, 3)
    for r in (0, 1):
        q = _turned(q0 * scale, r)
        mins = np.full((nchart, 2), np.inf)
        np.minimum.at(mins, cc, q.reshape(-1, 2))
        q = q - mins[chart][:, None, :]
        variants.append((q, _profiles(q, chart, nchart, padding)))
    for r in (0, 1):
        prof, q2 = _half_turn(variants[r][1], variants[r][0], chart)
        variants.append((q2, prof))
    _, wpad, start, lo, hi, _, _ = variants[0][1]
    area = np.add.reduceat(hi - lo, start[:-1])
    height = np.maximum.reduceat(hi, start[:-1]) - np.minimum.reduceat(lo, start[:-1])
    order = np.lexsort((-area, -height))
    orients = []
    for k in order:
        orients.append([(pr[3][pr[2][k]:pr[2][k + 1]], pr[4][pr[2][k]:pr[2][k + 1]], pr[6][pr[2][k]:pr[2][k + 1]])
                        for _, pr in variants])
    placed = _place(orients, size)
    if placed is None:
        return None
    where, used = placed
    shift = np.zeros((nchart, 2))
    rot = np.zeros(nchart, dtype=np.int64)
    for (x, y, r), k in zip(where, order):
        shift[k] = (x + padding, y)
        rot[k] = r
    uv = np.empty_like(q0)
    for r in range(4):
        sel = rot[chart] == r
        uv[sel] = variants[r][0][sel] + shift[chart[sel]][:, None, :]
    return uv, used


def pack_charts(tri, chart, size: int, padding: int = 2, attempts: int = 4, info: dict = None):
    """Corner UVs [F,3,2] in [0,1] (v up) for flat charts ``tri`` [F,3,2] (world units) with chart
    ids ``chart`` [F], packed into a ``size``² texture with ``padding`` texels between charts.

    The scale is searched from the fill this packer reaches on compact charts (~75 % of the area
    bound): up while a layout fits, down while it does not, ``attempts`` layouts at most (each
    ~0.1-0.5 s); the best that fits is kept and stretched vertically to the texture's top. If
    ``info`` is a dict: its "fill" (the linear scale over the area bound) starts the search, and
    receives the one used."""
    nchart = int(chart.max()) + 1
    q0 = _orient(np.asarray(tri, np.float64), chart, nchart)
    area = 0.5 * np.abs((q0[:, 1, 0] - q0[:, 0, 0]) * (q0[:, 2, 1] - q0[:, 0, 1])
                        - (q0[:, 1, 1] - q0[:, 0, 1]) * (q0[:, 2, 0] - q0[:, 0, 0])).sum()
    bound = size / np.sqrt(max(area, 1e-30))          # everything at 100 % fill
    info = {} if info is None else info
    s, best, fail = info.get("fill", FIRST_FILL) * bound, None, None
    for _ in range(attempts):
        got = _attempt(q0, chart, nchart, s, size, padding)
        if got is None:
            fail = s
            s = 0.5 * (s + best[0]) if best is not None else 0.92 * s
        else:
            best = (s, got)
            grow = min(1.08, np.sqrt(size / max(got[1], 1.0)))
            if grow < 1.01:
                break
            s = s * grow if fail is None else 0.5 * (s + fail)
    while best is None:                                # tiny textures / very many charts
        s *= 0.7
        got = _attempt(q0, chart, nchart, s, size, padding)
        if got is not None:
            best = (s, got)
        elif s < 1e-6 * bound:
            raise RuntimeError("chart packing: the charts do not fit the texture")
    uv, used = best[1]
    info["fill"] = best[0] / bound
    stretch = min(MAX_STRETCH, size / max(used, 1.0))
    uv = uv.copy()
    uv[..., 1] *= stretch
    uv /= size
    return np.clip(uv, 0.0, 1.0)
