"""Exact closest points on a triangle mesh for many query points at once (numpy and scipy's k-d tree).

Each triangle is bounded by the sphere about its centroid through its farthest corner. The triangles are grouped by
that radius (the typical ones in one group, the wider ones in groups whose radii lie within a factor), one k-d tree
of centroids per group. A query first takes, per point, the triangle of the nearest typical centroid: its exact
distance bounds the answer. Then, group by group (the widest triangles first, so the bound tightens before the many
typical ones), every centroid within the bound plus the group's largest radius is fetched (one join of the group's
tree with a tree of the points, for points of like bounds together), and a triangle is computed in full only where
its own sphere comes within the point's bound. No triangle that could be closer is skipped, so the result equals a
comparison with every triangle, for points near the surface or far from it, for triangles of any size (a filled
hole's fan, a CAD face); a point far from the surface only meets more candidates.

One triangle's closest point comes from the region of its plane that the point projects into (the corners, the
edges or the inside: Ericson, Real-Time Collision Detection, 5.1.5), two dot products per pair and the rest from
quantities kept per triangle; inside, the distance is the plane's. Slivers, where those dot products lose digits,
are computed as a comparison with every triangle does it (inside the three edges, else the nearest edge).
"""
from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

# The typical group holds every radius up to this times the median; each other group's radii lie within a factor
# (docs/benchmarks/export.md#the-remeshs-speed-on-the-cpu).
GROUP_FIRST = 1.5
GROUP_FACTOR = 1.5
# Pairs computed at once (the temporaries stay in the cache).
PAIR_BLOCK = 131072
# Points handled together. They are fetched in sets of like bounds, the first up to this share of the typical
# radius, each next one up to twice the last. Within a bound of NEAR_REACH typical radii a point meets a few dozen
# centroids at most; further out they are counted first and fetched in pieces of about PAIR_BUDGET pairs (memory).
POINT_BLOCK = 65536
FIRST_BOUND = 0.5
NEAR_REACH = 4.0
PAIR_BUDGET = 2_000_000
# The bound is widened by this share so rounding never drops the triangle that set it.
BOUND_SLACK = 1e-9
# Triangles whose first corner's angle has a squared sine below this (slivers) are computed edge by edge: the
# regions' dot products lose about (1 / that sine) of their digits.
SLIVER = 1e-8


def _share(near, far):
    """near / (near + far) for two non-negative parts (0 where both are 0)."""
    total = near + far
    return np.where(total > 0, near / np.where(total > 0, total, 1.0), 0.0)


class NearestTriangles:
    """Closest points on a fixed set of triangles, the search built once for many queries (module docstring)."""

    def __init__(self, vertices: np.ndarray, tris: np.ndarray):
        self.vertices = np.asarray(vertices, np.float64)
        self.tris = np.asarray(tris, np.int64).reshape(-1, 3)
        if len(self.tris) == 0:
            raise ValueError("NearestTriangles needs at least one triangle")
        corners = self.vertices[self.tris]
        centroids = corners.mean(axis=1)
        radius = np.linalg.norm(corners - centroids[:, None, :], axis=2).max(axis=1)
        first = max(GROUP_FIRST * float(np.median(radius)), 1e-300)
        group = np.ceil(np.log2(np.maximum(radius / first, 1.0)) / np.log2(GROUP_FACTOR)).astype(np.int64)
        # widest first: their few centroids tighten the bound before the many typical ones are fetched
        self.groups = []
        for g in np.unique(group)[::-1]:
            members = np.flatnonzero(group == g)
            self.groups.append((members, cKDTree(centroids[members]), radius[members], float(radius[members].max())))
        a, b, c = corners[:, 0], corners[:, 1], corners[:, 2]
        ab, ac = b - a, c - a
        n = np.cross(ab, ac)
        self.a, self.ab, self.ac, self.n = (np.ascontiguousarray(x.T) for x in (a, ab, ac, n))
        self.d00, self.d01, self.d11 = (ab * ab).sum(1), (ab * ac).sum(1), (ac * ac).sum(1)
        nn = (n * n).sum(1)
        self.sliver = nn <= SLIVER * self.d00 * self.d11
        self.inv_nn = 1.0 / np.where(nn > 0, nn, 1.0)

    def _pairs(self, p: np.ndarray, tri: np.ndarray):
        """Each point of ``p`` [K, 3] against its triangle ``tri`` [K]: (squared distance, v, w, inside); the
        closest point is a + v ab + w ac (inside: the plane's projection)."""
        apx, apy, apz = p[:, 0] - self.a[0][tri], p[:, 1] - self.a[1][tri], p[:, 2] - self.a[2][tri]
        abx, aby, abz = self.ab[0][tri], self.ab[1][tri], self.ab[2][tri]
        acx, acy, acz = self.ac[0][tri], self.ac[1][tri], self.ac[2][tri]
        d00, d01, d11 = self.d00[tri], self.d01[tri], self.d11[tri]
        d1 = abx * apx + aby * apy + abz * apz
        d2 = acx * apx + acy * apy + acz * apz
        # the same dot products from corners b and c: (p - b) = (p - a) - ab, (p - c) = (p - a) - ac
        d3, d4, d5, d6 = d1 - d00, d2 - d01, d1 - d01, d2 - d11
        va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2
        # Ericson's regions in his order (corner a, b, edge ab, corner c, edge ac, edge bc, else the inside),
        # written lowest first so the first that holds is the one kept
        denom = va + vb + vc
        denom = np.where(denom > 0, denom, 1.0)
        v, w = vb / denom, vc / denom
        on = (va <= 0) & (d4 >= d3) & (d5 >= d6)                    # edge bc: b + s (c - b)
        s = _share(d4 - d3, d5 - d6)
        v, w, outside = np.where(on, 1.0 - s, v), np.where(on, s, w), on
        on = (vb <= 0) & (d2 >= 0) & (d6 <= 0)                      # edge ac
        v, w, outside = np.where(on, 0.0, v), np.where(on, _share(d2, -d6), w), outside | on
        on = (d6 >= 0) & (d5 <= d6)                                 # corner c
        v, w, outside = np.where(on, 0.0, v), np.where(on, 1.0, w), outside | on
        on = (vc <= 0) & (d1 >= 0) & (d3 <= 0)                      # edge ab
        v, w, outside = np.where(on, _share(d1, -d3), v), np.where(on, 0.0, w), outside | on
        on = (d3 >= 0) & (d4 <= d3)                                 # corner b
        v, w, outside = np.where(on, 1.0, v), np.where(on, 0.0, w), outside | on
        on = (d1 <= 0) & (d2 <= 0)                                  # corner a
        v, w, outside = np.where(on, 0.0, v), np.where(on, 0.0, w), outside | on
        inside = ~outside
        rx, ry, rz = apx - v * abx - w * acx, apy - v * aby - w * acy, apz - v * abz - w * acz
        plane = apx * self.n[0][tri] + apy * self.n[1][tri] + apz * self.n[2][tri]
        d2_out = np.where(inside, plane * plane * self.inv_nn[tri], rx * rx + ry * ry + rz * rz)
        sliver = np.flatnonzero(self.sliver[tri])
        if len(sliver):
            d2_out[sliver], v[sliver], w[sliver], inside[sliver] = self._slivers(p[sliver], tri[sliver])
        return d2_out, v, w, inside

    def _slivers(self, p, tri):
        """(squared distance, v, w, inside) of slivers, as a comparison with every triangle does it: inside the
        triangle when on the inner side of its three edges in its plane, else the nearest of its edges."""
        a, ab, ac, n = (x.T[tri] for x in (self.a, self.ab, self.ac, self.n))
        nn = np.einsum("ij,ij->i", n, n)
        ap = p - a
        best = np.full(len(p), np.inf)
        bv, bw = np.zeros(len(p)), np.zeros(len(p))
        within = nn > 0
        # each edge as its start's (v, w) plus s times its direction's: ab, bc, ca
        for (v0, w0), (dv, dw) in (((0.0, 0.0), (1.0, 0.0)), ((1.0, 0.0), (-1.0, 1.0)), ((0.0, 1.0), (0.0, -1.0))):
            start = v0 * ab + w0 * ac
            edge = dv * ab + dw * ac
            sp = ap - start
            within &= np.einsum("ij,ij->i", np.cross(edge, sp), n) >= 0
            s = np.clip(np.einsum("ij,ij->i", sp, edge) / np.maximum(np.einsum("ij,ij->i", edge, edge), 1e-300),
                        0.0, 1.0)
            r = sp - s[:, None] * edge
            d2 = np.einsum("ij,ij->i", r, r)
            closer = d2 < best
            best = np.where(closer, d2, best)
            bv, bw = np.where(closer, v0 + s * dv, bv), np.where(closer, w0 + s * dw, bw)
        inv = 1.0 / np.where(within, nn, 1.0)
        t = np.einsum("ij,ij->i", ap, n) * inv
        aq = ap - t[:, None] * n
        bv = np.where(within, np.einsum("ij,ij->i", np.cross(aq, ac), n) * inv, bv)
        bw = np.where(within, np.einsum("ij,ij->i", np.cross(ab, aq), n) * inv, bw)
        return np.where(within, t * t * nn, best), bv, bw, within

    def _pieces(self, p: np.ndarray, rows: np.ndarray, bound: np.ndarray, far: bool):
        """``rows`` in pieces of about ``PAIR_BUDGET`` centroids within reach at most, where ``far``: a point far
        from the surface reaches many (counted in every group, at its ``bound``)."""
        if not far:
            return [rows]
        counts = sum(tree.query_ball_point(p[rows], bound[rows] + widest, return_length=True)
                     for _, tree, _, widest in self.groups)
        piece = np.cumsum(counts) // PAIR_BUDGET
        return [rows[piece == value] for value in np.unique(piece)]

    def _block(self, p: np.ndarray):
        """(triangle, v, w, inside) of the closest triangle to each of the points ``p`` [K, 3]."""
        count = len(p)
        best_d2, best_tri = np.full(count, np.inf), np.zeros(count, np.int64)
        best_v, best_w, best_in = np.zeros(count), np.zeros(count, np.float64), np.zeros(count, bool)

        def fold(rows, tri):
            """Fold pairs (rows of p, any order, and their triangles) into the running best; of equally near
            triangles, the first pair's."""
            for start in range(0, len(rows), PAIR_BLOCK):
                r, t = rows[start:start + PAIR_BLOCK], tri[start:start + PAIR_BLOCK]
                d2, v, w, inside = self._pairs(p[r], t)
                smallest = best_d2.copy()
                np.minimum.at(smallest, r, d2)
                win = np.flatnonzero((d2 == smallest[r]) & (d2 < best_d2[r]))
                first = np.full(count, len(r))
                np.minimum.at(first, r[win], win)
                won = first[first < len(r)]
                at = r[won]
                best_d2[at], best_tri[at], best_v[at], best_w[at], best_in[at] = (
                    d2[won], t[won], v[won], w[won], inside[won])

        # the bound: the triangle of the nearest typical centroid
        members, tree, _, typical = self.groups[-1]
        fold(np.arange(count), members[tree.query(p, k=1)[1]])
        typical = typical if typical > 0 else 1.0
        # the points in sets of like bounds (in steps of two from half the typical radius), each with its own tree
        # for every group's fetch: a bound only shrinks, so a set's largest bound stays an upper bound
        bound = np.sqrt(best_d2) * (1.0 + BOUND_SLACK)
        level = np.floor(np.log2(np.maximum(bound / typical, FIRST_BOUND) / FIRST_BOUND))
        sets = []
        for value in np.unique(level):
            far = FIRST_BOUND * 2.0 ** (value + 1) > NEAR_REACH
            for piece in self._pieces(p, np.flatnonzero(level == value), bound, far):
                sets.append((piece, cKDTree(p[piece])))
        # every triangle whose sphere comes within the bound, the widest group first
        for members, tree, radius, widest in self.groups:
            bound = np.sqrt(best_d2) * (1.0 + BOUND_SLACK) + 1e-300
            for rows, points in sets:
                reach = float(bound[rows].max() + widest) * (1.0 + 1e-12)
                pairs = points.sparse_distance_matrix(tree, reach, output_type="ndarray")
                i, j = rows[pairs["i"]], pairs["j"]
                keep = pairs["v"] - radius[j] <= bound[i]
                fold(i[keep], members[j[keep]])
        return best_tri, best_v, best_w, best_in

    def closest(self, points: np.ndarray):
        """(closest points, triangle index, barycentric weights [N, 3]) of each point."""
        points = np.asarray(points, np.float64).reshape(-1, 3)
        tri, v, w = np.zeros(len(points), np.int64), np.zeros(len(points)), np.zeros(len(points))
        inside = np.zeros(len(points), bool)
        for start in range(0, len(points), POINT_BLOCK):
            part = slice(start, start + POINT_BLOCK)
            tri[part], v[part], w[part], inside[part] = self._block(points[part])
        a, ab, ac, n = (x.T[tri] for x in (self.a, self.ab, self.ac, self.n))
        closest = a + v[:, None] * ab + w[:, None] * ac
        # inside a triangle, the plane's projection (exact where the weights lose digits on a sliver)
        t = np.einsum("ij,ij->i", points - a, n) * self.inv_nn[tri]
        closest = np.where(inside[:, None], points - t[:, None] * n, closest)
        bary = np.clip(np.stack([1.0 - v - w, v, w], axis=1), 0.0, 1.0)
        bary /= np.maximum(bary.sum(axis=1, keepdims=True), 1e-30)
        return closest, tri, bary

    def distances(self, points: np.ndarray) -> np.ndarray:
        """Each point's distance to the triangles."""
        points = np.asarray(points, np.float64).reshape(-1, 3)
        return np.linalg.norm(points - self.closest(points)[0], axis=1)
