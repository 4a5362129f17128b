"""Per-vertex tangent frames for a normal map, in the glTF convention (``TANGENT``: xyz and a handedness w).

glTF reads a tangent-space normal map with +X along increasing u and +Y "up" in the image, i.e. along increasing v
in the OBJ convention our UVs use (v up; glTF stores 1 − v); the viewer rebuilds the bitangent as
``cross(normal, tangent.xyz) * w``. So: ``tangent.xyz`` is the surface direction of increasing u, made orthogonal to
the vertex normal, and ``w`` is +1 where ``cross(normal, tangent)`` points towards increasing v, −1 where the chart
is mirrored. Per face, the directions come from the UV gradients of its corners; a vertex sums its faces' (each
weighted by its corner angle, as the normals are), so a vertex shared by faces of one chart gets one frame.
"""
from __future__ import annotations

import numpy as np

from .normals import corner_angles
from .rows import row_norm

__all__ = ["vertex_tangents", "face_uv_gradients", "corner_sums"]


def face_uv_gradients(vertices: np.ndarray, faces: np.ndarray, uvs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(dP/du, dP/dv) [F,3] each, per face (zero for a face whose UV triangle has no area)."""
    p = vertices[faces]
    t = uvs[faces]
    e1, e2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
    d1, d2 = t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]
    det = d1[:, 0] * d2[:, 1] - d2[:, 0] * d1[:, 1]
    ok = np.abs(det) > 1e-20
    inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)[:, None]
    dpdu = (e1 * d2[:, 1:2] - e2 * d1[:, 1:2]) * inv
    dpdv = (e2 * d1[:, 0:1] - e1 * d2[:, 0:1]) * inv
    return dpdu, dpdv


def _any_perpendicular(n: np.ndarray) -> np.ndarray:
    """A unit vector perpendicular to each row of ``n`` (for vertices whose UVs give no direction)."""
    axis = np.where(np.abs(n[:, :1]) < 0.9, np.array([[1.0, 0, 0]]), np.array([[0, 1.0, 0]]))
    t = np.cross(n, axis)
    return t / np.maximum(row_norm(t)[:, None], 1e-30)


def corner_sums(faces: np.ndarray, values: np.ndarray, weight: np.ndarray | None, n_vertices: int) -> np.ndarray:
    """[V,C]: each vertex's sum of ``values[face] * weight[face, k]`` (``values`` [F,C]; no ``weight``: ``values[face]``)
    over the faces' corners k at it.

    One ``np.bincount`` per coordinate over the corners laid out corner by corner (all first corners in face
    order, then the second, then the third): bincount adds in that element order, which is the order of
    ``np.add.at`` over the three corners one after the other: the same sums bit for bit, without ``add.at``'s slow
    loop (docs/benchmarks/export.md#cpu-hot-spots-of-the-mesh-export).
    """
    at = faces.T.reshape(-1)
    out = np.empty((n_vertices, values.shape[1]))
    for j in range(values.shape[1]):
        per_corner = np.tile(values[:, j], 3) if weight is None else (weight.T * values[:, j]).reshape(-1)
        out[:, j] = np.bincount(at, per_corner, minlength=n_vertices)
    return out


def vertex_tangents(vertices, faces, uvs, normals) -> np.ndarray:
    """float32 [V,4]: unit tangent (orthogonal to ``normals`` [V,3], unit) and handedness ±1 per vertex."""
    v = np.asarray(vertices, np.float64).reshape(-1, 3)
    f = np.asarray(faces, np.int64).reshape(-1, 3)
    uv = np.asarray(uvs, np.float64).reshape(-1, 2)
    n = np.asarray(normals, np.float64).reshape(-1, 3)
    dpdu, dpdv = face_uv_gradients(v, f, uv)
    weight = corner_angles(v, f) if len(f) else np.zeros((0, 3))
    # The gradients' own length is the UV scale; only their directions should vote.
    dpdu /= np.maximum(row_norm(dpdu)[:, None], 1e-30)
    dpdv /= np.maximum(row_norm(dpdv)[:, None], 1e-30)
    tu = corner_sums(f, dpdu, weight, len(v))
    tv = corner_sums(f, dpdv, weight, len(v))
    t = tu - n * np.einsum("ij,ij->i", tu, n)[:, None]          # Gram-Schmidt against the normal
    length = row_norm(t)
    bad = length < 1e-12
    t = np.where(bad[:, None], _any_perpendicular(n), t / np.maximum(length, 1e-30)[:, None])
    w = np.where(np.einsum("ij,ij->i", np.cross(n, t), tv) < 0, -1.0, 1.0)
    return np.concatenate([t, w[:, None]], axis=1).astype(np.float32)
