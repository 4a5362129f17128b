"""Packing flat charts into one square texture: ``pack_charts`` with ``PACKER`` "bitmap" (the default,
``pack_charts_bitmap``, described before it below: each chart's conservative texel mask placed at the
lowest free spot, holes and concave sides included) or "skyline" (the first packer, described here).
On the realistic objects' outer sheets decimated to the balanced preset's faces (texture 1024, padding
2, 2 CPU cores; ``benchmarks/uv_atlas_study.py``) the bitmap packer raised texel use from 53.3 % to
62.0 % (bunny, 80 charts) and 60.7 % to 67.9 % (nut, 45 charts) and took less time (one or two
layouts instead of four).

Then (2026-11-23, same meshes and options): trying the block positions the coarse FFT search rejects
by only a few blocks at their texel offsets (``BITMAP_NEAR``) raised texel use to 64.4 % (bunny) and
68.7 % (nut); FFT sizes of small primes, the correlation over the filled rows only and the half turns'
spectra from the quarter turns' pay for it: packing 0.45 s vs 0.45 s (bunny) and 0.24 vs 0.29 s
(nut), medians of 10 interleaved runs; no overlaps, no single-triangle charts. Mean over five scales
(0.74-0.82 of the area bound) of the layout's density: bunny 0.629 -> 0.643, nut 0.661 -> 0.681
(``BITMAP_NEAR`` 16: 0.650 / 0.678 at +15-25 % packing time). 70 % is not reached on the bunny: at
fill 0.78 its bodies take 0.644 of the used rectangle and grown by half the padding 0.705 (the
padding alone caps it near 0.9 x that of a perfect packing); the rest, ~26 % of the rectangle, are
holes wider than 9 texels between its jagged charts. Tried and dropped (each within the ±1-3 points
that any change of the greedy order moves a layout, measured as that five-scale mean): 8 base angles
instead of 4 quarter turns (+0-1, 2-3x the time), a finer block grid (b = 3: +0.6; b = 2: +1-2 at
2x; texel-exact b = 1: bunny ~0.65 at ~10x), choosing among turns by contact with placed charts
(-2.6) or by the empty texels left under the chart (+0.6 bunny, -0.3 nut), lowest bottom or lowest
centre of gravity instead of lowest top, several candidate rows per turn, sliding down-right past
steps, other chart orders ("extent" = texels per row plus per column: nut +2, bunny -0.6, torus -10;
kept as an option, ``BITMAP_ORDERS``, the best of the orders at the same scale is kept, one layout
each), the minimum-area box orientation instead of the principal axis (bunny +1, nut -1.3; taken
since, see below), splitting charts that fill less than half their box (-0.2 to -1), and in ``charts``
straighter chart borders (a face moving to the chart it shares the most edge length with: +1, but LSCM
self-overlaps on the bunny cost a second packing round).

Then (2026-11-23, issue 13's 70 %): each chart is turned so that the sides of its smallest enclosing box
(over its convex hull, ``_box_angles``) are horizontal and vertical (``BITMAP_ORIENT`` "box") instead of
its principal axis; the 2-means and diffused borders are polygons of a few long straight runs (the CAD
nut's flat faces: rectangles and trapezoids), which the principal axis left tilted by 10-45° (a square
stood on its corner), so the charts met their neighbours and the texture's edges corner to side. With
``charts.STRAIGHTEN_SWEEPS`` (the border teeth cut off) it raised the texel use, mean over 17 first
scales 0.76-0.84 (texture 1024, padding 2; principal axis / box / axis and straightened / both): the
meshes ``to_glb`` unwrapped on the H100 host nut 0.691 / 0.708 / 0.700 / 0.718, bunny 0.714 / 0.716 /
0.719 / 0.721; the study's outer sheets nut 0.703 / 0.718 / 0.714 / 0.732, bunny 0.723 / 0.730 / 0.729
/ 0.740; the quick cleaned meshes (512) nut 0.618 / 0.661 / 0.626 / 0.667, bunny 0.691 / 0.701 / 0.711
/ 0.717; at 512 and 2048 (five scales 0.78-0.86) +1.1 to +3.3 points on each of the first four. At
the default first scale (0.82 below; 2 cores, medians of 3 interleaved runs, before -> after): the H100
host's nut 0.685 -> 0.729, UV 0.63 -> 0.50 s (its first layout reaches the target: no retry), bunny
0.713 -> 0.714, 0.41 -> 0.415 s (0.80: 0.728; 0.78-0.86: +0.6 points on average); study nut 0.702 ->
0.730, 0.43 -> 0.43 s, bunny 0.719 -> 0.733, 0.46 -> 0.47 s; quick nut 0.621 -> 0.670, bunny 0.707 ->
0.717; no overlaps, no single-triangle chart more. Denser layouts end lower, so the first scale moved
up, 0.80 -> 0.82 (``BITMAP_FIRST_FILL``: a layout of density d ends at 0.82² / d of the texture's
height, inside the band the vertical stretch fills, 1 / 1.15 to 1, for d 0.68-0.77; at 0.80 the study
bunny's first layout ended below it and was packed again, 0.45 -> 0.70 s). The box costs ~10 ms
(qhull per chart), paid by ``chart_masks`` (per edge clipped to the row's band instead of per corner and
crossing: the same masks, ~35 % less time).

Skyline placement of each chart's column profile.

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

__all__ = ["pack_charts", "pack_charts_bitmap", "pack_charts_skyline", "chart_masks"]

MAX_STRETCH = 1.15
PACKER = "bitmap"          # pack_charts's default: "bitmap" (pack_charts_bitmap) or "skyline"
X_STEP = 1                 # candidate columns for a chart's left edge: every X_STEP-th
FIRST_FILL = 0.74          # linear: the first layout tries 0.74² = 55 % of the texture in triangles
BITMAP_ORIENT = "box"      # the bitmap packer's base orientation of a chart (``_orient``): "box" or "axis"
                           # (the principal axis), see the module docstring


def _orient(tri, chart, nchart, how: str = "axis"):
    """Turn each chart so that its principal axis is horizontal (``how`` "axis") or the sides of its
    smallest enclosing box are horizontal and vertical ("box", ``_box_angles``). tri [F,3,2] -> same shape."""
    pts = tri.reshape(-1, 2)
    cc = np.repeat(chart, 3)
    cnt = np.bincount(cc, minlength=nchart).astype(np.float64)
    mean = np.stack([np.bincount(cc, pts[:, k], nchart) for k in range(2)], 1) / np.maximum(cnt, 1)[:, None]
    d = pts - mean[cc]
    if how == "box":
        ang = _box_angles(d, chart, nchart)
    else:
        sxx = np.bincount(cc, d[:, 0] * d[:, 0], nchart)
        syy = np.bincount(cc, d[:, 1] * d[:, 1], nchart)
        sxy = np.bincount(cc, d[:, 0] * d[:, 1], nchart)
        ang = 0.5 * np.arctan2(2 * sxy, sxx - syy)
    c, s = np.cos(-ang)[cc], np.sin(-ang)[cc]
    out = np.stack([c * d[:, 0] - s * d[:, 1], s * d[:, 0] + c * d[:, 1]], 1)
    return out.reshape(-1, 3, 2)


def _box_angles(d, chart, nchart):
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


def pack_charts(tri, chart, size: int, padding: int = 2, attempts: int = 4, info: dict = None,
                packer: str = None):
    """Corner UVs [F,3,2] in [0,1] (v up) for flat charts ``tri`` [F,3,2] (world units) with chart ids
    ``chart`` [F]: ``packer`` "bitmap" (``pack_charts_bitmap``) or "skyline" (``pack_charts_skyline``);
    default ``PACKER``."""
    packer = packer or PACKER
    if packer == "bitmap":
        return pack_charts_bitmap(tri, chart, size, padding, info=info)
    if packer == "skyline":
        return pack_charts_skyline(tri, chart, size, padding, attempts=attempts, info=info)
    raise ValueError(f"unknown packer {packer!r}")


def pack_charts_skyline(tri, chart, size: int, padding: int = 2, attempts: int = 4, info: dict = None):
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


# ------------------------------------------------------------------------------------ bitmap packer
#
# Each chart is rasterised conservatively (every texel its triangles touch: its "body") and grown by
# ``padding`` texels (square dilation). Charts are placed one by one, largest first, each in one of
# four quarter turns, at the position whose top is lowest (then leftmost) where its grown mask touches
# no body placed before: the position search is a correlation of the occupancy with the grown mask,
# done by FFT on a grid of b-texel blocks (b = round(size / BITMAP_GRID); the block masks are
# conservative, so a free block position is a free texel position); the chart is then slid down and
# left texel by texel while it still touches nothing. Unlike the skyline, a chart can drop into a hole
# left under an earlier one and nest into another's concave side. Neighbouring bodies end ``padding``
# texels apart.
#
# Block positions are conservative: a pocket with less than about a block to spare is missed. So the
# block positions whose correlation counts only a few overlapping blocks (<= BITMAP_NEAR), lower than
# the chosen one, are also tried at each of their b x b texel offsets against the texel occupancy
# (the lowest BITMAP_NEAR_TRIES per turn); one that fits and, slid, ends lower wins.
# The FFT runs on sizes of small primes (next_fast_len: pocketfft was 2-3x slower on the old
# 296 x 258 grid), only over the rows that hold anything plus the chart's height (positions above are
# free), and the two half turns' correlations come from the quarter turns' spectra (conjugated: a
# cross-correlation, read at the position itself), so 3 forward transforms per chart instead of 5; the
# masks' forward transforms run their row pass over the mask's rows only. A near position is ruled out
# at once when an occupied texel lies under a full b x b block of the mask (covered at every offset).
# (2026-11-23: these, flatnonzero instead of argwhere and the rest cut the bunny's packing ~25 % at
# the same layouts.)

# threads per FFT: 1 (2-core runner, interleaved medians: 4.1 vs 5.7 ms per chart's transforms on 150 x 270
# blocks, 8.0 vs 8.7 ms on 288 x 270 with 2 threads; small transforms gain nothing from a second thread)
BITMAP_FFT_WORKERS = 1
BITMAP_GRID = 256           # the coarse grid has about this many blocks across (block = round(size / 256))
BITMAP_FIRST_FILL = 0.82    # linear: the first layout tries 0.82² = 67 % of the texture in triangles (0.80 before
                            # the box orientation and straightened borders, module docstring)
BITMAP_HEADROOM = 1.15      # the atlas is searched up to this times the texture's height
BITMAP_NEAR = 8             # block positions overlapping at most this many occupied blocks are tried
BITMAP_NEAR_TRIES = 60      # per turn, the lowest this many of them (each at its b x b texel offsets)
BITMAP_ORDERS = ("box",)    # chart orders tried at the scale found ("box", "extent", "texels"): the best is kept
BITMAP_ATTEMPTS = 3         # layouts at most in the scale search
# Chart placements (charts x layouts) one packing of at most BITMAP_EXTRA_MAX_CHARTS charts may spend:
# those the scale search leaves go to more layouts of the same charts (``BITMAP_EXTRA``, in turn while a
# whole layout fits in what is left), the one with the most texel use is kept. A greedy layout moves
# by +-2-3 points with the order or a 1-2 % change of scale, so with few charts (a small mesh: 21-30
# charts on the quick realistic objects, export_realistic_gpu --quick, texture 512) the best of several
# is worth its time: GLB texel use bunny 0.678 -> 0.706, nut 0.598 -> 0.621. Not for more charts: on the
# 45-chart study nut one more layout took 0.25 s and gained nothing; 76 charts (study bunny) take ~0.4 s.
# They are spent only while the best layout stays below BITMAP_TARGET (2026-11-23: the product nut, 37
# charts at 1024 since the hole patches stopped folding, reached the target in its second layout and
# spent 0.1 s of its 0.75 s unwrap on a third that gained nothing).
BITMAP_PLACEMENTS = 120
# A layout whose texel use (triangle area after the stretch) stays below BITMAP_TARGET is packed again in
# the orders of BITMAP_RETRY, one after the other until one reaches it; the best is kept. (Issue 13 §4 asks
# for 70 %: the meshes to_glb unwrapped on the H100 reach 0.703 / 0.701 in the first layout, so the retry
# costs them nothing; one layout of a 100-chart bunny is ~0.4 s on 2 cores.)
BITMAP_TARGET = 0.70
BITMAP_RETRY = ("texels", "extent")
BITMAP_EXTRA_MAX_CHARTS = 40
# Layouts of the retries and the spare placements made at once, in threads (numpy and scipy's FFTs
# release the GIL): a fixed number, so that which layouts are tried, and so the result, does not depend
# on the machine. The CAD nut's 46 charts (the H100 host's to_glb mesh), its two retries: 0.38 -> 0.18 s
# and 0.22 -> 0.15 s on 2 cores, the same layouts.
BITMAP_PARALLEL = 2
BITMAP_EXTRA = ((1.0, "texels"), (1.0, "extent"), (0.98, "texels"), (1.01, "extent"), (0.98, "extent"),
                (1.01, "texels"), (0.98, "box"), (1.01, "box"))   # (scale over the best one's, order)


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
    np.maximum.at(w, chart, np.floor(x.max(1)).astype(np.int64) + 1)
    np.maximum.at(h, chart, np.floor(y.max(1)).astype(np.int64) + 1)
    w, h = np.maximum(w, 1), np.maximum(h, 1)
    off = np.r_[0, np.cumsum(h * w)]
    # triangles chart by chart: the texel spans below land in one chart's mask after another (the
    # scatter into all the masks' texels stays local: ~15 % faster on the bunny; the same masks)
    order = np.argsort(chart, kind="stable")
    q, chart = q[order], np.asarray(chart)[order]
    x, y = q[..., 0], q[..., 1]
    j0 = np.floor(y.min(1)).astype(np.int64)
    n = np.floor(y.max(1)).astype(np.int64) - j0 + 1
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
        # instead of per corner and crossing: the same spans, ~35 % less time (2026-11-23)
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


def _quarter(m, r):
    """Mask [rows=y, cols=x] turned r quarter turns counter-clockwise in (x, y)."""
    for _ in range(r):
        m = m.T[:, ::-1]
    return m


def _grow(m, padding):
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


def _blocks(m, b, rows, cols):
    """Block-any of mask ``m`` on a rows x cols grid of b x b blocks (float32 for the FFT)."""
    pad = np.zeros((rows * b, cols * b), bool)
    pad[:m.shape[0], :m.shape[1]] = m
    return pad.reshape(rows, b, cols, b).any(axis=(1, 3)).astype(np.float32)


def _full_blocks(g, b):
    """Bool [h - b + 1, w - b + 1]: the b x b block of ``g`` starting there is all set (None when ``g``
    is smaller than a block or has no full block)."""
    h, w = g.shape
    if b <= 1 or h < b or w < b:
        return None
    rows = g[:h - b + 1].copy()
    for d in range(1, b):
        rows &= g[d:h - b + 1 + d]
    out = rows[:, :w - b + 1].copy()
    for d in range(1, b):
        out &= rows[:, d:w - b + 1 + d]
    return out if out.any() else None


def _slide(occ, g, ay, ax):
    """Slide grown mask ``g`` from a free position down, then left, texel by texel, while it touches
    nothing in ``occ``; repeated until it moves no more. Returns (y, x)."""
    hp, wp = g.shape

    def fits(x, y):
        return x >= 0 and y >= 0 and not (occ[y:y + hp, x:x + wp] & g).any()

    moved = True
    while moved:
        moved = False
        while fits(ax, ay - 1):
            ay -= 1
            moved = True
        while fits(ax - 1, ay):
            ax -= 1
            moved = True
    return ay, ax


def _bitmap_masks(q0, chart, nchart, scale):
    """Each chart at ``scale`` moved to its corner and its conservative texel mask: (q, h, w, off, flat)."""
    q = q0 * scale
    mins = np.full((nchart, 2), np.inf)
    np.minimum.at(mins, chart, q.min(1))               # per face first: a third of the scatter
    q = q - mins[chart][:, None, :]
    return (q,) + chart_masks(q, chart, nchart)


def _bitmap_attempt(q0, chart, nchart, scale, size, padding, order="box", masks=None):
    """Pack at ``scale`` (texels per world unit), charts in ``order`` ("box": by the area of their grown
    box; "extent": by texels per row plus per column; "texels": by texel count), largest first:
    (texture texel coordinates [F,3,2], used height) or None when a chart finds no place up to
    BITMAP_HEADROOM times the texture's height. ``masks``: ``_bitmap_masks`` at this scale."""
    from scipy import fft
    q, h, w, off, flat = masks if masks is not None else _bitmap_masks(q0, chart, nchart, scale)
    P = int(padding)
    b = max(1, int(round(size / BITMAP_GRID)))
    W = int(size) + 2 * P                       # atlas array: the texture with P texels around it
    H = int(np.ceil(BITMAP_HEADROOM * size)) + 2 * P
    gw, gh = -(-W // b) + 1, -(-H // b) + 1     # one spare block: no wrap-around in the correlation
    gwf = fft.next_fast_len(gw, True)          # FFT sizes of small primes: pocketfft is 2-3x slower on others
    occ = np.zeros((gh * b, gw * b), bool)
    coarse = np.zeros((gh, gwf), np.float32)
    texels = np.add.reduceat(flat, off[:-1]) if len(flat) else np.zeros(nchart)
    key = {"box": (h + 2 * P) * (w + 2 * P), "extent": texels / h + texels / w, "texels": texels}[order]
    order = np.argsort(-key, kind="stable")
    where = np.zeros((nchart, 3), np.int64)      # atlas x, y of the grown mask's corner, quarter turns
    used = 0                                     # atlas rows up to the highest body texel
    for k in order:
        body = flat[off[k]:off[k + 1]].reshape(h[k], w[k])
        turns = (0, 1, 2, 3) if body.size > 4 else (0,)
        g0 = _grow(body, P)
        grown = [_quarter(g0, r) for r in turns]
        # the correlation only over the rows that hold anything and those a chart resting on them
        # reaches: positions above are free
        rows = [-(-g.shape[0] // b) for g in grown]
        fr = min(fft.next_fast_len(-(-used // b) + 1 + max(rows) + 1, True), gh)
        # transform size: fr, or past the grid's last row (gh = 297 at 1024 is 3^3 x 11) the next fast
        # length (300; rows past gh hold nothing)
        frf = fft.next_fast_len(fr, True)
        nm = min(len(turns), 2)
        spec = np.empty((1 + nm, frf, gwf // 2 + 1), np.complex64)
        occ_rows = np.zeros((frf, gwf), np.float32)
        occ_rows[:fr] = coarse[:fr]
        spec[0] = fft.rfft2(occ_rows, workers=BITMAP_FFT_WORKERS)
        # the masks: only their rows through the row transform, zero rows after them in the column one
        rmax = min(max(rows[:nm]), fr)
        cm = np.zeros((nm, rmax, gwf), np.float32)
        for n in range(nm):
            rr, cl = rows[n], -(-grown[n].shape[1] // b)
            if rr <= fr and cl <= gw:
                cm[n, :rr, :cl] = _blocks(grown[n], b, rr, cl)[::-1, ::-1]
        spec[1:] = fft.fft(fft.rfft(cm, axis=-1, workers=BITMAP_FFT_WORKERS), n=frf, axis=1,
                           workers=BITMAP_FFT_WORKERS)
        prod = np.empty((len(turns),) + spec.shape[1:], spec.dtype)
        np.multiply(spec[1:], spec[0], out=prod[:spec.shape[0] - 1])
        if len(turns) == 4:
            # the half turns from the spectra of turns 0 and 1 (two transforms fewer): the block mask
            # turned by 180° is the reversed one the quarter turn's correlation uses, so its correlation
            # with the occupancy is the cross-correlation with that array, the inverse transform of the
            # spectra's product with one conjugated (hits[n, Y, X] at position Y, X itself; no phase).
            # Its blocks are those of the turned texel mask moved by e = blocks * b - texels (below).
            for n in (0, 1):
                np.conjugate(spec[n + 1], out=prod[2 + n])
                prod[2 + n] *= spec[0]
        hits = fft.irfft2(prod, s=(frf, gwf), workers=BITMAP_FFT_WORKERS)
        # per turn: the window of positions inside the atlas (quarter turns: hits[n, Y, X], position Y, X
        # of the block mask's corner, sits at index Y + rr - 1, X + cl - 1; half turns: at Y, X) and
        # which of them are free
        best = None
        wins = [None] * len(grown)
        for n, g in enumerate(grown):
            hp, wp = g.shape
            rr, cl = rows[n], -(-wp // b)
            ey, ex = (rr * b - hp, cl * b - wp) if n >= 2 else (0, 0)
            ny, nx = min((H - hp - ey) // b + 1, fr - rr + 1), (W - wp - ex) // b + 1
            if ny <= 0 or nx <= 0 or cl > gw:
                continue
            sy, sx = (rr - 1, cl - 1) if n < 2 else (0, 0)
            win = hits[n, sy:sy + ny, sx:sx + nx]
            free = win < 0.5
            wins[n] = (win, free)
            first = int(np.argmax(free))              # row-major: the lowest row with a free position, its leftmost
            yy, xx = divmod(first, nx)
            if not free[yy, xx]:
                continue
            ay, ax = yy * b + ey, xx * b + ex
            if best is None or (ay + hp, ax) < best[0]:
                best = ((ay + hp, ax), ay, ax, n)
        if best is None:
            return None
        _, ay, ax, n = best
        ay, ax = _slide(occ, grown[n], ay, ax)        # down / left texel by texel
        if BITMAP_NEAR:
            top = ay + grown[n].shape[0]
            for m, g in enumerate(grown):
                if wins[m] is None:
                    continue
                hp, wp = g.shape
                rr, cl = rows[m], -(-wp // b)
                ey, ex = (rr * b - hp, cl * b - wp) if m >= 2 else (0, 0)
                ny = min(wins[m][0].shape[0], max(0, (top - hp - ey) // b + 1))
                if ny <= 0:
                    continue
                win, free = wins[m][0][:ny], wins[m][1][:ny]
                # occupied but by at most BITMAP_NEAR blocks (free ones are below 0.5 < BITMAP_NEAR + 0.5)
                # (flatnonzero of the contiguous mask, row-major as argwhere: ~7x faster than argwhere here)
                cand = np.flatnonzero((win < BITMAP_NEAR + 0.5) ^ free)[:BITMAP_NEAR_TRIES].tolist()
                # texels the mask covers at each of the b x b offsets (its b x b blocks that are full,
                # by their first texel): an occupied texel under one of them rules the position out
                # at once (most near positions; the offsets tried below would all fail)
                core = _full_blocks(g, b) if cand else None
                for Y, X in (divmod(i, win.shape[1]) for i in cand):   # each near position's b x b texel offsets
                    y0, x0 = Y * b + ey, X * b + ex
                    if y0 + hp >= top:
                        continue
                    if core is not None:
                        reg = occ[y0 + b - 1:y0 + hp, x0 + b - 1:x0 + wp]
                        if reg.shape == core.shape and (reg & core).any():
                            continue
                    for y in range(y0, y0 + b):
                        if y + hp >= top or y + hp > H:
                            break
                        x = next((x for x in range(X * b + ex, X * b + ex + b)
                                  if x + wp <= W and not (occ[y:y + hp, x:x + wp] & g).any()), None)
                        if x is not None:
                            y2, x2 = _slide(occ, g, y, x)
                            if y2 + hp < top:
                                top, ay, ax, n = y2 + hp, y2, x2, m
                            break
        r = turns[n]
        tb = _quarter(body, r)
        occ[ay + P:ay + P + tb.shape[0], ax + P:ax + P + tb.shape[1]] |= tb
        y0, y1 = (ay + P) // b, -(-(ay + P + tb.shape[0]) // b)
        x0, x1 = (ax + P) // b, -(-(ax + P + tb.shape[1]) // b)
        coarse[y0:y1, x0:x1] = occ[y0 * b:y1 * b, x0 * b:x1 * b].reshape(y1 - y0, b, x1 - x0, b).any(axis=(1, 3))
        where[k] = (ax, ay, r)
        used = max(used, ay + P + tb.shape[0])
    # texture texel coordinates: the chart's points in its grown mask's frame, turned, moved
    uv = np.empty_like(q)
    pts = q + P                                    # body mask at (P, P) inside the grown mask
    for r in range(4):
        sel = where[chart, 2] == r
        if not sel.any():
            continue
        p = pts[sel].reshape(-1, 2)
        rows = np.repeat(h[chart[sel]] + 2 * P, 3).astype(np.float64)
        cols = np.repeat(w[chart[sel]] + 2 * P, 3).astype(np.float64)
        for _ in range(r):
            p = np.stack([rows - p[:, 1], p[:, 0]], 1)
            rows, cols = cols, rows
        shift = where[chart[sel]][:, :2] - P
        uv[sel] = p.reshape(-1, 3, 2) + shift[:, None, :]
    return uv, used - P


def pack_charts_bitmap(tri, chart, size: int, padding: int = 2, attempts: int = None, info: dict = None):
    """``pack_charts`` with the bitmap packer (see above), each chart first turned as ``BITMAP_ORIENT``
    says. The scale starts at ``BITMAP_FIRST_FILL`` of the area bound (or ``info["fill"]``); a layout
    that runs past the texture's top is packed again smaller, one that ends well below it again larger
    (``attempts`` layouts at most, default ``BITMAP_ATTEMPTS``; when none of them fits, smaller again
    until one does); of those that fit, the one with the most texel use after the vertical stretch to
    the top (at most ``MAX_STRETCH``) is kept."""
    chart = np.asarray(chart, np.int64)
    nchart = int(chart.max()) + 1
    attempts = BITMAP_ATTEMPTS if attempts is None else attempts
    q0 = _orient(np.asarray(tri, np.float64), chart, nchart, BITMAP_ORIENT)
    area = 0.5 * np.abs((q0[:, 1, 0] - q0[:, 0, 0]) * (q0[:, 2, 1] - q0[:, 0, 1])
                        - (q0[:, 1, 1] - q0[:, 0, 1]) * (q0[:, 2, 0] - q0[:, 0, 0])).sum()
    bound = size / np.sqrt(max(area, 1e-30))
    info = {} if info is None else info
    s, best, fail = info.get("fill", BITMAP_FIRST_FILL) * bound, None, None

    def texel_use(scale, got):
        """Texel use of a layout at ``scale`` after the vertical stretch; None when it does not fit."""
        if got is None or got[1] > size:
            return None
        return (scale / bound) ** 2 * min(MAX_STRETCH, size / max(got[1], 1.0))

    def best_of(best, tries):
        """``best`` or the layout of ``tries`` [(scale, order, masks)] with the most texel use (an earlier
        one on a tie); the layouts are made in threads (numpy and the FFTs release the GIL)."""
        def make(t):
            return _bitmap_attempt(q0, chart, nchart, t[0], size, padding, t[1], t[2])

        if len(tries) == 1:
            got = [make(tries[0])]
        else:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(len(tries)) as pool:
                got = list(pool.map(make, tries))
        for (scale, _, _), g in zip(tries, got):
            use = texel_use(scale, g)
            if use is not None and use > best[2]:
                best = (scale, g, use)
        return best

    made = {}

    def masks_at(scale):
        """The charts' masks at ``scale``, made once (the retries reuse the scale search's)."""
        if scale not in made:
            made[scale] = _bitmap_masks(q0, chart, nchart, scale)
        return made[scale]

    spent, got = 0, None
    for _ in range(attempts):
        got = _bitmap_attempt(q0, chart, nchart, s, size, padding, BITMAP_ORDERS[0], masks_at(s))
        spent += nchart
        use = texel_use(s, got)
        if use is not None:
            if best is None or use > best[2]:
                best = (s, got, use)
            grow = np.sqrt(size / max(got[1], 1.0))
            if grow * grow <= MAX_STRETCH:          # the vertical stretch fills the rest
                break
            s = s * min(grow, 1.1) * 0.995 if fail is None else 0.5 * (s + fail)
        else:
            fail = s
            over = size / max(got[1], 1.0) if got is not None else 0.85 ** 2
            s = 0.5 * (s + best[0]) if best is not None else s * np.sqrt(over) * 0.99
    while best is None:
        # no layout of the search fitted (tiny textures, very many charts; or a greedy layout's height
        # jumping by a few rows with the scale: the quick cleaned nut's 21 charts at 512 in the box
        # orientation, before the straightened borders, overflowed by 1-2 rows three times and the 0.8 x
        # the scale this took before gave texel use 0.45): smaller by what the last one overflowed, at
        # least 3 %
        over = size / max(got[1], 1.0) if got is not None else 0.85 ** 2
        s *= min(0.97, np.sqrt(over) * 0.99)
        got = _bitmap_attempt(q0, chart, nchart, s, size, padding, BITMAP_ORDERS[0])
        spent += nchart
        use = texel_use(s, got)
        if use is not None:
            best = (s, got, use)
        elif s < 1e-6 * bound:
            raise RuntimeError("chart packing: the charts do not fit the texture")
    if len(BITMAP_ORDERS) > 1:
        masks = masks_at(best[0])                           # the same scale, charts in other orders
        best = best_of(best, [(best[0], order, masks) for order in BITMAP_ORDERS[1:]])
    if best[2] < BITMAP_TARGET and nchart <= BITMAP_EXTRA_MAX_CHARTS:
        # below the target with few charts: spare placements go to more layouts until one reaches it,
        # the best kept
        s0, extra = best[0], list(BITMAP_EXTRA)
        while extra and best[2] < BITMAP_TARGET:
            batch = []                                 # BITMAP_PARALLEL layouts at once, while placements last
            while extra and len(batch) < BITMAP_PARALLEL and spent + nchart <= BITMAP_PLACEMENTS:
                fac, order = extra.pop(0)
                spent += nchart
                batch.append((fac * s0, order, masks_at(fac * s0)))
            if not batch:
                break
            best = best_of(best, batch)
    if best[2] < BITMAP_TARGET and BITMAP_RETRY and nchart > BITMAP_EXTRA_MAX_CHARTS:
        # below the target: one more layout of the same charts at the same scale in another order (a
        # greedy layout moves +-1-2 points with the order), the better kept (with few charts the spare
        # placements above have tried those orders already)
        masks = masks_at(best[0])
        retry = list(BITMAP_RETRY)
        while retry and best[2] < BITMAP_TARGET:
            batch, retry = retry[:BITMAP_PARALLEL], retry[BITMAP_PARALLEL:]
            best = best_of(best, [(best[0], order, masks) for order in batch])
    uv, used = best[1]
    info["fill"] = best[0] / bound
    uv = uv.copy()
    uv[..., 1] *= min(MAX_STRETCH, size / max(used, 1.0))
    uv /= size
    return np.clip(uv, 0.0, 1.0)
