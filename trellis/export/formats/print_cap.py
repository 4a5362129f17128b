"""The cap of a print solid's cut: the section's loops closed by triangles that keep every rim vertex.

The cut leaves outlines with holes (a mug's ring foot, legs): each outline with the holes it contains is bridged into
one ring and triangulated by our own ear clipping, which keeps every rim vertex (mapbox earcut drops collinear points
once holes are bridged, which would leave T-junctions and so an open seam), so the cap's edges are the rim's edges
and the solid stays watertight.
"""
from __future__ import annotations

import numpy as np

__all__ = ["FLAT_SINE", "section_loops", "ring_area", "inside_ring", "section_cap", "triangulate_polygon", "orient",
           "bridge_holes", "sees", "in_wedge", "ear_clip"]

FLAT_SINE = 1e-10     # ear clipping: corners this close to straight count as straight (far above rounding)


def section_loops(points, edges):
    """Closed loops (lists of point ids, in edge order) of the directed edges [K,2] over 2-D ``points``, the
    inside on their left; open chains are left out. Where several edges leave one point (a non-manifold vertex
    on the cut), each arriving edge goes on along the leaving edge next clockwise from where it came: loops that
    touch there stay apart and never cross, and a hole touching its outline joins it into one ring."""
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    tail, head = edges[:, 0], edges[:, 1]
    n_out = np.bincount(tail, minlength=len(points))
    first_out = np.full(len(points), -1, dtype=np.int64)
    first_out[tail[::-1]] = np.arange(len(edges))[::-1]
    succ = np.where(n_out[head] >= 1, first_out[head], -1)
    for vertex in np.nonzero(n_out > 1)[0].tolist():
        leaving = np.nonzero(tail == vertex)[0]
        out_dir = points[head[leaving]] - points[vertex]
        out_angle = np.arctan2(out_dir[:, 1], out_dir[:, 0])
        free = np.ones(len(leaving), dtype=bool)
        for e in np.nonzero(head == vertex)[0].tolist():
            back = points[tail[e]] - points[vertex]
            turn = (np.arctan2(back[1], back[0]) - out_angle) % (2 * np.pi)
            turn = np.where(turn > 0, turn, 2 * np.pi)           # straight back along itself: the last resort
            turn = np.where(free, turn, np.inf)
            k = int(np.argmin(turn))
            succ[e] = leaving[k] if free[k] else -1
            free[k] = False
    seen = np.zeros(len(edges), dtype=bool)
    loops = []
    for start in range(len(edges)):
        walk, at, e = [], {}, start
        while e >= 0 and not seen[e]:
            seen[e] = True
            at[e] = len(walk)
            walk.append(e)
            e = int(succ[e])
        if e >= 0 and e in at and len(walk) - at[e] >= 3:
            loops.append([int(tail[x]) for x in walk[at[e]:]])
    return loops


def ring_area(points, ring) -> float:
    """Signed area of a ring (positive counter-clockwise)."""
    p = points[np.asarray(ring)]
    q = np.roll(p, -1, axis=0)
    return float(0.5 * (p[:, 0] * q[:, 1] - q[:, 0] * p[:, 1]).sum())


def inside_ring(point, points, ring) -> bool:
    """Whether ``point`` lies inside the ring (crossing count of a ray towards +x)."""
    p = points[np.asarray(ring)]
    q = np.roll(p, -1, axis=0)
    x, y = point
    straddle = (p[:, 1] > y) != (q[:, 1] > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        cross_x = p[:, 0] + (y - p[:, 1]) * (q[:, 0] - p[:, 0]) / (q[:, 1] - p[:, 1])
    return bool(np.count_nonzero(straddle & (cross_x > x)) % 2)


def section_cap(points, edges):
    """Triangles [T,3] closing the loops of the directed cap edges [K,2] over 2-D ``points`` [K,2]: outlines
    run counter-clockwise, holes clockwise; each hole goes to the smallest outline around it."""
    loops = section_loops(points, edges)
    used = {(min(a, b), max(a, b)) for a, b in np.asarray(edges, dtype=np.int64).tolist()}
    areas = [ring_area(points, r) for r in loops]
    outers = [i for i, a in enumerate(areas) if a > 0]
    holes_of = {i: [] for i in outers}
    tris = []
    for i, a in enumerate(areas):
        if a > 0:
            continue
        around = [o for o in outers if inside_ring(points[loops[i][0]], points, loops[o])]
        if around:
            holes_of[min(around, key=lambda o: areas[o])].append(loops[i])
        else:
            # A hole in no outline (a section that crosses itself): a fan closes the solid all the same.
            r = loops[i]
            tris.extend((r[0], r[k], r[k + 1]) for k in range(1, len(r) - 1))
    for o in outers:
        tris.extend(triangulate_polygon(points, loops[o], holes_of[o], used).tolist())
    return np.asarray(tris, dtype=np.int64).reshape(-1, 3)


def triangulate_polygon(points, outer, holes=(), used=None):
    """Triangles [T,3] (ids of ``points`` [N,2]) of the polygon with counter-clockwise ``outer`` ring and
    clockwise ``holes`` (lists of ids), counter-clockwise, every ring vertex kept (no T-junction on a ring).
    ``used``: vertex pairs that already are edges (updated): no diagonal repeats one."""
    points = np.asarray(points, dtype=np.float64)
    holes = [list(h) for h in holes if len(h) >= 3]
    ring = bridge_holes(points, list(outer), holes) if holes else list(outer)
    if used is None:
        used = set()
    for r in [list(outer)] + holes:
        used.update((min(a, b), max(a, b)) for a, b in zip(r, r[1:] + r[:1]))
    return ear_clip(points, ring, used)


def orient(ax, ay, bx, by, cx, cy):
    """Twice the signed area of triangle a, b, c (positive counter-clockwise)."""
    return (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)


def bridge_holes(points, outer, holes):
    """One ring of ``outer`` with ``holes`` joined in, each by a two-way cut from its rightmost vertex to a
    vertex it sees (the holes taken right to left, so each sees the ring: Eberly's ear clipping note)."""
    ring = list(outer)
    pending = sorted(holes, key=lambda h: -points[h, 0].max())
    X, Y = points[:, 0], points[:, 1]
    for k, hole in enumerate(pending):
        on_ring = set(ring)
        shared = [i for i, x in enumerate(hole) if x in on_ring]
        if shared:
            # A hole touching the ring at a vertex (a pinch of a non-manifold mesh) joins there, with no bridge.
            m_at = shared[0]
            m, after = hole[m_at], hole[(m_at + 1) % len(hole)]
            at = [j for j, x in enumerate(ring) if x == m]
            pick = next((j for j in at if in_wedge(points, ring[j - 1], m, ring[(j + 1) % len(ring)], after)), at[0])
            ring = ring[:pick + 1] + hole[m_at + 1:] + hole[:m_at] + ring[pick:]
            continue
        m_at = int(np.argmax(X[hole]))
        m = hole[m_at]
        rest = [hole] + pending[k + 1:]
        a = np.array(ring + [x for h in rest for x in h])
        b = np.array(ring[1:] + ring[:1] + [x for h in rest for x in h[1:] + h[:1]])
        r = np.array(ring)
        d2 = (X[r] - X[m]) ** 2 + (Y[r] - Y[m]) ** 2
        order = np.lexsort((d2, X[r] < X[m]))             # right of the hole first, then nearest
        pick = int(order[0])
        for pos in order.tolist():
            p = ring[pos]
            if sees(points, m, p, a, b) and in_wedge(points, ring[pos - 1], p, ring[(pos + 1) % len(ring)], m):
                pick = pos
                break
        ring = ring[:pick + 1] + hole[m_at:] + hole[:m_at] + [m] + ring[pick:]
    return ring


def sees(points, m, p, a, b) -> bool:
    """Whether segment m-p meets none of the edges a[i]-b[i] (touching counts) other than those at m or p."""
    keep = (a != m) & (a != p) & (b != m) & (b != p)
    a, b = a[keep], b[keep]
    (mx, my), (px, py) = points[m], points[p]
    ax, ay, bx, by = points[a, 0], points[a, 1], points[b, 0], points[b, 1]
    d1, d2 = orient(ax, ay, bx, by, mx, my), orient(ax, ay, bx, by, px, py)
    d3, d4 = orient(mx, my, px, py, ax, ay), orient(mx, my, px, py, bx, by)
    hit = (d1 * d2 <= 0) & (d3 * d4 <= 0)
    collinear = (d1 == 0) & (d2 == 0)
    if collinear.any():
        # On one line: they meet only where their spans along m -> p overlap.
        dx, dy = px - mx, py - my
        with np.errstate(divide="ignore", invalid="ignore"):       # m on p: no span, nothing overlaps it
            ta = ((ax - mx) * dx + (ay - my) * dy) / (dx * dx + dy * dy)
            tb = ((bx - mx) * dx + (by - my) * dy) / (dx * dx + dy * dy)
        hit &= ~collinear | ((np.maximum(ta, tb) >= 0) & (np.minimum(ta, tb) <= 1))
    return not hit.any()


def in_wedge(points, a, p, c, m) -> bool:
    """Whether m lies in the inner angle at p between ring edges a -> p -> c (inside on the left)."""
    (ax, ay), (px, py), (cx, cy), (mx, my) = points[[a, p, c, m]].tolist()
    if orient(px, py, cx, cy, ax, ay) > 0:
        return orient(px, py, cx, cy, mx, my) > 0 and orient(px, py, mx, my, ax, ay) > 0
    return not (orient(px, py, ax, ay, mx, my) >= 0 and orient(px, py, mx, my, cx, cy) >= 0)


def ear_clip(points, ring, used):
    """Triangles [T,3] of the counter-clockwise ``ring`` (ids; a bridge's ends appear twice) by ear clipping.

    An ear is a convex corner whose triangle holds no other ring vertex, not even on its sides (such a vertex
    would be a T-junction), and whose new diagonal is no edge yet (``used``, updated); the roundest ear goes
    first, so that no sliver is left over for the end. Where no ear is left (rounding, or a ring that crosses
    itself), the most convex corner with a new diagonal is cut anyway: the cap stays closed, if not flat
    everywhere.
    """
    vid = np.asarray(ring, dtype=np.int64)
    m = len(vid)
    X, Y = points[vid, 0], points[vid, 1]
    ids, xs, ys = vid.tolist(), X.tolist(), Y.tolist()     # Python scalars: the arithmetic below runs per corner
    nxt = list(range(1, m)) + [0]
    prv = [m - 1] + list(range(m - 1))
    alive = np.ones(m, dtype=bool)
    tris = []

    def diagonal_ok(a, c):
        return ids[a] != ids[c] and (min(ids[a], ids[c]), max(ids[a], ids[c])) not in used

    def corner(i):
        """(twice the area of a, i, c; its squared sides a-i, i-c, c-a; whether it turns strictly left)."""
        a, c = prv[i], nxt[i]
        twice = orient(xs[a], ys[a], xs[i], ys[i], xs[c], ys[c])
        ai = (xs[a] - xs[i]) ** 2 + (ys[a] - ys[i]) ** 2
        ic = (xs[c] - xs[i]) ** 2 + (ys[c] - ys[i]) ** 2
        ca = (xs[a] - xs[c]) ** 2 + (ys[a] - ys[c]) ** 2
        return twice, ai, ic, ca, twice > FLAT_SINE * (ai * ic) ** 0.5

    def roundness(i):
        """Twice the ear's area over its squared sides (-inf when i is no ear)."""
        a, c = prv[i], nxt[i]
        twice, ai, ic, ca, convex = corner(i)
        if not convex or not diagonal_ok(a, c):
            return -np.inf
        # Only a corner that is not convex can lie in an ear of a ring that does not cross itself (Meisters).
        test = np.flatnonzero(bent)
        test = test[(vid[test] != vid[a]) & (vid[test] != vid[i]) & (vid[test] != vid[c])]
        tx, ty = X[test], Y[test]
        # On a side counts as inside (it would be a T-junction); "on" within a share of that side's length, so
        # that rounding cannot hide a point on it, however small the features near the cut are.
        inside = ((orient(xs[a], ys[a], xs[i], ys[i], tx, ty) >= -FLAT_SINE * ai)
                  & (orient(xs[i], ys[i], xs[c], ys[c], tx, ty) >= -FLAT_SINE * ic)
                  & (orient(xs[c], ys[c], xs[a], ys[a], tx, ty) >= -FLAT_SINE * ca))
        if inside.any():
            return -np.inf
        return twice / (ai + ic + ca)

    def forced():
        """The most convex live corner whose cut repeats no edge, or -1."""
        nodes = np.nonzero(alive)[0]
        pa, pc = np.array([prv[j] for j in nodes]), np.array([nxt[j] for j in nodes])
        score = orient(X[pa], Y[pa], X[nodes], Y[nodes], X[pc], Y[pc])
        for j in np.argsort(-score).tolist():
            if diagonal_ok(pa[j], pc[j]) and ids[nodes[j]] != ids[pa[j]] and ids[nodes[j]] != ids[pc[j]]:
                return int(nodes[j])
        return -1

    bent = np.array([not corner(i)[4] for i in range(m)], dtype=bool)      # live corners that are not convex
    score = np.array([roundness(i) for i in range(m)])
    count, refreshed = m, False
    while count > 3:
        i = int(np.argmax(score))
        if score[i] == -np.inf:
            if not refreshed:        # a clipped corner may have been the only thing in another ear's way
                score = np.array([roundness(j) if alive[j] else -np.inf for j in range(m)])
                refreshed = True
                continue
            i = forced()
            if i < 0:
                break                # nothing can be cut without repeating an edge: leave it open
        elif not diagonal_ok(prv[i], nxt[i]):
            score[i] = -np.inf       # an earlier cut made this diagonal
            continue
        a, c = prv[i], nxt[i]
        tris.append((ids[a], ids[i], ids[c]))
        used.add((min(ids[a], ids[c]), max(ids[a], ids[c])))
        nxt[a], prv[c] = c, a
        alive[i] = bent[i] = False
        score[i] = -np.inf
        count -= 1
        bent[a], bent[c] = not corner(a)[4], not corner(c)[4]
        score[a], score[c] = roundness(a), roundness(c)
        refreshed = refreshed and score[a] == -np.inf and score[c] == -np.inf
    if count == 3:
        i = int(np.nonzero(alive)[0][0])
        if len({ids[prv[i]], ids[i], ids[nxt[i]]}) == 3:
            tris.append((ids[prv[i]], ids[i], ids[nxt[i]]))
    return np.asarray(tris, dtype=np.int64).reshape(-1, 3)
