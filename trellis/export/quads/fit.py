"""The quad mesh's corners fitted to the source surface, for the two-sided (Hausdorff) distance.

Corners set onto the source leave the flat quads short of its bulges (a feature's tip the quads cut across) and
past its hollows. Each round moves every corner by the weighted mean of the gaps that touch it: from the source's
points to their closest points on the quads (spread over the triangle's corners by barycentric weight) and from
points of the quads to their closest points on the source. The weights grow with the gap's fourth power, so the largest
gaps (the ones the Hausdorff distance reads) lead. A move that would turn a triangle over is not made; the round
with the smallest largest gap is kept.
"""
from __future__ import annotations

import numpy as np

from .measure import closest_on_triangles, closest_points, fan_triangles, sample_surface

FIT_ROUNDS = 2
FIT_SAMPLES = 30000
MIN_SAMPLES = 2000
SAMPLES_PER_TRIANGLE = 8
# Gaps are weighted by (gap / (this share of the bounding-box diagonal)) ** FIT_POWER.
GAP_SCALE = 0.005
FIT_POWER = 4.0


def _sample_with_weights(vertices, tris, count: int, rng):
    """(triangle index, barycentric weights) of points drawn by area on the triangles."""
    a, b, c = (vertices[tris[:, i]] for i in range(3))
    area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    pick = rng.choice(len(tris), size=count, p=area / area.sum())
    u, v = rng.random(count), rng.random(count)
    flip = u + v > 1
    u[flip], v[flip] = 1 - u[flip], 1 - v[flip]
    return pick, np.stack([1 - u - v, u, v], axis=1)


def _normals(vertices, tris):
    return np.cross(vertices[tris[:, 1]] - vertices[tris[:, 0]], vertices[tris[:, 2]] - vertices[tris[:, 0]])


def fit_corners(vertices, faces, source_vertices, source_faces, *, rounds: int = FIT_ROUNDS,
                samples: int = FIT_SAMPLES, seed: int = 0) -> np.ndarray:
    """The quad mesh's ``vertices`` moved to lower the largest gap between its surface (``faces``, (F, 4) with -1
    for a triangle) and the source's; the input where no round lowers it."""
    qv = np.asarray(vertices, np.float64)
    src_v, src_f = np.asarray(source_vertices, np.float64), np.asarray(source_faces, np.int64)
    tris = fan_triangles(faces)
    if len(tris) == 0 or len(src_f) == 0 or rounds < 1:
        return qv
    rng = np.random.default_rng(seed)
    scale = GAP_SCALE * float(np.linalg.norm(src_v.max(axis=0) - src_v.min(axis=0)))
    if scale <= 0:
        return qv
    # as many points as the quads can answer to: a small quad mesh needs few, a dense source's corners are thinned
    samples = min(int(samples), max(MIN_SAMPLES, SAMPLES_PER_TRIANGLE * len(tris)))
    corners = src_v if len(src_v) <= 2 * samples else src_v[rng.choice(len(src_v), 2 * samples, replace=False)]
    source_points = np.concatenate([corners, sample_surface(src_v, src_f, samples, seed=seed + 11)])
    reference = _normals(qv, tris)
    best, best_gap = qv, np.inf
    for done in range(rounds + 1):
        num, den = np.zeros_like(qv), np.zeros(len(qv))
        # the source's points to the quads
        closest, tri, bary = closest_on_triangles(source_points, qv, tris)
        gap = source_points - closest
        size = np.linalg.norm(gap, axis=1)
        weight = bary * ((size / scale) ** FIT_POWER)[:, None]
        # the quads' points (their corners too) to the source
        pick, qbary = _sample_with_weights(qv, tris, samples, rng)
        points = np.concatenate([(qv[tris[pick]] * qbary[..., None]).sum(axis=1), qv])
        back = closest_points(points, src_v, src_f) - points
        back_size = np.linalg.norm(back, axis=1)
        largest = max(float(size.max()), float(back_size.max()))
        if largest < best_gap:
            best, best_gap = qv, largest
        if done == rounds:
            break
        for j in range(3):
            np.add.at(num, tris[tri, j], weight[:, j:j + 1] * gap)
            np.add.at(den, tris[tri, j], weight[:, j])
        inner, corner = back[:samples], back[samples:]
        qweight = qbary * ((back_size[:samples] / scale) ** FIT_POWER)[:, None]
        for j in range(3):
            np.add.at(num, tris[pick, j], qweight[:, j:j + 1] * inner)
            np.add.at(den, tris[pick, j], qweight[:, j])
        cweight = (back_size[samples:] / scale) ** FIT_POWER
        num += cweight[:, None] * corner
        den += cweight
        moved = qv + num / np.maximum(den, 1e-30)[:, None]
        # corners of triangles the move would turn over stay where they are
        for _undo in range(3):
            over = np.einsum("ij,ij->i", _normals(moved, tris), reference) < 0
            if not over.any():
                break
            stay = np.unique(tris[over])
            moved[stay] = qv[stay]
        qv = moved
    return best
