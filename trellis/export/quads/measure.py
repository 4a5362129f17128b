"""What a quad remesh made, measured: quad share, faces made vs asked, non-manifold and boundary edges, holes, and the
Hausdorff distance to the source as a share of its bounding-box diagonal; warnings where it falls short."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

# A target missed by more than this share is reported.
TARGET_TOLERANCE = 0.10
# Triangles whose centroids are nearest to a query point, tried first for its closest point.
CANDIDATES = 16
# Triangles reaching further than this many times the median from their centroid are split for the search.
SPLIT_RATIO = 2.0
MAX_PIECES = 400_000
# Point-candidate pairs computed at once (memory).
CHUNK = 400_000


@dataclass(frozen=True)
class QuadReport:
    faces_asked: int
    faces_made: int
    quads: int
    triangles: int
    non_manifold_edges: int
    boundary_edges: int
    source_boundary_edges: int
    hausdorff: float            # share of the source's bounding-box diagonal (over sampled points of both)
    seconds: float
    holes: int = 0              # open boundary loops of the result (``hole_count``)
    warnings: list[str] = field(default_factory=list)

    @property
    def quad_share(self) -> float:
        return self.quads / self.faces_made if self.faces_made else 0.0

    @property
    def target_miss(self) -> float:
        return abs(self.faces_made - self.faces_asked) / max(self.faces_asked, 1)

    def as_dict(self) -> dict:
        return {"faces_asked": self.faces_asked, "faces_made": self.faces_made, "quads": self.quads,
                "triangles": self.triangles, "quad_share": round(self.quad_share, 4),
                "non_manifold_edges": self.non_manifold_edges, "boundary_edges": self.boundary_edges,
                "holes": self.holes, "hausdorff": round(self.hausdorff, 6), "seconds": round(self.seconds, 3),
                "warnings": list(self.warnings)}


def polygon_edges(faces: np.ndarray) -> np.ndarray:
    """Undirected edges (sorted pairs), one row per face side; ``faces`` (F, 3) or (F, 4) with -1 for a triangle."""
    faces = np.asarray(faces, np.int64)
    if faces.shape[1] == 3:
        faces = np.concatenate([faces, np.full((len(faces), 1), -1)], axis=1)
    last = np.where(faces[:, 3] >= 0, faces[:, 3], faces[:, 2])
    ring = np.stack([faces[:, 0], faces[:, 1], faces[:, 2], last], axis=1)
    nxt = np.stack([faces[:, 1], faces[:, 2], last, faces[:, 0]], axis=1)
    keep = ring != nxt
    edges = np.stack([ring[keep], nxt[keep]], axis=1)
    return np.sort(edges, axis=1)


def edge_counts(faces: np.ndarray) -> tuple[int, int]:
    """(non-manifold edges: used by more than two faces, boundary edges: used by one)."""
    edges = polygon_edges(faces)
    if len(edges) == 0:
        return 0, 0
    _, counts = np.unique(edges, axis=0, return_counts=True)
    return int((counts > 2).sum()), int((counts == 1).sum())


def hole_count(faces: np.ndarray) -> int:
    """Open boundary loops: the boundary edges joined at their corners (two loops meeting at a corner count as one)."""
    edges = polygon_edges(faces)
    if len(edges) == 0:
        return 0
    unique, counts = np.unique(edges, axis=0, return_counts=True)
    rim = unique[counts == 1]
    if len(rim) == 0:
        return 0
    corners, pairs = np.unique(rim, return_inverse=True)
    pairs = pairs.reshape(-1, 2)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(len(corners), len(corners)))
    return int(connected_components(graph, directed=False)[0])


def fan_triangles(faces: np.ndarray) -> np.ndarray:
    """Each quad as two triangles (0-2 diagonal), each triangle as itself: for sampling and distances."""
    faces = np.asarray(faces, np.int64)
    if faces.shape[1] == 3:
        return faces
    quads = faces[faces[:, 3] >= 0]
    tris = faces[faces[:, 3] < 0][:, :3]
    return np.concatenate([tris, quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]], axis=0)


def sample_surface(vertices: np.ndarray, tris: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    a, b, c = (vertices[tris[:, i]] for i in range(3))
    area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    if area.sum() <= 0:
        return vertices.copy()
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(tris), size=count, p=area / area.sum())
    u, v = rng.random(count), rng.random(count)
    flip = u + v > 1
    u[flip], v[flip] = 1 - u[flip], 1 - v[flip]
    return a[pick] + u[:, None] * (b[pick] - a[pick]) + v[:, None] * (c[pick] - a[pick])


def _segment_distance(p, a, b):
    ab = b - a
    t = np.clip(np.einsum("...k,...k", p - a, ab) / np.maximum(np.einsum("...k,...k", ab, ab), 1e-30), 0, 1)
    return np.linalg.norm(p - (a + t[..., None] * ab), axis=-1)


def point_triangle_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Exact distance from points to triangles, broadcast over leading axes."""
    n = np.cross(b - a, c - a)
    nn = np.linalg.norm(n, axis=-1)
    inside = nn > 1e-20
    for u, w in ((a, b), (b, c), (c, a)):
        inside &= np.einsum("...k,...k", np.cross(w - u, p - u), n) >= 0
    plane = np.abs(np.einsum("...k,...k", p - a, n)) / np.maximum(nn, 1e-30)
    edges = np.minimum(np.minimum(_segment_distance(p, a, b), _segment_distance(p, b, c)),
                       _segment_distance(p, c, a))
    return np.where(inside, plane, edges)


def _radius(corners: np.ndarray) -> np.ndarray:
    """How far each triangle ([T, 3, 3] corners) reaches from its centroid."""
    return np.linalg.norm(corners - corners.mean(axis=1, keepdims=True), axis=2).max(axis=1)


def even_pieces(vertices: np.ndarray, tris: np.ndarray):
    """The triangles split at their edges' midpoints until none reaches much further from its centroid than the
    typical one: (corners [M, 3, 3], owning triangle [M]). A search by nearest centroid needs triangles of similar
    size; a long one (a filled hole's fan, a CAD face) would otherwise be missed by the points near it."""
    corners = np.asarray(vertices, np.float64)[tris]
    owner = np.arange(len(tris))
    radius = _radius(corners)
    if len(tris) == 0:
        return corners, owner
    # a piece's radius halves per split (four pieces): the limit is raised until the pieces stay within budget
    limit = max(SPLIT_RATIO * float(np.median(radius)), 1e-12)
    while np.sum(4.0 ** np.ceil(np.log2(np.maximum(radius / limit, 1.0)))) > max(MAX_PIECES, 2 * len(tris)):
        limit *= 1.5
    while True:
        wide = radius > limit
        if not wide.any():
            return corners, owner
        a, b, c = corners[wide, 0], corners[wide, 1], corners[wide, 2]
        ab, bc, ca = (a + b) / 2, (b + c) / 2, (c + a) / 2
        split = np.concatenate([np.stack(t, axis=1) for t in ((a, ab, ca), (ab, b, bc), (ca, bc, c), (ab, bc, ca))])
        corners = np.concatenate([corners[~wide], split])
        owner = np.concatenate([owner[~wide], np.tile(owner[wide], 4)])
        radius = _radius(corners)


def _closest_on_each(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """The closest point of each triangle (a, b, c: [N, K, 3]) to its row's point (p: [N, 1, 3])."""
    n = np.cross(b - a, c - a)
    nn = np.einsum("...k,...k", n, n)
    inside = nn > 1e-40
    for u, w in ((a, b), (b, c), (c, a)):
        inside &= np.einsum("...k,...k", np.cross(w - u, p - u), n) >= 0
    on_plane = p - n * (np.einsum("...k,...k", p - a, n) / np.maximum(nn, 1e-40))[..., None]
    best = np.where(inside[..., None], on_plane, a)
    for u, w in ((a, b), (b, c), (c, a)):
        uw = w - u
        s = np.clip(np.einsum("...k,...k", p - u, uw) / np.maximum(np.einsum("...k,...k", uw, uw), 1e-30), 0, 1)
        q = u + s[..., None] * uw
        closer = ~inside & (np.linalg.norm(p - q, axis=-1) < np.linalg.norm(p - best, axis=-1))
        best = np.where(closer[..., None], q, best)
    return best


class NearestTriangles:
    """Closest points on a fixed set of triangles, the search built once for many queries. The pieces nearest by
    centroid are tried first; a point is settled once no other piece can be closer (its centroid lies further than
    the best distance plus the widest piece's radius), the rest are asked again with more candidates: exact."""

    def __init__(self, vertices: np.ndarray, tris: np.ndarray):
        self.vertices = np.asarray(vertices, np.float64)
        self.tris = np.asarray(tris, np.int64)
        self.corners, self.owner = even_pieces(self.vertices, self.tris)
        self.tree = cKDTree(self.corners.mean(axis=1))
        self.widest = float(_radius(self.corners).max()) if len(self.corners) else 0.0

    def closest(self, points: np.ndarray):
        """(closest points, triangle index, barycentric weights [N, 3]) of each point."""
        points = np.asarray(points, np.float64)
        closest, piece = np.zeros_like(points), np.zeros(len(points), np.int64)
        todo, k, count = np.arange(len(points)), CANDIDATES, len(self.corners)
        while len(todo):
            k = min(k, count)
            left = []
            for rows in np.array_split(todo, max(1, len(todo) * k // CHUNK)):
                dist, idx = self.tree.query(points[rows], k=k)
                idx, dist = np.asarray(idx).reshape(len(rows), k), np.asarray(dist).reshape(len(rows), k)
                t = self.corners[idx]
                p = points[rows][:, None, :]
                best = _closest_on_each(p, t[..., 0, :], t[..., 1, :], t[..., 2, :])
                gap = np.linalg.norm(p - best, axis=-1)
                pick = gap.argmin(axis=1)
                closest[rows] = best[np.arange(len(rows)), pick]
                piece[rows] = idx[np.arange(len(rows)), pick]
                left.append(rows[(dist[:, -1] - self.widest < gap.min(axis=1)) & (k < count)])
            todo, k = np.concatenate(left), k * 4
        tri = self.owner[piece]
        v, f = self.vertices, self.tris
        corner_a = v[f[tri, 0]]
        e0, e1, e2 = v[f[tri, 1]] - corner_a, v[f[tri, 2]] - corner_a, closest - corner_a
        d00, d01, d11 = (e0 * e0).sum(1), (e0 * e1).sum(1), (e1 * e1).sum(1)
        d20, d21 = (e2 * e0).sum(1), (e2 * e1).sum(1)
        det = np.maximum(d00 * d11 - d01 * d01, 1e-30)
        wb, wc = (d11 * d20 - d01 * d21) / det, (d00 * d21 - d01 * d20) / det
        bary = np.clip(np.stack([1 - wb - wc, wb, wc], axis=1), 0, 1)
        bary /= np.maximum(bary.sum(axis=1, keepdims=True), 1e-30)
        return closest, tri, bary


def distance_to_mesh(points: np.ndarray, vertices: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """Distance from each point to the triangles (exact, up to rounding)."""
    points = np.asarray(points, np.float64)
    return np.linalg.norm(points - NearestTriangles(vertices, tris).closest(points)[0], axis=1)


def closest_on_triangles(points: np.ndarray, vertices: np.ndarray, tris: np.ndarray):
    """(closest points, triangle index, barycentric weights [N, 3]) of each point on the triangles."""
    return NearestTriangles(vertices, tris).closest(points)


def closest_points(points: np.ndarray, vertices: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """Each point's closest point on the triangles."""
    return closest_on_triangles(points, vertices, tris)[0]


def hausdorff_share(vertices_a, faces_a, vertices_b, faces_b, samples: int = 20000) -> float:
    """Symmetric Hausdorff distance between two surfaces (sampled), over the diagonal of B's bounding box."""
    va, vb = np.asarray(vertices_a, np.float64), np.asarray(vertices_b, np.float64)
    ta, tb = fan_triangles(faces_a), fan_triangles(faces_b)
    diagonal = float(np.linalg.norm(vb.max(axis=0) - vb.min(axis=0)))
    if diagonal <= 0 or len(ta) == 0 or len(tb) == 0:
        return float("inf")
    pa = np.concatenate([va, sample_surface(va, ta, samples, seed=1)])
    pb = np.concatenate([vb, sample_surface(vb, tb, samples, seed=2)])
    worst = max(distance_to_mesh(pa, vb, tb).max(), distance_to_mesh(pb, va, ta).max())
    return float(worst) / diagonal


def measure_quads(vertices, faces, source_vertices, source_faces, faces_asked: int, *, seconds: float = 0.0,
                  samples: int = 20000) -> QuadReport:
    faces = np.asarray(faces, np.int64)
    quads = int((faces[:, 3] >= 0).sum()) if len(faces) else 0
    non_manifold, boundary = edge_counts(faces)
    _, source_boundary = edge_counts(np.asarray(source_faces, np.int64))
    distance = hausdorff_share(vertices, faces, source_vertices, source_faces, samples) if len(faces) else 1.0
    warnings = []
    made = len(faces)
    if abs(made - faces_asked) > TARGET_TOLERANCE * faces_asked:
        warnings.append(f"quad remesh made {made} faces for a target of {faces_asked} "
                        f"({100 * (made - faces_asked) / faces_asked:+.0f} %): the remesher cannot meet it on this "
                        "shape; try another target")
    if non_manifold:
        warnings.append(f"quad remesh left {non_manifold} non-manifold edges")
    if boundary > source_boundary:
        warnings.append(f"quad remesh opened holes: {boundary} boundary edges (the source had {source_boundary})")
    if made and quads / made < 0.95:
        warnings.append(f"quad remesh made only {100 * quads / made:.0f} % quads")
    return QuadReport(faces_asked=int(faces_asked), faces_made=made, quads=quads, triangles=made - quads,
                      non_manifold_edges=non_manifold, boundary_edges=boundary,
                      source_boundary_edges=source_boundary, hausdorff=distance, seconds=float(seconds),
                      holes=hole_count(faces) if boundary else 0, warnings=warnings)
