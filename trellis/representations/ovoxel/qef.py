"""Quadric error functions of the O-Voxel dual vertices (TRELLIS2_TEXTURING_FACTS.md §5.3, §5.4).

A quadric is a symmetric 4x4 matrix Q on homogeneous points [x, 1]; E(x) = [x, 1] Q [x, 1]^T. Quadrics are kept
packed as their 10 upper-triangle entries (row-major: q00 q01 q02 q03 q11 q12 q13 q22 q23 q33) so that sums over
many (voxel, term) pairs are plain ``index_add_`` calls.
"""
from __future__ import annotations

import itertools

import torch

__all__ = ["PACKED", "pack", "unpack", "plane_quadrics", "line_quadrics", "regularization_quadrics",
           "solve_box", "quadric_energy"]

# (row, col) of each packed entry.
PACKED = [(r, c) for r in range(4) for c in range(r, 4)]
_ROWS = torch.tensor([r for r, _ in PACKED])
_COLS = torch.tensor([c for _, c in PACKED])


def pack(q: torch.Tensor) -> torch.Tensor:
    """[..., 4, 4] symmetric -> [..., 10]."""
    return q[..., _ROWS.to(q.device), _COLS.to(q.device)]


def unpack(p: torch.Tensor) -> torch.Tensor:
    """[..., 10] -> [..., 4, 4] symmetric."""
    q = p.new_zeros(*p.shape[:-1], 4, 4)
    r, c = _ROWS.to(p.device), _COLS.to(p.device)
    q[..., r, c] = p
    q[..., c, r] = p
    return q


def _outer_packed(a: torch.Tensor) -> torch.Tensor:
    """[..., 4] -> packed a a^T."""
    return a[..., _ROWS.to(a.device)] * a[..., _COLS.to(a.device)]


def plane_quadrics(tri: torch.Tensor) -> torch.Tensor:
    """[F, 10]: P P^T with P = (n, -n.v0), n the unit normal of (v1 - v0) x (v2 - v1); zero for a degenerate
    triangle. ``tri`` [F, 3, 3]."""
    n = torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 1], dim=-1)
    length = n.norm(dim=-1, keepdim=True)
    n = torch.where(length > 0, n / length.clamp(min=torch.finfo(n.dtype).tiny), torch.zeros_like(n))
    plane = torch.cat([n, -(n * tri[:, 0]).sum(-1, keepdim=True)], dim=-1)
    return _outer_packed(plane)


def line_quadrics(v0: torch.Tensor, v1: torch.Tensor) -> torch.Tensor:
    """[E, 10]: squared distance to the infinite line through v0, v1: [[A, -A v0], [-(A v0)^T, v0^T A v0]],
    A = I - d d^T (d the unit direction). Callers drop segments too short to have a direction."""
    d = v1 - v0
    d = d / d.norm(dim=-1, keepdim=True).clamp(min=torch.finfo(d.dtype).tiny)
    eye = torch.eye(3, dtype=d.dtype, device=d.device)
    a = eye - d[:, :, None] * d[:, None, :]
    av0 = (a @ v0[:, :, None])[..., 0]
    q = d.new_zeros(d.shape[0], 4, 4)
    q[:, :3, :3] = a
    q[:, :3, 3] = -av0
    q[:, 3, :3] = -av0
    q[:, 3, 3] = (v0 * av0).sum(-1)
    return pack(q)


def regularization_quadrics(mean_point: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """[N, 10]: weight * |x - mean_point|^2 as a packed quadric ([[I, -p], [-p^T, p.p]] scaled)."""
    p, w = mean_point, weight[:, None]
    zero, one = torch.zeros_like(p[:, 0]), torch.ones_like(p[:, 0])
    cols = [one, zero, zero, -p[:, 0], one, zero, -p[:, 1], one, -p[:, 2], (p * p).sum(-1)]   # PACKED order
    return torch.stack(cols, dim=1) * w


def quadric_energy(q: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """E(x) for unpacked q [N, 4, 4] and points x [N, K, 3] -> [N, K]."""
    a, b, c = q[:, None, :3, :3], -q[:, None, :3, 3], q[:, None, 3, 3]
    return (x[..., None, :] @ a @ x[..., :, None])[..., 0, 0] - 2 * (b * x).sum(-1) + c


def _box_candidates(a: torch.Tensor, b: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor):
    """The 26 constrained minimisers (6 faces x-, x+, y-, y+, z-, z+; 12 edges; 8 corners) and their validity."""
    n = a.shape[0]
    bounds = torch.stack([lo, hi], dim=1)                                      # [N, 2, 3]
    points, valid = [], []
    for axis in range(3):                                                      # faces: one coordinate fixed
        f = [i for i in range(3) if i != axis]
        aff = a[:, f][:, :, f]
        for side in range(2):
            c = bounds[:, side, axis]
            rhs = b[:, f] - a[:, f, axis] * c[:, None]
            det = aff[:, 0, 0] * aff[:, 1, 1] - aff[:, 0, 1] * aff[:, 1, 0]
            y0 = (aff[:, 1, 1] * rhs[:, 0] - aff[:, 0, 1] * rhs[:, 1]) / det
            y1 = (aff[:, 0, 0] * rhs[:, 1] - aff[:, 1, 0] * rhs[:, 0]) / det
            p = a.new_empty(n, 3)
            p[:, axis], p[:, f[0]], p[:, f[1]] = c, y0, y1
            points.append(p)
            valid.append(((p[:, f] >= lo[:, f]) & (p[:, f] <= hi[:, f])).all(dim=1))
    for axis in range(3):                                                      # edges: one coordinate free
        f = [i for i in range(3) if i != axis]
        for s0, s1 in itertools.product(range(2), range(2)):
            c0, c1 = bounds[:, s0, f[0]], bounds[:, s1, f[1]]
            y = (b[:, axis] - a[:, axis, f[0]] * c0 - a[:, axis, f[1]] * c1) / a[:, axis, axis]
            p = a.new_empty(n, 3)
            p[:, axis], p[:, f[0]], p[:, f[1]] = y, c0, c1
            points.append(p)
            valid.append((y >= lo[:, axis]) & (y <= hi[:, axis]))
    for sx, sy, sz in itertools.product(range(2), range(2), range(2)):        # corners
        points.append(torch.stack([bounds[:, sx, 0], bounds[:, sy, 1], bounds[:, sz, 2]], dim=1))
        valid.append(torch.ones(n, dtype=torch.bool, device=a.device))
    return torch.stack(points, dim=1), torch.stack(valid, dim=1)


def solve_box(q: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x [N, 3], E [N]): the minimiser of E over the closed box [lo, hi] for positive-definite packed quadrics
    q [N, 10]. The unconstrained minimiser A^-1 b when it lies in the box, else the best of the 26 face, edge and
    corner candidates (first on ties, in the order of ``_box_candidates``)."""
    full = unpack(q)
    a, b = full[:, :3, :3], -full[:, :3, 3]
    x = torch.linalg.solve(a, b) if q.shape[0] else b.clone()
    outside = ~((x >= lo) & (x <= hi)).all(dim=1)
    if bool(outside.any()):
        rows = outside.nonzero(as_tuple=True)[0]
        pts, ok = _box_candidates(a[rows], b[rows], lo[rows], hi[rows])
        e = quadric_energy(full[rows], pts)
        e = torch.where(ok, e, torch.full_like(e, float("inf")))
        best = e.argmin(dim=1)
        x = x.clone()
        x[rows] = pts[torch.arange(rows.shape[0], device=q.device), best]
    return x, quadric_energy(full, x[:, None, :])[:, 0]
