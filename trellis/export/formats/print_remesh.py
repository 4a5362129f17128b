"""A print solid rebuilt from a surface that is not one closed body (open, overlapping itself, in many pieces, parts
touching at a point): ``remesh_solid``, from cells.

1. **cells** of size h = the largest extent / ``cells``; the surface is sampled (each face on a lattice at most h / 2
   apart) and every sample marks its cell: the cells the surface passes through;
2. **filled**: every cell the outside cannot reach is inside (the outside: the cells reached from the grid's border
   through unmarked cells, across cell faces);
3. **gaps closed**: a closing by a ball of r cells (grown by r, then shrunk by r) joins parts less than about 2 r
   cells apart and seals cracks; r goes through ``CLOSE_STEPS`` until the largest part holds ``KEEP_SHARE`` of the
   surface;
4. **one body**: the part (cells joined across faces) holding the most surface is kept; the surface of the others
   (samples farther than a cell from it) is what was dropped, reported as a share of the area;
5. **the surface**: the zero level of a field on the cell centres, positive inside, whose size is the exact distance
   to the input surface (so the new surface lies where the old one was, within the cells' resolution), by marching
   tetrahedra on the split of each cube into six (Kuhn's, the same in every cube, so neighbours share their faces'
   diagonals). The field is linear in each tetrahedron and no centre sits on the level, so the result is a closed
   2-manifold: every edge between two faces, no pinched vertex, faces wound outward by a table made once from a
   reference tetrahedron. The cells the surface passes through count as inside, so the new surface lies up to
   half a cell outside the old one; thin walls keep at least a cell's thickness. Where that makes more than
   ``max_faces`` faces, it is made again on fewer cells;
6. **decimated** towards a face count, only as far as it stays one closed body whose vertices and faces keep
   ``SEPARATION`` apart (``decimated_body``, ``well_spaced``: the decimator can put two vertices at one point, which
   a reader of the file merges).
"""
from __future__ import annotations

import itertools

import numpy as np

__all__ = ["CELLS", "MIN_CELLS", "MAX_FACES", "DECIMATE_AGG", "CLOSE_STEPS", "KEEP_SHARE", "NEAREST", "EDGE_T_MIN",
           "SEPARATION", "THIN", "remesh_solid", "decimated_body", "cell_grid", "cells_of", "uncovered_share",
           "well_spaced", "merged_close", "is_one_body", "solid_field",
           "surface_samples", "closed", "kept_part", "surface_distance", "point_triangle_distance", "tetrahedra",
           "tetra_table", "marching_tetrahedra", "TETRA_TABLE", "KUHN"]

CELLS = 96           # cells along the largest extent: 1 % of the size
MIN_CELLS = 48       # the fewest cells a face bound may lower them to
MAX_FACES = 300_000  # faces a rebuilt solid may have (an STL of 15 MB); more cells would make more
DECIMATE_AGG = 3.0   # fast-simplification's aggressiveness (its default 7 pinched thin parts more often)
CLOSE_STEPS = (0, 1, 2, 4)     # closing radii tried in turn, in cells (4 closes gaps up to 8 % of the size)
KEEP_SHARE = 0.95    # the closing stops growing once the kept part holds this share of the surface
NEAREST = 8          # samples whose faces are measured for each distance (the nearest face is among them)
EDGE_T_MIN = 0.01    # a new vertex keeps this share of its edge away from either end: no two vertices coincide
# the least distance, as a share of the largest extent, between two vertices of a print solid and from a face's corner
# to its opposite edge: float32 (an STL's numbers) keeps 6e-8 of a number, so none merges or goes flat in the file
SEPARATION = 1e-6
THIN = 1e-7          # the least height of a face, as a share of the largest extent (a cut's sliver keeps more)


def remesh_solid(vertices, faces, cells: int = CELLS, max_faces: int = MAX_FACES, target_faces: int | None = None,
                 info: dict | None = None):
    """(vertices float64 [V,3], faces int64 [F,3]) of one closed, outward-wound body rebuilt from the surface
    (module doc), of at most about ``max_faces`` faces (fewer cells where ``cells`` would make more), decimated
    towards ``target_faces`` where that keeps it one body (``decimated_body``). ``info``, when a dict, gets
    cell_size, close_cells, parts_dropped and area_dropped_share."""
    v = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if len(f) == 0:
        raise ValueError("cannot make a solid of a mesh without faces")
    cells = int(cells)
    while True:
        done = {}
        out_v, out_f = marching_tetrahedra(*solid_field(v, f, cells, done))
        # The face count grows about with the square of the cells (not exactly: the closing differs).
        fewer = max(MIN_CELLS, min(cells - 8, int(cells * (0.95 * max_faces / max(len(out_f), 1)) ** 0.5)))
        if len(out_f) <= max_faces or fewer >= cells:
            break
        cells = fewer
    if target_faces is not None and len(out_f) > target_faces:
        out_v, out_f = decimated_body(out_v, out_f, int(target_faces))
    if info is not None:
        info.update(done)
    return out_v, out_f


def decimated_body(v, f, target: int):
    """(``v``, ``f``) decimated (fast-simplification, mildly: aggressiveness ``DECIMATE_AGG``) to ``target`` faces,
    or to twice, four times ... as many where fewer would no longer be one closed body (a collapse across a thin
    part pinches it: the decimator does not test the link condition); as they are where no such count is left."""
    import fast_simplification

    while target < 0.8 * len(f):
        dv, df = fast_simplification.simplify(v, f.astype(np.int32), target_count=target, agg=DECIMATE_AGG)
        dv, df = np.asarray(dv, dtype=np.float64), np.asarray(df, dtype=np.int64).reshape(-1, 3)
        dv, df = merged_close(dv, df)           # the decimator may leave two vertices (all but) at one point
        if is_one_body(dv, df) and well_spaced(dv, df):
            return dv, df
        target *= 2
    return v, f


def solid_field(v, f, cells: int, info: dict):
    """(field, origin, h) for ``marching_tetrahedra``: steps 1-4 of the module doc on ``cells`` cells and the signed
    distance of step 5; ``info`` gets cell_size, close_cells, parts_dropped and area_dropped_share."""
    from scipy import ndimage

    origin, h, shape = cell_grid(v[f.reshape(-1)], cells)
    points, face_of, weight = surface_samples(v, f, h / 2)
    cell = cells_of(points, origin, h, shape)
    marked = np.zeros(shape, dtype=bool)
    marked[tuple(cell.T)] = True
    inside = ndimage.binary_fill_holes(marked)
    outside_distance = None
    best = None
    for r in CLOSE_STEPS:
        if r:
            if outside_distance is None:
                outside_distance = ndimage.distance_transform_edt(~inside)
            solid = closed(outside_distance <= r, inside, r)
        else:
            solid = inside
        part, share, parts = kept_part(solid, cell, weight)
        if best is None or share > best[1] + 1e-9:
            best = (part, share, r, parts)
        if share >= KEEP_SHARE:
            break
    part, _, r, parts = best
    full = np.ones((3, 3, 3), dtype=bool)
    near = ndimage.binary_dilation(part, structure=full)
    info.update(cell_size=h, close_cells=r, parts_dropped=parts - 1,
                area_dropped_share=float(weight[~near[tuple(cell.T)]].sum() / weight.sum()))
    # Only cells beside the other side's need their distance: the level passes between them.
    at = np.argwhere(near & ~ndimage.binary_erosion(part, structure=full))
    dist = surface_distance(origin + at * h, v, f, points, face_of)
    field = np.where(part, h, -h)
    field[tuple(at.T)] = np.where(part[tuple(at.T)], 1.0, -1.0) * np.maximum(dist, 1e-6 * h)
    return field, origin, h


def cell_grid(points, cells: int):
    """(origin, cell size h, grid shape) of cells around ``points``: ``cells`` along their largest extent, with a
    border wider than the largest closing, so that the border cells are outside."""
    lo, hi = points.min(0), points.max(0)
    extent = float((hi - lo).max())
    if not np.isfinite(extent) or extent <= 0:
        raise ValueError("cannot make a solid of a mesh with no extent")
    h = extent / int(cells)
    pad = max(CLOSE_STEPS) + 2
    return lo - pad * h, h, tuple((np.ceil((hi - lo) / h).astype(np.int64) + 1 + 2 * pad).tolist())


def cells_of(points, origin, h: float, shape):
    """[N,3] the cell (centres at origin + index x h) each point lies in."""
    return np.clip(np.rint((points - origin) / h).astype(np.int64), 0, np.array(shape) - 1)


def uncovered_share(solid_v, solid_f, v, f, cells: int = CELLS) -> float:
    """The share of the area of the surface (``v``, ``f``) farther than about a cell from the solid that the
    closed (``solid_v``, ``solid_f``) encloses: what a print of that solid leaves out of the surface."""
    from scipy import ndimage

    origin, h, shape = cell_grid(np.concatenate([v[f.reshape(-1)], solid_v]), cells)
    marked = np.zeros(shape, dtype=bool)
    marked[tuple(cells_of(surface_samples(solid_v, solid_f, h / 2)[0], origin, h, shape).T)] = True
    near = ndimage.binary_dilation(ndimage.binary_fill_holes(marked), structure=np.ones((3, 3, 3), dtype=bool))
    points, _, weight = surface_samples(v, f, h / 2)
    covered = near[tuple(cells_of(points, origin, h, shape).T)]
    return float(weight[~covered].sum() / weight.sum())


def well_spaced(v, f, share: float = SEPARATION, thin: float = THIN) -> bool:
    """Whether no two vertices of (``v``, ``f``) lie within ``share`` of its largest extent and no face is thinner
    than ``thin`` of it (its smallest height): a reader that merges equal points (an STL's float32 ones) sees the
    same faces, none of them without area."""
    from scipy.spatial import cKDTree

    v = np.asarray(v, dtype=np.float64)
    f = np.asarray(f, dtype=np.int64).reshape(-1, 3)
    if len(f) == 0:
        return False
    eps = share * float(np.ptp(v[f.reshape(-1)], axis=0).max())
    if not eps > 0 or len(cKDTree(v).query_pairs(eps, output_type="ndarray")):
        return False
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    longest = np.maximum(np.maximum(np.linalg.norm(b - a, axis=1), np.linalg.norm(c - b, axis=1)),
                         np.linalg.norm(a - c, axis=1))
    return bool((np.linalg.norm(np.cross(b - a, c - a), axis=1) > (thin / share) * eps * longest).all())


def merged_close(v, f, share: float = SEPARATION):
    """(vertices, faces) of (``v``, ``f``) with the vertices within ``share`` of its largest extent of each other
    merged into one (the first's position) and the faces that lost a corner so dropped: what a reader merging
    equal points would make of them, done before it."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    from ..arrays import drop_unreferenced

    v = np.asarray(v, dtype=np.float64)
    f = np.asarray(f, dtype=np.int64).reshape(-1, 3)
    eps = share * float(np.ptp(v[f.reshape(-1)], axis=0).max()) if len(f) else 0.0
    pairs = cKDTree(v).query_pairs(eps, output_type="ndarray") if eps > 0 else np.zeros((0, 2), np.int64)
    if len(pairs) == 0:
        return v, f
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(len(v), len(v)))
    label = connected_components(graph, directed=False)[1]
    first = np.full(label.max() + 1, len(v), dtype=np.int64)
    np.minimum.at(first, label, np.arange(len(v)))
    g = first[label][f]
    keep = (g[:, 0] != g[:, 1]) & (g[:, 1] != g[:, 2]) & (g[:, 2] != g[:, 0])
    return drop_unreferenced(v, g[keep])


def is_one_body(v, f) -> bool:
    """Whether (``v``, ``f``) is one closed body: every edge between two faces wound against each other, the faces
    one piece across their edges, one fan of faces around every vertex (no two parts touching at a point), and a
    positive volume."""
    import trimesh

    from ..lods import several_fans
    from ..mesh_graph import components, edges

    if len(f) == 0:
        return False
    mesh = trimesh.Trimesh(vertices=v, faces=f, process=False)
    if not (mesh.is_watertight and mesh.is_winding_consistent) or several_fans(f, len(v)).any():
        return False
    used, index = np.unique(f, return_inverse=True)
    edge = edges(index.reshape(-1, 3), len(used))[1]
    return components(len(used), edge[:, 0], edge[:, 1])[0] == 1 and mesh.volume > 0


def surface_samples(v, f, spacing: float):
    """(points [N,3], face of each [N], area each stands for [N]): every face on a barycentric lattice whose
    neighbouring points are at most ``spacing`` apart (its corners included)."""
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    longest = np.maximum(np.maximum(np.linalg.norm(b - a, axis=1), np.linalg.norm(c - b, axis=1)),
                         np.linalg.norm(a - c, axis=1))
    steps = np.maximum(1, np.ceil(longest / spacing)).astype(np.int64)
    area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    points, faces, weights = [], [], []
    for n in np.unique(steps).tolist():
        which = np.nonzero(steps == n)[0]
        i, j = np.array([(i, j) for i in range(n + 1) for j in range(n + 1 - i)], dtype=np.float64).T / n
        wa, wb, wc = 1.0 - i - j, i, j
        p = (wa[None, :, None] * a[which, None] + wb[None, :, None] * b[which, None]
             + wc[None, :, None] * c[which, None])
        points.append(p.reshape(-1, 3))
        faces.append(np.repeat(which, len(i)))
        weights.append(np.repeat(area[which] / len(i), len(i)))
    return np.concatenate(points), np.concatenate(faces), np.concatenate(weights)


def closed(grown, solid, r: int):
    """``solid`` closed by a ball of radius ``r`` cells: ``grown`` (``solid`` grown by it) shrunk by it, the
    solid's own cells kept and enclosed cavities filled."""
    from scipy import ndimage

    shrunk = ndimage.distance_transform_edt(grown) > r
    return ndimage.binary_fill_holes(shrunk | solid)


def kept_part(solid, cell, weight):
    """(the part of ``solid`` (cells joined across faces) holding the most surface samples, that share of their
    ``weight``, the number of parts); samples in ``cell`` [N,3]."""
    from scipy import ndimage

    labels, count = ndimage.label(solid)
    if count == 0:
        return solid, 0.0, 0
    held = np.bincount(labels[tuple(cell.T)], weight, minlength=count + 1)
    held[0] = 0.0
    if held.max() <= 0:                    # no sample in any part: the largest by volume
        held = np.bincount(labels.reshape(-1), minlength=count + 1).astype(np.float64)
        held[0] = 0.0
        return labels == int(np.argmax(held)), 0.0, count
    best = int(np.argmax(held))
    return labels == best, float(held[best] / weight.sum()), count


def surface_distance(query, v, f, points, face_of, nearest: int = NEAREST):
    """Distance [Q] from each ``query`` point to the surface: the least exact distance to the faces of its
    ``nearest`` nearest samples."""
    from scipy.spatial import cKDTree

    out = np.empty(len(query))
    if len(query) == 0:
        return out
    k = min(nearest, len(points))
    tree = cKDTree(points)
    for start in range(0, len(query), 65536):
        q = query[start:start + 65536]
        _, idx = tree.query(q, k=k)
        tri = f[face_of[np.asarray(idx).reshape(len(q), k)]].reshape(-1, 3)
        d = point_triangle_distance(np.repeat(q, k, axis=0), v[tri[:, 0]], v[tri[:, 1]], v[tri[:, 2]])
        out[start:start + len(q)] = d.reshape(-1, k).min(1)
    return out


def point_triangle_distance(p, a, b, c):
    """Exact distance [N] from points ``p`` [N,3] to triangles (a, b, c) [N,3] each: to the plane where the point
    projects inside the triangle, else to the nearest of its sides (a degenerate triangle: its sides)."""
    ab, ac = b - a, c - a
    n = np.cross(ab, ac)
    nn = np.einsum("ij,ij->i", n, n)
    flat = nn > 1e-300
    inside = flat.copy()
    for x, y in ((a, b), (b, c), (c, a)):          # the projection is on the inner side of every edge
        inside &= np.einsum("ij,ij->i", np.cross(y - x, p - x), n) >= 0
    plane = np.abs(np.einsum("ij,ij->i", p - a, n)) / np.sqrt(np.where(flat, nn, 1.0))

    def to_side(x, y):
        d = y - x
        t = np.clip(np.einsum("ij,ij->i", p - x, d) / np.maximum(np.einsum("ij,ij->i", d, d), 1e-300), 0.0, 1.0)
        return np.linalg.norm(p - x - t[:, None] * d, axis=1)

    sides = np.minimum(np.minimum(to_side(a, b), to_side(b, c)), to_side(c, a))
    return np.where(inside, plane, sides)


# ------------------------------------------------------------------------------------------ marching tetrahedra

def tetrahedra():
    """The six tetrahedra [6,4,3] (corner offsets in a unit cube) of Kuhn's split, each wound with positive volume:
    every one runs from corner (0,0,0) to (1,1,1) along the axes in one of their six orders."""
    out = []
    for order in itertools.permutations(range(3)):
        path = [np.zeros(3, dtype=np.int64)]
        for axis in order:
            path.append(path[-1] + np.eye(3, dtype=np.int64)[axis])
        tet = np.stack(path)
        if np.linalg.det((tet[1:] - tet[0]).astype(np.float64)) < 0:
            tet = tet[[0, 2, 1, 3]]
        out.append(tet)
    return np.stack(out)


def tetra_table():
    """[16] lists of triangles, each three edges (pairs of corner numbers), of a positively wound tetrahedron whose
    corners k with bit k of the index set are inside, wound so that the faces look outward (away from the inside).
    Made on a reference tetrahedron, where the level crosses each edge at its middle (the order around the
    polygon and its side do not depend on where it crosses)."""
    ref = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float64)
    table = []
    for code in range(16):
        ins = [k for k in range(4) if code >> k & 1]
        outs = [k for k in range(4) if not code >> k & 1]
        if not ins or not outs:
            table.append([])
            continue
        edges = [(i, o) for i in ins for o in outs]
        if len(edges) == 4:                         # two inside, two out: a quad, consecutive edges share a corner
            (i1, i2), (o1, o2) = ins, outs
            edges = [(i1, o1), (i1, o2), (i2, o2), (i2, o1)]
        mid = np.array([(ref[i] + ref[o]) / 2 for i, o in edges])
        inward = ref[ins].mean(0) - ref[outs].mean(0)
        if np.dot(np.cross(mid[1] - mid[0], mid[2] - mid[0]), inward) > 0:
            edges = edges[::-1]
        table.append([edges[0:3]] + ([[edges[0], edges[2], edges[3]]] if len(edges) == 4 else []))
    return table


TETRA_TABLE = tetra_table()
KUHN = tetrahedra()


def marching_tetrahedra(field, origin, h: float):
    """(vertices [V,3], faces [F,3]) of the zero level of ``field`` [X,Y,Z] (positive inside, no value 0) sampled at
    ``origin`` + index x ``h``, faces wound outward; the border of the grid must be outside."""
    field = np.asarray(field, dtype=np.float64)
    shape = np.array(field.shape)
    pos = field > 0
    n = shape - 1
    views = [pos[dx:dx + n[0], dy:dy + n[1], dz:dz + n[2]] for dx in (0, 1) for dy in (0, 1) for dz in (0, 1)]
    mixed = np.logical_or.reduce(views) & ~np.logical_and.reduce(views)
    cubes = np.argwhere(mixed)
    flat = field.reshape(-1)
    strides = np.array([shape[1] * shape[2], shape[2], 1], dtype=np.int64)
    keys = []
    for tet in KUHN:
        ids = (cubes[:, None, :] + tet[None]) @ strides                      # [C,4] grid points
        code = (flat[ids] > 0) @ (1 << np.arange(4))
        for c in np.unique(code).tolist():
            rows = ids[code == c]
            for tri in TETRA_TABLE[c]:
                ends = np.stack([np.stack([rows[:, i], rows[:, o]], 1) for i, o in tri], 1)     # [T,3,2]
                keys.append(ends)
    if not keys:
        return np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64)
    ends = np.concatenate(keys)                                              # [T,3,2]: (inside, outside) points
    total = np.int64(flat.size)
    key = ends.min(2) * total + ends.max(2)
    uniq, faces = np.unique(key, return_inverse=True)
    a, b = uniq // total, uniq % total
    fa, fb = flat[a], flat[b]
    t = np.clip(fa / (fa - fb), EDGE_T_MIN, 1.0 - EDGE_T_MIN)
    pa = np.stack(np.unravel_index(a, field.shape), 1) * h + origin
    pb = np.stack(np.unravel_index(b, field.shape), 1) * h + origin
    return pa + t[:, None] * (pb - pa), faces.reshape(-1, 3).astype(np.int64)
