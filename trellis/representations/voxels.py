"""Surface voxelisation of a user's mesh at 64^3: the structure that `run_variant` gives stage 2.

    coords = voxelize(trimesh.load("chair.glb"))      # int32 [N, 3] voxel indices, sorted

Normalisation (facts, §5): the axis-aligned bounding box's centre goes to the origin, the largest side
to 1, and vertices are clipped to [-0.5 + 1e-6, 0.5 - 1e-6]. A voxel of the 64^3 grid over [-0.5, 0.5]^3
is occupied when some triangle touches it (closed boxes: touching a face or an edge counts), so the
result is a shell, never a solid fill.

How: triangles larger than two voxels are split at their edge midpoints until each is small (the union
of the pieces is the triangle, so the touched voxels are the same); then every voxel of each piece's
bounding box is tested with the separating-axis theorem (3 box axes, the triangle normal, 9 edge x axis
cross products), exactly, in float64.
"""
from __future__ import annotations

import os

import numpy as np
import torch

RESOLUTION = 64
# A mesh beyond this is a scan or a CAD export that should be simplified first; voxelising it would
# take minutes and gigabytes for a 64^3 answer.
MAX_FACES = 4_000_000
MESH_SUFFIXES = (".glb", ".gltf", ".obj", ".ply", ".stl")
_CLIP = 0.5 - 1e-6
_CHUNK = 1 << 18            # candidate (triangle, voxel) pairs tested at once


class MeshInputError(ValueError):
    """A mesh that cannot be voxelised, with what is wrong and what to do."""


# ------------------------------------------------------------------------------------------ input

def load_mesh(source):
    """A trimesh.Trimesh from a path (GLB, glTF, OBJ, PLY, STL), a Trimesh or a Scene (all its meshes,
    placed by the scene's transforms)."""
    import trimesh

    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise MeshInputError(f"{path}: no such file")
        if not path.lower().endswith(MESH_SUFFIXES):
            raise MeshInputError(f"{os.path.basename(path)}: not a 3-D model file; use one of "
                                 f"{', '.join(s[1:].upper() for s in MESH_SUFFIXES)}")
        try:
            source = trimesh.load(path, force="mesh")
        except Exception as err:       # trimesh raises many kinds on a damaged or mislabelled file
            raise MeshInputError(f"{os.path.basename(path)}: cannot be read as a 3-D model ({err}). Export it "
                                 f"again as GLB, OBJ, PLY or STL.") from None
    if isinstance(source, trimesh.Scene):
        meshes = [g for g in source.dump() if isinstance(g, trimesh.Trimesh)]
        if not meshes:
            raise MeshInputError("the scene holds no triangle mesh (only points, lines or nothing)")
        source = trimesh.util.concatenate(meshes)
    if not isinstance(source, trimesh.Trimesh):
        raise MeshInputError(f"the file holds a {type(source).__name__}, not a triangle mesh: a shape needs "
                             f"faces, not only points or lines")
    return source


def check_mesh(vertices: np.ndarray, faces: np.ndarray, require_manifold: bool = False) -> None:
    """Raise MeshInputError for what voxelisation cannot use."""
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
    used = vertices[np.unique(faces)]
    if np.ptp(used, axis=0).max() <= 0:
        raise MeshInputError("the mesh has no size: all its triangles sit in one point")
    if require_manifold:
        edges = np.sort(faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
        _, counts = np.unique(edges, axis=0, return_counts=True)
        shared = int((counts > 2).sum())
        if shared:
            raise MeshInputError(f"the mesh is not manifold: {shared} edges are shared by more than two "
                                 f"triangles; repair it (e.g. merge or separate the overlapping parts)")


def normalize_vertices(vertices: np.ndarray) -> np.ndarray:
    """Bounding-box centre to the origin, largest side to 1, clipped just inside [-0.5, 0.5] (facts §5)."""
    v = np.asarray(vertices, dtype=np.float64)
    lo, hi = v.min(axis=0), v.max(axis=0)
    v = (v - (lo + hi) / 2) / (hi - lo).max()
    return np.clip(v, -_CLIP, _CLIP)


# ------------------------------------------------------------------------------------------ geometry

def _split_large(tris: np.ndarray, max_extent: float) -> np.ndarray:
    """Split triangles (voxel units, [T, 3, 3]) at edge midpoints until no bounding box side exceeds
    `max_extent`."""
    done = []
    while len(tris):
        extent = np.ptp(tris, axis=1).max(axis=1)
        small = extent <= max_extent
        done.append(tris[small])
        big = tris[~small]
        if not len(big):
            break
        a, b, c = big[:, 0], big[:, 1], big[:, 2]
        ab, bc, ca = (a + b) / 2, (b + c) / 2, (c + a) / 2
        tris = np.concatenate([np.stack(t, axis=1) for t in ((a, ab, ca), (ab, b, bc), (ca, bc, c), (ab, bc, ca))])
    return np.concatenate(done) if done else tris


def triangle_box_overlap(tris: np.ndarray, centres: np.ndarray, half: float = 0.5) -> np.ndarray:
    """Whether each triangle [K, 3, 3] touches the axis-aligned cube of its centre [K, 3] and half side
    `half` (separating-axis theorem; touching counts as overlap)."""
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


def voxelize_surface(vertices: np.ndarray, faces: np.ndarray, resolution: int = RESOLUTION) -> np.ndarray:
    """Indices [N, 3] (int32, sorted, unique) of the voxels of the resolution^3 grid over [-0.5, 0.5]^3
    that the triangles touch. `vertices` must already lie in that cube."""
    tris = (np.asarray(vertices, np.float64)[np.asarray(faces)] + 0.5) * resolution     # voxel units
    tris = _split_large(tris, 2.0)
    lo = np.clip(np.floor(tris.min(axis=1)), 0, resolution - 1).astype(np.int64)
    hi = np.clip(np.floor(tris.max(axis=1)), 0, resolution - 1).astype(np.int64)
    # A voxel whose face the triangle only grazes from outside is touched too: widen by one where the
    # triangle reaches a lower boundary exactly (floor already covers the upper one).
    lo = np.maximum(lo - (tris.min(axis=1) == lo).astype(np.int64), 0)
    size = hi - lo + 1
    inside_one = (size == 1).all(axis=1)
    found = [lo[inside_one]]                      # a triangle inside one voxel touches just that voxel
    tris, lo, size = tris[~inside_one], lo[~inside_one], size[~inside_one]
    offsets = np.stack(np.meshgrid(*[np.arange(size.max(initial=1))] * 3, indexing="ij"), -1).reshape(-1, 3)
    per_tri = max(1, _CHUNK // len(offsets))
    for s in range(0, len(tris), per_tri):
        t, l, sz = tris[s:s + per_tri], lo[s:s + per_tri], size[s:s + per_tri]
        cand = l[:, None, :] + offsets[None]                                  # [T, O, 3]
        valid = (offsets[None] < sz[:, None, :]).all(axis=2)
        tri_idx, off_idx = np.nonzero(valid)
        voxels = cand[tri_idx, off_idx]
        hit = triangle_box_overlap(t[tri_idx], voxels + 0.5)
        found.append(voxels[hit])
    coords = np.unique(np.concatenate(found), axis=0)
    return coords.astype(np.int32)


def voxelize(mesh, resolution: int = RESOLUTION, require_manifold: bool = False) -> torch.Tensor:
    """A mesh (path, trimesh.Trimesh or Scene) -> int32 tensor [N, 3] of occupied voxel indices."""
    mesh = load_mesh(mesh)
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    faces = np.asarray(mesh.faces, dtype=np.int64)
    check_mesh(vertices, faces, require_manifold)
    used = np.unique(faces)                      # stray vertices must not stretch the bounding box
    remap = np.zeros(len(vertices), np.int64)
    remap[used] = np.arange(len(used))
    coords = voxelize_surface(normalize_vertices(vertices[used]), remap[faces], resolution)
    return torch.from_numpy(coords)
