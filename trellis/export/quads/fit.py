"""The quad mesh's corners fitted to the source surface, for the two-sided (Hausdorff) distance.

Corners set onto the source leave the flat quads short of its bulges (a feature's tip the quads cut across) and
past its hollows. Each round moves every corner part of the way along the weighted mean of the gaps that touch it:
from the source's points to their closest points on the quads (spread over the triangle's corners by barycentric
weight) and from points of the quads to their closest points on the source. The weights grow with a power of the
gap that rises over the rounds (a mean of the gaps at first, nearer to their maximum later), so the largest gaps
(the ones the Hausdorff distance reads) lead. A move that would turn a triangle over is not made; the round with
the smallest largest gap is kept.
"""
from __future__ import annotations

import numpy as np

from .measure import closest_on_triangles, fan_triangles, sample_surface
from .nearest import NearestTriangles

# The gap weight's power in each round: low powers first settle the whole surface, high ones chase the largest gap.
FIT_POWERS = (4.0, 6.0, 8.0, 8.0, 8.0, 8.0)
# Share of the weighted mean gap a corner moves per round: neighbours move together, a full step overshoots.
FIT_STEP = 0.5
FIT_SAMPLES = 30000
MIN_SAMPLES = 2000
SAMPLES_PER_TRIANGLE = 8
# Gaps are weighted by (gap / (this share of the bounding-box diagonal)) ** power.
GAP_SCALE = 0.005


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


def _spread(num, den, tris, bary, gap, weight):
    """Each gap, weighted, added to the corners of its triangle by barycentric share."""
    w = bary * weight[:, None]
    for j in range(3):
        np.add.at(num, tris[:, j], w[:, j:j + 1] * gap)
        np.add.at(den, tris[:, j], w[:, j])


def fit_corners(vertices, faces, source_vertices, source_faces, *, powers=FIT_POWERS, step: float = FIT_STEP,
                samples: int = FIT_SAMPLES, seed: int = 0, return_gap: bool = False,
                source: NearestTriangles | None = None):
    """The quad mesh's ``vertices`` moved to lower the largest gap between its surface (``faces``, (F, 4) with -1
    for a triangle) and the source's; the input where no round lowers it. With ``return_gap``, also that largest
    gap (absolute, over the fit's own samples). ``source``: the source's search, where the caller built it."""
    qv = np.asarray(vertices, np.float64)
    src_v, src_f = np.asarray(source_vertices, np.float64), np.asarray(source_faces, np.int64)
    tris = fan_triangles(faces)
    scale = GAP_SCALE * float(np.linalg.norm(src_v.max(axis=0) - src_v.min(axis=0))) if len(src_v) else 0.0
    if len(tris) == 0 or len(src_f) == 0 or scale <= 0:
        return (qv, np.inf) if return_gap else qv
    rng = np.random.default_rng(seed)
    # as many points as the quads can answer to: a small quad mesh needs few, a dense source's corners are thinned
    samples = min(int(samples), max(MIN_SAMPLES, SAMPLES_PER_TRIANGLE * len(tris)))
    corners = src_v if len(src_v) <= 2 * samples else src_v[rng.choice(len(src_v), 2 * samples, replace=False)]
    source_points = np.concatenate([corners, sample_surface(src_v, src_f, samples, seed=seed + 11)])
    source = source if source is not None else NearestTriangles(src_v, src_f)
    # the quads' points keep their triangle and weights while the corners move: every round reads the same points
    pick, qbary = _sample_with_weights(qv, tris, samples, rng)
    pick_tris = np.concatenate([tris[pick], np.stack([np.arange(len(qv))] * 3, axis=1)])
    qbary = np.concatenate([qbary, np.tile([1.0, 0.0, 0.0], (len(qv), 1))])
    reference = _normals(qv, tris)
    best, best_gap = qv, np.inf
    for done in range(len(powers) + 1):
        # the source's points to the quads
        closest, tri, bary = closest_on_triangles(source_points, qv, tris)
        gap = source_points - closest
        size = np.linalg.norm(gap, axis=1)
        # the quads' points (their corners too) to the source
        points = (qv[pick_tris] * qbary[..., None]).sum(axis=1)
        back = source.closest(points)[0] - points
        back_size = np.linalg.norm(back, axis=1)
        largest = max(float(size.max()), float(back_size.max()))
        if largest < best_gap:
            best, best_gap = qv, largest
        if done == len(powers):
            break
        num, den = np.zeros_like(qv), np.zeros(len(qv))
        _spread(num, den, tris[tri], bary, gap, (size / scale) ** powers[done])
        _spread(num, den, pick_tris, qbary, back, (back_size / scale) ** powers[done])
        moved = qv + step * num / np.maximum(den, 1e-30)[:, None]
        # corners of triangles the move would turn over stay where they are
        for _undo in range(3):
            over = np.einsum("ij,ij->i", _normals(moved, tris), reference) < 0
            if not over.any():
                break
            stay = np.unique(tris[over])
            moved[stay] = qv[stay]
        qv = moved
    return (best, best_gap) if return_gap else best
