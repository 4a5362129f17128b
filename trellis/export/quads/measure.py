"""What a quad remesh made, measured: quad share, faces made vs asked, non-manifold and boundary edges, holes, and the
Hausdorff distance to the source as a share of its bounding-box diagonal; warnings where it falls short."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from .nearest import NearestTriangles

# A target missed by more than this share is reported.
TARGET_TOLERANCE = 0.10


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
    # seconds of the remesh's stages: "remesh" (the remesher's runs), "snap", "fit", "measure"
    stage_seconds: dict = field(default_factory=dict)

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


def edge_table(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the distinct undirected edges [E, 2] in sorted order, how many face sides each is)."""
    edges = polygon_edges(faces)
    if len(edges) == 0:
        return edges, np.zeros(0, np.int64)
    # one integer per edge: a sort of numbers, several times faster than numpy's unique rows
    span = int(edges.max()) + 1
    keys, counts = np.unique(edges[:, 0] * span + edges[:, 1], return_counts=True)
    return np.stack([keys // span, keys % span], axis=1), counts


def edge_counts(faces: np.ndarray) -> tuple[int, int]:
    """(non-manifold edges: used by more than two faces, boundary edges: used by one)."""
    counts = edge_table(faces)[1]
    return int((counts > 2).sum()), int((counts == 1).sum())


def hole_count(faces: np.ndarray) -> int:
    """Open boundary loops: the boundary edges joined at their corners (two loops meeting at a corner count as one)."""
    unique, counts = edge_table(faces)
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


def distance_to_mesh(points: np.ndarray, vertices: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """Distance from each point to the triangles (exact, up to rounding)."""
    return NearestTriangles(vertices, tris).distances(points)


def closest_on_triangles(points: np.ndarray, vertices: np.ndarray, tris: np.ndarray):
    """(closest points, triangle index, barycentric weights [N, 3]) of each point on the triangles."""
    return NearestTriangles(vertices, tris).closest(points)


def closest_points(points: np.ndarray, vertices: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """Each point's closest point on the triangles."""
    return closest_on_triangles(points, vertices, tris)[0]


def hausdorff_share(vertices_a, faces_a, vertices_b, faces_b, samples: int = 20000, *,
                    search_b: NearestTriangles | None = None) -> float:
    """Symmetric Hausdorff distance between two surfaces (sampled), over the diagonal of B's bounding box.
    ``search_b``: B's search, where the caller has built it already (B's triangles, as ``fan_triangles``)."""
    va, vb = np.asarray(vertices_a, np.float64), np.asarray(vertices_b, np.float64)
    ta, tb = fan_triangles(faces_a), fan_triangles(faces_b)
    diagonal = float(np.linalg.norm(vb.max(axis=0) - vb.min(axis=0)))
    if diagonal <= 0 or len(ta) == 0 or len(tb) == 0:
        return float("inf")
    pa = np.concatenate([va, sample_surface(va, ta, samples, seed=1)])
    pb = np.concatenate([vb, sample_surface(vb, tb, samples, seed=2)])
    search_b = search_b if search_b is not None else NearestTriangles(vb, tb)
    worst = max(search_b.distances(pa).max(), NearestTriangles(va, ta).distances(pb).max())
    return float(worst) / diagonal


def measure_quads(vertices, faces, source_vertices, source_faces, faces_asked: int, *, seconds: float = 0.0,
                  samples: int = 20000, source: NearestTriangles | None = None) -> QuadReport:
    """The report of a quad mesh against its source; ``source``: the source's search, where already built."""
    faces = np.asarray(faces, np.int64)
    quads = int((faces[:, 3] >= 0).sum()) if len(faces) else 0
    non_manifold, boundary = edge_counts(faces)
    _, source_boundary = edge_counts(np.asarray(source_faces, np.int64))
    distance = (hausdorff_share(vertices, faces, source_vertices, source_faces, samples, search_b=source)
                if len(faces) else 1.0)
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
