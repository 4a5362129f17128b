# SPDX-License-Identifier: GPL-3.0-or-later
"""Which corner of the server's result is which corner of the user's object, so that the result's UVs can be copied
per loop. Plain Python (no bpy), so it is tested outside Blender.

A mesh goes to the server through Blender's glTF exporter, which triangulates the polygons and splits vertices
where normals or UVs differ, so the result (kept by the server: keep_mesh) has the object's positions and
triangles but not its vertex or loop numbering. A result triangle is matched to the object's polygon that holds
its three corners (by position); each corner's UV then goes to that polygon's loop at that vertex."""
import math


class MeshMismatch(Exception):
    """The result is not the object's mesh (the server made the shape again): the message says how they differ."""


def tolerance(positions) -> float:
    """How close two positions must be to count as one: a small part of the object's size."""
    if not positions:
        return 1e-6
    lo = [min(p[i] for p in positions) for i in range(3)]
    hi = [max(p[i] for p in positions) for i in range(3)]
    return max(math.dist(lo, hi), 1e-9) * 1e-4


class PointGrid:
    """The object's vertices by position, to find those within `tol` of a point."""

    def __init__(self, positions, tol: float):
        self.positions, self.tol, self.cells = positions, tol, {}
        for i, p in enumerate(positions):
            self.cells.setdefault(self.key(p), []).append(i)

    def key(self, p) -> tuple:
        return tuple(int(math.floor(c / self.tol)) for c in p)

    def near(self, p) -> list:
        kx, ky, kz = self.key(p)
        return [i for dx in (-1, 0, 1) for dy in (-1, 0, 1) for dz in (-1, 0, 1)
                for i in self.cells.get((kx + dx, ky + dy, kz + dz), ())
                if math.dist(self.positions[i], p) <= self.tol]


def loop_uvs(positions, polygons, result_positions, result_polygons, result_uvs, tol: float = None) -> list:
    """The result's UV for every loop of the object.

    positions: the object's vertex positions (world space); polygons: (vertex indices, loop indices) per polygon.
    result_positions: the result's vertex positions (world space); result_polygons: (vertex indices, loop indices)
    per result polygon; result_uvs: (u, v) per result loop. Returns a list indexed by the object's loop index.
    MeshMismatch when the result is not the object's surface (other triangles, or vertices elsewhere)."""
    tol = tolerance(positions) if tol is None else tol
    want = sum(len(v) - 2 for v, _ in polygons)
    got = sum(len(v) - 2 for v, _ in result_polygons)
    if want != got:
        raise MeshMismatch(f"the result has {got} triangles and {len(result_positions)} vertices, the object "
                           f"{want} triangles (once triangulated) and {len(positions)} vertices")
    grid = PointGrid(positions, tol)
    candidates = []
    for i, p in enumerate(result_positions):
        near = grid.near(p)
        if not near:
            raise MeshMismatch(f"the result's vertex {i} at ({p[0]:.4g}, {p[1]:.4g}, {p[2]:.4g}) is not a vertex of "
                               "the object")
        candidates.append(near)
    polys_of = {}
    for f, (verts, _) in enumerate(polygons):
        for v in verts:
            polys_of.setdefault(v, set()).add(f)
    corner_uv = {}                                # (object polygon, object vertex) -> (u, v)
    for verts, loops in result_polygons:
        found = polygon_of(verts, candidates, polys_of, polygons)
        if found is None:
            raise MeshMismatch("a triangle of the result is not part of any polygon of the object (corners at "
                               + ", ".join(f"({result_positions[v][0]:.4g}, {result_positions[v][1]:.4g}, "
                                           f"{result_positions[v][2]:.4g})" for v in verts) + ")")
        f, corners = found
        for vert, loop in zip(corners, loops):
            corner_uv.setdefault((f, vert), tuple(result_uvs[loop]))
    n_loops = 1 + max((max(loops) for _, loops in polygons if loops), default=-1)
    out = [None] * n_loops
    for f, (verts, loops) in enumerate(polygons):
        for v, loop in zip(verts, loops):
            uv = corner_uv.get((f, v))
            if uv is None:
                raise MeshMismatch(f"polygon {f} of the object is not covered by the result's triangles")
            out[loop] = uv
    return out


def polygon_of(verts, candidates, polys_of, polygons):
    """(object polygon, object vertex of each corner) holding the result polygon `verts`, or None."""
    first = set().union(*(polys_of.get(c, set()) for c in candidates[verts[0]]))
    for f in sorted(first):
        members = set(polygons[f][0])
        corners = [next((c for c in candidates[v] if c in members), None) for v in verts]
        if None not in corners and len(set(corners)) == len(corners):
            return f, corners
    return None


def same_uvs(a, b, tol: float = 1e-4) -> bool:
    """Whether two per-loop UV lists are the same layout."""
    return len(a) == len(b) and all(abs(p[0] - q[0]) <= tol and abs(p[1] - q[1]) <= tol for p, q in zip(a, b))
