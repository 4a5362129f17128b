"""Flat charts packed into one square texture (``pack_charts``): each chart's conservative texel mask placed at
the lowest free spot, holes and concave sides included.

Each chart is rasterised conservatively (every texel its triangles touch: its "body") and grown by ``padding``
texels. Charts are placed one by one, largest first, each in one of four quarter turns, at the position whose
top is lowest (then leftmost) where its grown mask touches no body placed before: the position search is a
correlation of the occupancy with the grown mask, done by FFT on a grid of b-texel blocks (b = round(size /
BITMAP_GRID); the block masks are conservative, so a free block position is a free texel position); the
chart is then slid down and left texel by texel while it still touches nothing. Block positions that the
coarse search rejects by only a few blocks (``BITMAP_NEAR``) are also tried at their texel offsets, since a
pocket with less than a block to spare is otherwise missed. Neighbouring bodies end ``padding`` texels apart.

The scale (texels per world unit, the same for every chart) is searched from ``BITMAP_FIRST_FILL`` of the area
bound; the layout that fits is stretched vertically to the texture's top (at most ``MAX_STRETCH``), as xatlas
does with its atlas size. The tuning behind the constants: docs/benchmarks/export.md#chart-packing.
"""
from __future__ import annotations

import numpy as np

from ...core.callbacks import CancelCheck, check
from .. import processes
from ...core.concurrency import thread_pool
from .masks import chart_masks, grow_mask
from .orient import orient_charts
from ..rows import block_any, row_min

__all__ = ["pack_charts", "bitmap_layout", "bitmap_masks", "MAX_STRETCH", "BITMAP_ORIENT", "BITMAP_FIRST_FILL",
           "BITMAP_TARGET", "PACK_MAX_SIZE"]

MAX_STRETCH = 1.15          # a layout is stretched vertically to the texture's top by at most this
BITMAP_ORIENT = "box"       # each chart's base orientation (``orient.orient_charts``): "box" or "axis"
# threads per FFT (the same layouts whatever the count): a second one helps where cores are spare, not on two
BITMAP_FFT_WORKERS = 2 if processes.usable_cores() >= 4 else 1
BITMAP_GRID = 256           # the coarse grid has about this many blocks across (block = round(size / 256))
BITMAP_FIRST_FILL = 0.82    # linear: the first layout tries 0.82² = 67 % of the texture in triangles
BITMAP_HEADROOM = 1.15      # the atlas is searched up to this times the texture's height
BITMAP_NEAR = 8             # block positions overlapping at most this many occupied blocks are tried
BITMAP_NEAR_TRIES = 60      # per turn, the lowest this many of them (each at its b x b texel offsets)
BITMAP_ORDERS = ("box",)    # chart orders tried at the scale found ("box", "extent", "texels"): the best is kept
BITMAP_ATTEMPTS = 3         # layouts at most in the scale search
# Chart placements (charts x layouts) one packing of at most BITMAP_EXTRA_MAX_CHARTS charts may spend on more
# layouts (``BITMAP_EXTRA``) while it stays below BITMAP_TARGET: a greedy layout moves by a few points with
# the order or the scale, which is worth trying with few charts only.
BITMAP_PLACEMENTS = 120
# A layout whose texel use (triangle area after the stretch) stays below this is packed again in the orders
# of BITMAP_RETRY until one reaches it; the best is kept.
BITMAP_TARGET = 0.70
BITMAP_RETRY = ("texels", "extent")
BITMAP_EXTRA_MAX_CHARTS = 40
# Layouts of the retries made at once, in threads (numpy's and scipy's FFTs release the GIL): a fixed number,
# so that which layouts are tried, and so the result, does not depend on the machine.
BITMAP_PARALLEL = 2
BITMAP_EXTRA = ((1.0, "texels"), (1.0, "extent"), (0.98, "texels"), (1.01, "extent"), (0.98, "extent"),
                (1.01, "texels"), (0.98, "box"), (1.01, "box"))   # (scale over the best one's, order)
# Textures larger than this are packed at size / k (k a power of two) with ceil(padding / k) and scaled up: each
# coarse texel mask covers the fine one, so nothing overlaps and charts stay >= padding apart; the charts' texel use
# is that of a PACK_MAX_SIZE texture (within a point), with k² fewer texels searched.
PACK_MAX_SIZE = 2048


def _quarter(m, r):
    """Mask [rows=y, cols=x] turned r quarter turns counter-clockwise in (x, y)."""
    for _ in range(r):
        m = m.T[:, ::-1]
    return m


def _blocks(m, b, rows, cols):
    """Block-any of mask ``m`` on a rows x cols grid of b x b blocks (float32 for the FFT)."""
    pad = np.zeros((rows * b, cols * b), bool)
    pad[:m.shape[0], :m.shape[1]] = m
    return block_any(pad, b).astype(np.float32)


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


def edge_texels(g):
    """(rows, cols) of the set texels of mask ``g`` with an unset (or outside) 4-neighbour."""
    inner = np.zeros_like(g)
    inner[1:-1, 1:-1] = g[1:-1, 1:-1] & g[:-2, 1:-1] & g[2:, 1:-1] & g[1:-1, :-2] & g[1:-1, 2:]
    return np.nonzero(g & ~inner)


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


def bitmap_masks(q0, chart, nchart, scale):
    """Each chart at ``scale`` moved to its corner and its conservative texel mask: (q, h, w, off, flat)."""
    q = q0 * scale
    mins = np.full((nchart, 2), np.inf)
    np.minimum.at(mins, chart, row_min(q))               # per face first: a third of the scatter
    q = q - mins[chart][:, None, :]
    return (q,) + chart_masks(q, chart, nchart)


def bitmap_layout(q0, chart, nchart, scale, size, padding, order="box", masks=None, cancel: CancelCheck = None):
    """Pack at ``scale`` (texels per world unit), charts in ``order`` ("box": by the area of their grown
    box; "extent": by texels per row plus per column; "texels": by texel count), largest first:
    (texture texel coordinates [F,3,2], used height) or None when a chart finds no place up to
    BITMAP_HEADROOM times the texture's height. ``masks``: ``bitmap_masks`` at this scale. ``cancel`` is checked
    per chart placed."""
    from scipy import fft
    q, h, w, off, flat = masks if masks is not None else bitmap_masks(q0, chart, nchart, scale)
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
        check(cancel)
        body = flat[off[k]:off[k + 1]].reshape(h[k], w[k])
        turns = (0, 1, 2, 3) if body.size > 4 else (0,)
        g0 = grow_mask(body, P)
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
                # (flatnonzero of the contiguous mask: row-major as argwhere, and much faster)
                cand = np.flatnonzero((win < BITMAP_NEAR + 0.5) ^ free)[:BITMAP_NEAR_TRIES].tolist()
                # texels the mask covers at each of the b x b offsets (its b x b blocks that are full,
                # by their first texel): an occupied texel under one of them rules the position out
                # at once (most near positions; the offsets tried below would all fail)
                core = _full_blocks(g, b) if cand else None
                ys, xs = edge_texels(g) if cand else (None, None)
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
                        # the mask's edge first: most offsets touch a neighbour there, and its few texels say so
                        # at once (an overlap on the edge is an overlap, so what passes is tested whole)
                        x = next((x for x in range(X * b + ex, X * b + ex + b)
                                  if x + wp <= W and not occ[ys + y, xs + x].any()
                                  and not (occ[y:y + hp, x:x + wp] & g).any()), None)
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
        coarse[y0:y1, x0:x1] = block_any(occ[y0 * b:y1 * b, x0 * b:x1 * b], b)
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


def pack_charts(tri, chart, size: int, padding: int = 2, attempts: int = None, info: dict = None,
                cancel: CancelCheck = None):
    """Corner UVs [F,3,2] in [0,1] (v up) for flat charts ``tri`` [F,3,2] (world units) with chart ids ``chart``
    [F], packed into a ``size``² texture with ``padding`` texels between charts, each chart first turned as
    ``BITMAP_ORIENT`` says. The scale starts at ``BITMAP_FIRST_FILL`` of the area bound (or ``info["fill"]``); a layout
    that runs past the texture's top is packed again smaller, one that ends well below it again larger
    (``attempts`` layouts at most, default ``BITMAP_ATTEMPTS``; when none of them fits, smaller again
    until one does); of those that fit, the one with the most texel use after the vertical stretch to
    the top (at most ``MAX_STRETCH``) is kept. ``cancel`` is checked per chart placed."""
    k = 1
    while PACK_MAX_SIZE and size // (2 * k) >= PACK_MAX_SIZE and size % (2 * k) == 0:
        k *= 2
    if k > 1:           # UVs are fractions of the texture: the coarse layout's serve the full size as they are
        return pack_charts(tri, chart, size // k, -(-int(padding) // k), attempts, info, cancel)
    chart = np.asarray(chart, np.int64)
    nchart = int(chart.max()) + 1
    attempts = BITMAP_ATTEMPTS if attempts is None else attempts
    q0 = orient_charts(np.asarray(tri, np.float64), chart, nchart, BITMAP_ORIENT)
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
            return bitmap_layout(q0, chart, nchart, t[0], size, padding, t[1], t[2], cancel)

        if len(tries) == 1:
            got = [make(tries[0])]
        else:
            with thread_pool(len(tries), "trellis-pack") as pool:
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
            made[scale] = bitmap_masks(q0, chart, nchart, scale)
        return made[scale]

    spent, got = 0, None
    for _ in range(attempts):
        got = bitmap_layout(q0, chart, nchart, s, size, padding, BITMAP_ORDERS[0], masks_at(s), cancel)
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
        # jumping by a few rows with the scale): smaller by what the last one overflowed, at least 3 %
        over = size / max(got[1], 1.0) if got is not None else 0.85 ** 2
        s *= min(0.97, np.sqrt(over) * 0.99)
        got = bitmap_layout(q0, chart, nchart, s, size, padding, BITMAP_ORDERS[0], None, cancel)
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
