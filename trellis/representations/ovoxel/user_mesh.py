"""The user's mesh for texturing (TRELLIS2_TEXTURING_FACTS.md §4, §11): read as given, put in the networks' frame
for the voxels only; and what texturing hands the export (``TexturedVoxels``).

Frames: the user's (any position, scale, up axis) -> the TRELLIS world (z up: a y-up mesh turns (x, y, z) ->
(x, -z, y), exactly: a permutation and a sign) -> the internal frame (bounding box centred, longest side 0.99999,
inside [-0.5, 0.5]^3), where the O-Voxel is built. The result keeps the user's vertices; only the voxels and the
bake's sample points live in the internal frame.
"""
from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np

__all__ = ["FILL", "UP_AXES", "UserMesh", "MeshFrame", "TexturedVoxels", "read_user_mesh", "to_world"]

# The internal frame's longest side (the reference's and its training data's scaling).
FILL = 0.99999
UP_AXES = ("y", "z")


class UserMesh(NamedTuple):
    """The mesh as given: ``vertices`` [V, 3] (its own dtype and frame), ``faces`` [F, 3] int64, ``uvs`` [V, 2]
    (v up, trimesh's convention) or None."""
    vertices: np.ndarray
    faces: np.ndarray
    uvs: np.ndarray | None


def _from_trimesh(mesh) -> UserMesh:
    uv = getattr(mesh.visual, "uv", None)
    uv = None if uv is None or len(uv) != len(mesh.vertices) else np.asarray(uv)
    return UserMesh(np.asarray(mesh.vertices), np.asarray(mesh.faces, dtype=np.int64), uv)


def read_user_mesh(mesh) -> UserMesh:
    """A ``UserMesh`` of a trimesh Trimesh or Scene (flattened with its transforms), a file path (read by trimesh
    with no processing: no merged vertices, no reordered faces) or a tuple (vertices, faces[, uvs])."""
    import trimesh

    if isinstance(mesh, UserMesh):
        return mesh
    if isinstance(mesh, (str, os.PathLike)):
        mesh = trimesh.load(os.fspath(mesh), process=False)
    if isinstance(mesh, trimesh.Scene):
        parts = [g for g in mesh.dump() if isinstance(g, trimesh.Trimesh)]
        if not parts:
            raise ValueError("the scene holds no triangle mesh")
        mesh = parts[0] if len(parts) == 1 else trimesh.util.concatenate(parts)
    if isinstance(mesh, trimesh.Trimesh):
        out = _from_trimesh(mesh)
    elif isinstance(mesh, (tuple, list)) and len(mesh) in (2, 3):
        v, f = (np.asarray(x.detach().cpu() if hasattr(x, "detach") else x) for x in mesh[:2])
        uv = None if len(mesh) == 2 or mesh[2] is None else np.asarray(mesh[2])
        out = UserMesh(v, f.astype(np.int64), uv)
    else:
        raise TypeError(f"expected a trimesh mesh or scene, a path or (vertices, faces[, uvs]), got {type(mesh)}")
    v, f = out.vertices, out.faces
    if v.ndim != 2 or v.shape[1] != 3 or f.ndim != 2 or f.shape[1] != 3 or len(f) == 0:
        raise ValueError(f"the mesh needs [V, 3] vertices and [F, 3] triangles, got {v.shape} and {f.shape}")
    if f.min() < 0 or f.max() >= len(v):
        raise ValueError("the mesh has faces that name vertices it does not have")
    if not np.isfinite(v[f.reshape(-1)]).all():
        raise ValueError("the mesh has vertices at infinity or NaN coordinates")
    return out


class MeshFrame(NamedTuple):
    """The user's frame -> the TRELLIS world (z up) -> the internal frame: ``up`` the user's up axis, ``centre``
    (world units) and ``scale`` of the internal frame."""
    up: str
    centre: np.ndarray
    scale: float

    @staticmethod
    def of(mesh: UserMesh, up: str = "y") -> "MeshFrame":
        if up not in UP_AXES:
            raise ValueError(f"up must be one of {UP_AXES}, got {up!r}")
        used = to_world(np.asarray(mesh.vertices, np.float64)[np.unique(mesh.faces)], up)
        lo, hi = used.min(0), used.max(0)
        extent = float((hi - lo).max())
        if extent <= 0:
            raise ValueError("the mesh has no size: all its triangles sit in one point")
        return MeshFrame(up, (lo + hi) / 2, FILL / extent)

    def world(self, vertices) -> np.ndarray:
        """The user's vertices in the TRELLIS world (z up), exactly (values kept, dtype kept)."""
        return to_world(np.asarray(vertices), self.up)

    def internal(self, vertices) -> np.ndarray:
        """float64 [V, 3]: the user's vertices in the internal frame."""
        return (to_world(np.asarray(vertices, np.float64), self.up) - self.centre) * self.scale

    def user(self, internal) -> np.ndarray:
        """float64 [V, 3]: internal-frame points back in the user's frame."""
        world = np.asarray(internal, np.float64) / self.scale + self.centre
        return world if self.up == "z" else np.stack([world[:, 0], world[:, 2], -world[:, 1]], 1)


def to_world(v: np.ndarray, up: str) -> np.ndarray:
    """y up -> z up: (x, y, z) -> (x, -z, y) (the inverse of the glTF writer's (x, z, -y))."""
    return v if up == "z" else np.stack([v[:, 0], -v[:, 2], v[:, 1]], 1)


class TexturedVoxels(NamedTuple):
    """What the texturing pipeline hands the export (``export.pbr.onto_mesh.bake_onto_user_mesh``): the user's
    ``mesh`` as given, its ``frame``, the decoded ``voxels`` (a ``MeshWithVoxel`` with its PBR attributes, internal
    frame), the asked ``texture_size`` and ``new_uvs``, and ``info`` (frame, resolution, voxel and token counts)."""
    mesh: UserMesh
    frame: MeshFrame
    voxels: object
    texture_size: int
    new_uvs: bool
    info: dict
