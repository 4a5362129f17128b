"""Surface voxelisation of a user's mesh at 64^3: the structure that `run_variant` gives stage 2.

    coords = voxelize("chair.glb")                    # int32 [N, 3] voxel indices, sorted
    coords = voxelize(mesh, up="y", cancel=stop.is_set)

Reading (`mesh_input`): a path, a file object, a trimesh.Trimesh or a Scene. The up axis comes from the
format: glTF / GLB and OBJ are y up and turned into the pipeline's z up (the exact inverse of this app's
GLB / OBJ export, so its own results round-trip), STL and PLY are z up, and a Trimesh or Scene given
directly is taken as z up; `up="y"` or `up="z"` overrides. Only regular files are ever opened.

Normalisation (facts, §5): the axis-aligned bounding box's centre goes to the origin, the largest side
to 1, and vertices are clipped to [-0.5 + 1e-6, 0.5 - 1e-6]. A voxel of the 64^3 grid over [-0.5, 0.5]^3
is occupied when some triangle touches it (closed boxes: touching a face or an edge counts), so the
result is a shell, never a solid fill.

How: a triangle larger than two voxels is split at its edge midpoints, d times, into 4^d pieces each half
the size of the one before (the union of the pieces is the triangle, so the touched voxels are the same);
every voxel of each piece's bounding box is a candidate, tested with the separating-axis theorem
(triangle normal, 9 edge x axis cross products; the 3 box axes hold for every candidate), in float64.

Cost: the number of (piece, candidate voxel) tests, known from the triangles' sizes before any is made
(`voxel_work`). It grows with the triangles' area, not their count: 2 000 nested cube shells in a 1 MB STL
need hundreds of millions. A mesh above MAX_WORK is refused with MeshInputError, before any work; the
rest runs in chunks of bounded memory, and `cancel` is checked between chunks.
"""
from __future__ import annotations

import numpy as np
import torch

from ..core.callbacks import CancelCheck, check
from .mesh_input import MAX_FACES, MESH_SUFFIXES, UP_BY_FORMAT, MeshInputError, load_mesh

__all__ = ["MAX_FACES", "MAX_WORK", "MESH_SUFFIXES", "RESOLUTION", "UP_BY_FORMAT", "MeshInputError", "check_mesh",
           "load_mesh", "normalize_vertices", "triangle_box_overlap", "used_in_unit_cube", "voxel_work", "voxelize",
           "voxelize_surface"]

RESOLUTION = 64
# Triangle-voxel tests accepted: 80 times what a closed surface filling the 64^3 grid needs (a box or a
# sphere: 0.25 M), so only piles of large overlapping or nested surfaces are refused.
MAX_WORK = 20_000_000
_CLIP = 0.5 - 1e-6
_PIECE = 2.0                # largest side (voxels) of a piece's bounding box after splitting
_CHUNK = 1 << 17            # candidate (piece, voxel) pairs tested at once: ~50 MB of temporaries
_FACE_CHUNK = 1 << 18       # triangles measured at once when planning


# ------------------------------------------------------------------------------------------ checks

def check_mesh(vertices: np.ndarray, faces: np.ndarray, require_manifold: bool = False,
               resolution: int | None = RESOLUTION) -> None:
    """Raise MeshInputError for what voxelisation cannot use; with a `resolution`, also for a mesh whose
    voxelisation at that resolution would take more than MAX_WORK tests."""
    vertices, faces = np.asarray(vertices), np.asarray(faces)
    if faces.ndim != 2 or (faces.size and faces.shape[1] != 3):
        raise MeshInputError(f"faces must be triangles (an [F, 3] array), got shape {tuple(faces.shape)}; "
                             f"triangulate the mesh first")
    if len(vertices) == 0 or len(faces) == 0:
        raise MeshInputError("the mesh is empty: it has no triangles")
    if len(faces) > MAX_FACES:
        raise MeshInputError(f"the mesh has {len(faces):,} triangles, more than the {MAX_FACES:,} accepted: "
                             f"simplify (decimate) it first; at 64^3 voxels the detail is lost anyway")
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise MeshInputError(f"vertices must be an [N, 3] array, got shape {tuple(vertices.shape)}")
    if not np.isfinite(vertices).all():
        raise MeshInputError("the mesh has vertices at infinity or NaN coordinates")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise MeshInputError("the mesh has faces that name vertices it does not have")
    used = vertices[_used(faces, len(vertices))]
    if np.ptp(used, axis=0).max() <= 0:
        raise MeshInputError("the mesh has no size: all its triangles sit in one point")
    if require_manifold:
        edges = np.sort(faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
        _, counts = np.unique(edges, axis=0, return_counts=True)
        shared = int((counts > 2).sum())
        if shared:
            raise MeshInputError(f"the mesh is not manifold: {shared} edges are shared by more than two "
                                 f"triangles; repair it (e.g. merge or separate the overlapping parts)")
    if resolution:
        _check_work(_plan(*_in_cube(vertices, faces), resolution)[1].sum(), resolution)


def _check_work(work: float, resolution: int, max_work: int | None = None) -> None:
    limit = MAX_WORK if max_work is None else max_work
    if work > limit:
        raise MeshInputError(
            f"the mesh's surfaces are too large to voxelise: at {resolution}^3 they need about {work / 1e6:,.0f} "
            f"million triangle-voxel tests, more than the {limit / 1e6:,.0f} million accepted (about "
            f"{work / limit:,.0f} times too many). This comes from many large triangles lying over or inside "
            f"one another (nested or duplicated shells, hidden inner parts, as in CAD exports): remove the "
            f"inner parts, or remesh the model (e.g. Blender's Remesh modifier) and try again")


def normalize_vertices(vertices: np.ndarray) -> np.ndarray:
    """Bounding-box centre to the origin, largest side to 1, clipped just inside [-0.5, 0.5] (facts §5)."""
    v = np.asarray(vertices, dtype=np.float64)
    lo, hi = v.min(axis=0), v.max(axis=0)
    v = (v - (lo + hi) / 2) / (hi - lo).max()
    return np.clip(v, -_CLIP, _CLIP)


def _used(faces: np.ndarray, n: int) -> np.ndarray:
    """Which of n vertices the faces use (a mask: np.unique would sort all 3 F indices)."""
    mask = np.zeros(n, bool)
    mask[faces.ravel()] = True
    return mask


def used_in_unit_cube(vertices, faces) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indices of the vertices that faces use, those vertices normalised, faces over them): the frame `voxelize`
    works in, which a bake onto the same mesh must share (stray vertices must not stretch the box)."""
    faces = np.asarray(faces, dtype=np.int64)
    used = _used(faces, len(vertices))
    remap = np.cumsum(used) - 1
    return np.flatnonzero(used), normalize_vertices(np.asarray(vertices, dtype=np.float64)[used]), remap[faces]


def _in_cube(vertices, faces):
    """(normalised vertices, faces) over the vertices that faces use."""
    return used_in_unit_cube(vertices, faces)[1:]


# ------------------------------------------------------------------------------------------ planning

def _bounds(tmin: np.ndarray, tmax: np.ndarray, resolution: int):
    """First candidate voxel and candidates per axis of boxes [.., 3] in voxel units. A voxel whose face
    the box only reaches from outside is touched too: one lower where the minimum sits on a voxel boundary
    (floor already covers the upper one)."""
    lo = np.floor(tmin)
    lo = np.clip(lo - (tmin == lo), 0, resolution - 1).astype(np.int64)
    hi = np.clip(np.floor(tmax), 0, resolution - 1).astype(np.int64)
    return lo, hi - lo + 1


def _box(tris: np.ndarray):
    """Bounding boxes (min, max) [T, 3] of triangles [T, 3, 3] (elementwise: faster than min(axis=1))."""
    a, b, c = tris[:, 0], tris[:, 1], tris[:, 2]
    return np.minimum(np.minimum(a, b), c), np.maximum(np.maximum(a, b), c)


def _plan(vertices: np.ndarray, faces: np.ndarray, resolution: int):
    """Per triangle: how often it is split (int8) and its tests (float64: exact for an unsplit triangle,
    4^d x the largest bounding box a piece can have otherwise). `vertices` lie in the unit cube."""
    depth = np.zeros(len(faces), np.int8)
    work = np.zeros(len(faces), np.float64)
    for s in range(0, len(faces), _FACE_CHUNK):
        tris = (vertices[faces[s:s + _FACE_CHUNK]] + 0.5) * resolution
        tmin, tmax = _box(tris)
        ext = tmax - tmin
        longest = np.maximum(np.maximum(ext[:, 0], ext[:, 1]), ext[:, 2])
        d = np.ceil(np.log2(np.maximum(longest, 1e-300) / _PIECE)).clip(0, None)
        _, size = _bounds(tmin, tmax, resolution)
        piece = np.floor(ext / (2.0 ** d)[:, None]) + 2          # most candidates per axis of a piece
        depth[s:s + _FACE_CHUNK] = d
        work[s:s + _FACE_CHUNK] = np.where(d > 0, 4.0 ** d * piece[:, 0] * piece[:, 1] * piece[:, 2],
                                           size[:, 0] * size[:, 1] * size[:, 2])
    return depth, work


def voxel_work(vertices: np.ndarray, faces: np.ndarray, resolution: int = RESOLUTION) -> int:
    """The triangle-voxel tests voxelising this mesh takes (an upper bound for split triangles); what
    MAX_WORK limits. Any vertices: they are normalised as voxelize does."""
    return int(_plan(*_in_cube(vertices, faces), resolution)[1].sum())


# ------------------------------------------------------------------------------------------ geometry

def _split(tris: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """Each triangle [T, 3, 3] split depth[t] times at its edge midpoints (4^depth pieces)."""
    done = []
    while len(tris):
        leaf = depth == 0
        done.append(tris[leaf])
        tris, depth = tris[~leaf], depth[~leaf] - 1
        if len(tris):
            a, b, c = tris[:, 0], tris[:, 1], tris[:, 2]
            ab, bc, ca = (a + b) / 2, (b + c) / 2, (c + a) / 2
            tris = np.concatenate([np.stack(t, axis=1) for t in ((a, ab, ca), (ab, b, bc), (ca, bc, c), (ab, bc, ca))])
            depth = np.tile(depth, 4)
    return np.concatenate(done)


def triangle_box_overlap(tris: np.ndarray, centres: np.ndarray, half: float = 0.5) -> np.ndarray:
    """Whether each triangle [K, 3, 3] touches the axis-aligned cube of its centre [K, 3] and half side
    `half` (separating-axis theorem, all 13 axes; touching counts as overlap). The plain reference of the
    test that `voxelize_surface` runs on the candidates of each piece."""
    v = tris - centres[:, None, :]
    e = np.stack([v[:, 1] - v[:, 0], v[:, 2] - v[:, 1], v[:, 0] - v[:, 2]], axis=1)     # [K, 3, 3]
    ok = (v.min(axis=1) <= half).all(axis=1) & (v.max(axis=1) >= -half).all(axis=1)    # box face normals
    n = np.cross(e[:, 0], e[:, 1])                                                       # triangle normal
    ok &= np.abs((n * v[:, 0]).sum(axis=1)) <= half * np.abs(n).sum(axis=1)
    for i in range(3):                     # edge i x box axis j: components are those of e_i, permuted
        ex, ey, ez = e[:, i, 0:1], e[:, i, 1:2], e[:, i, 2:3]
        vx, vy, vz = v[..., 0], v[..., 1], v[..., 2]
        for p, r in (((vz * ey - vy * ez), half * (np.abs(ey) + np.abs(ez))),   # x x e
                     ((vx * ez - vz * ex), half * (np.abs(ex) + np.abs(ez))),   # y x e
                     ((vy * ex - vx * ey), half * (np.abs(ex) + np.abs(ey)))):  # z x e
            ok &= (p.min(axis=1) <= r[:, 0]) & (p.max(axis=1) >= -r[:, 0])
    return ok


def _edges_hold(rel: list, edges: list) -> np.ndarray:
    """triangle_box_overlap's 9 edge x box axis tests, the same arithmetic on columns: rel[j][a] is vertex j's
    coordinate a relative to the voxel's centre, edges[i][a] edge i's (elementwise ufuncs on 1-D arrays:
    reductions over a [K, 3] axis are several times slower)."""
    (x0, y0, z0), (x1, y1, z1), (x2, y2, z2) = rel
    ok = np.ones(len(x0), bool)
    for ex, ey, ez in edges:
        for a0, b0, a1, b1, a2, b2, ea, eb in ((z0, y0, z1, y1, z2, y2, ey, ez),      # x x e: vz*ey - vy*ez
                                               (x0, z0, x1, z1, x2, z2, ez, ex),      # y x e: vx*ez - vz*ex
                                               (y0, x0, y1, x1, y2, x2, ex, ey)):     # z x e: vy*ex - vx*ey
            p0, p1, p2 = a0 * ea - b0 * eb, a1 * ea - b1 * eb, a2 * ea - b2 * eb
            r = 0.5 * (np.abs(ea) + np.abs(eb))
            ok &= (np.minimum(np.minimum(p0, p1), p2) <= r) & (np.maximum(np.maximum(p0, p1), p2) >= -r)
    return ok


def _mark_pieces(grid: np.ndarray, pieces: np.ndarray, resolution: int, cancel: CancelCheck) -> None:
    """Set grid (flat bool, resolution^3) where the pieces [P, 3, 3] (voxel units) touch a voxel."""
    lo, size = _bounds(*_box(pieces), resolution)
    count = size[:, 0] * size[:, 1] * size[:, 2]
    one = count == 1                          # a piece inside one voxel touches just that voxel
    grid[(lo[one, 0] * resolution + lo[one, 1]) * resolution + lo[one, 2]] = True
    pieces, lo, size, count = pieces[~one], lo[~one], size[~one], count[~one]
    edges = np.stack([pieces[:, 1] - pieces[:, 0], pieces[:, 2] - pieces[:, 1], pieces[:, 0] - pieces[:, 2]], axis=1)
    normal = np.cross(edges[:, 0], edges[:, 1])
    reach = 0.5 * np.abs(normal).sum(axis=1)
    # One contiguous array per coordinate: gathering from them is much faster than from strided views.
    vcols = [[np.ascontiguousarray(pieces[:, j, a]) for a in range(3)] for j in range(3)]
    ecols = [[np.ascontiguousarray(edges[:, i, a]) for a in range(3)] for i in range(3)]
    ncols = [np.ascontiguousarray(normal[:, a]) for a in range(3)]
    ends = np.cumsum(count)
    start = 0
    while start < len(pieces):
        check(cancel)
        first = ends[start - 1] if start else 0
        stop = max(int(np.searchsorted(ends, first + _CHUNK, side="right")), start + 1)
        n = int(ends[stop - 1] - first)
        pid = np.repeat(np.arange(start, stop), count[start:stop])          # the candidates, piece by piece
        local = np.arange(n) - (ends[pid] - count[pid] - first)
        sz = size[pid]
        cells = lo[pid] + np.stack([local // (sz[:, 1] * sz[:, 2]), (local // sz[:, 2]) % sz[:, 1], local % sz[:, 2]], 1)
        key = (cells[:, 0] * resolution + cells[:, 1]) * resolution + cells[:, 2]
        todo = ~grid[key]                     # a voxel already found needs no second test
        pid, key = pid[todo], key[todo]
        centre = [cells[todo, a] + 0.5 for a in range(3)]
        # The plane test first (as triangle_box_overlap computes it): it leaves a fraction for the rest.
        x0, y0, z0 = (vcols[0][a][pid] - centre[a] for a in range(3))
        hit = np.abs(ncols[0][pid] * x0 + ncols[1][pid] * y0 + ncols[2][pid] * z0) <= reach[pid]
        pid, key, centre = pid[hit], key[hit], [c[hit] for c in centre]
        rel = [[vcols[j][a][pid] - centre[a] for a in range(3)] for j in range(3)]
        grid[key[_edges_hold(rel, [[ecols[i][a][pid] for a in range(3)] for i in range(3)])]] = True
        start = stop


def voxelize_surface(vertices: np.ndarray, faces: np.ndarray, resolution: int = RESOLUTION,
                     cancel: CancelCheck = None, max_work: int | None = None) -> np.ndarray:
    """Indices [N, 3] (int32, sorted, unique) of the voxels of the resolution^3 grid over [-0.5, 0.5]^3
    that the triangles touch. `vertices` must already lie in that cube. MeshInputError above `max_work`
    tests (MAX_WORK when None); `cancel` is checked between chunks (Cancelled)."""
    vertices, faces = np.asarray(vertices, np.float64), np.asarray(faces, np.int64)
    depth, work = _plan(vertices, faces, resolution)
    _check_work(work.sum(), resolution, max_work)
    grid = np.zeros(resolution ** 3, bool)
    ends = np.cumsum(work)
    start = 0
    while start < len(faces):
        check(cancel)
        done = ends[start - 1] if start else 0.0
        stop = max(int(np.searchsorted(ends, done + _CHUNK, side="right")), start + 1)
        tris = (vertices[faces[start:stop]] + 0.5) * resolution              # voxel units
        _mark_pieces(grid, _split(tris, depth[start:stop]), resolution, cancel)
        start = stop
    check(cancel)
    return np.argwhere(grid.reshape((resolution,) * 3)).astype(np.int32)


def voxelize(mesh, resolution: int = RESOLUTION, require_manifold: bool = False, up: str | None = None,
             cancel: CancelCheck = None) -> torch.Tensor:
    """A mesh (path, trimesh.Trimesh or Scene) -> int32 tensor [N, 3] of occupied voxel indices.
    `up`: the mesh's up axis, "y" or "z"; None goes by its format (see mesh_input)."""
    mesh = load_mesh(mesh, up=up)
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    faces = np.asarray(mesh.faces, dtype=np.int64)
    check_mesh(vertices, faces, require_manifold, resolution=None)
    coords = voxelize_surface(*_in_cube(vertices, faces), resolution, cancel=cancel)
    return torch.from_numpy(coords)
