"""The face and boundary quadric terms of the O-Voxel QEF (TRELLIS2_TEXTURING_FACTS.md §5.3), in grid units.

Face term: every existing voxel whose closed box passes the conservative triangle-box overlap test gets the
triangle's plane quadric once. Only boxes that can pass are enumerated (per column of the triangle's dominant-axis
projection, the voxels the plane passes through), then tested exactly: the same set as testing the whole voxel bbox.

Boundary term: every existing voxel a 3-D DDA walk along a boundary edge visits gets weight x its line quadric; on
equal crossing parameters the later axis steps first (z before y before x).
"""
from __future__ import annotations

import torch

from ...core.callbacks import CancelCheck, check
from .edge_scan import chunk_bounds, expand
from .lookup import VoxelLookup
from .qef import line_quadrics

__all__ = ["overlap_tests", "box_overlaps_triangle", "boxes_pass", "add_face_term", "boundary_edges", "add_boundary_term"]

_PROJECTIONS = ((0, 1, 2), (1, 2, 0), (2, 0, 1))        # (i0, i1, dropped): XY, YZ, ZX


_I0 = [i0 for i0, _, _ in _PROJECTIONS for _ in range(3)]
_I1 = [i1 for _, i1, _ in _PROJECTIONS for _ in range(3)]


def overlap_tests(tri: torch.Tensor, normal: torch.Tensor, h: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per triangle, the conservative triangle-box test's constants for boxes of size h: (plane [F, 2], the two
    critical-corner offsets of n.p; edges [F, 9, 3], (n0, n1, d) of the XY, YZ, ZX edge functions)."""
    c = torch.where(normal > 0, torch.full_like(normal, h), torch.zeros_like(normal))
    v0 = tri[:, 0]
    plane = torch.stack([(normal * (c - v0)).sum(-1), (normal * (h - c - v0)).sum(-1)], dim=1)
    edges = []
    for i0, i1, drop in _PROJECTIONS:
        s = torch.where(normal[:, drop] >= 0, 1.0, -1.0).to(tri.dtype)
        for i in range(3):
            a, b = tri[:, i], tri[:, (i + 1) % 3]
            n0, n1 = -(b[:, i1] - a[:, i1]) * s, (b[:, i0] - a[:, i0]) * s
            d = -(n0 * a[:, i0] + n1 * a[:, i1]) + (h * n0).clamp(min=0) + (h * n1).clamp(min=0)
            edges.append(torch.stack([n0, n1, d], dim=1))
    return plane, torch.stack(edges, dim=1)


def box_overlaps_triangle(tri: torch.Tensor, normal: torch.Tensor, p: torch.Tensor, h: float = 1.0) -> torch.Tensor:
    """bool [K]: the closed box [p, p + h] passes the plane test and the 9 projected edge tests of ``tri`` [K, 3, 3]
    (``normal`` [K, 3] its (v1 - v0) x (v2 - v1)) (Schwarz-Seidel style)."""
    return boxes_pass(*overlap_tests(tri, normal, h), normal, p)


def boxes_pass(plane: torch.Tensor, edges: torch.Tensor, normal: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """bool [K]: the tests of ``overlap_tests`` (rows already gathered per box) on box corners p [K, 3]."""
    np_ = (normal * p).sum(-1)
    ok = (np_ + plane[:, 0]) * (np_ + plane[:, 1]) <= 0
    e = edges[:, :, 0] * p[:, _I0] + edges[:, :, 1] * p[:, _I1] + edges[:, :, 2]
    return ok & (e >= 0).all(dim=1)


def add_face_term(q: torch.Tensor, tri: torch.Tensor, plane_q: torch.Tensor, lookup: VoxelLookup, resolution: int,
                  budget: int, cancel: CancelCheck = None) -> None:
    """q [N, 10] += plane_q[f] for every (triangle f, existing voxel overlapping it); ``tri`` in grid units."""
    normal = torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 1], dim=-1)
    lo = torch.floor(tri.amin(1)).long().clamp(0, resolution - 1)
    hi = torch.floor(tri.amax(1)).long().clamp(0, resolution - 1)
    plane, edges = overlap_tests(tri, normal)
    dominant = normal.abs().argmax(dim=1)
    nonzero = (normal != 0).any(dim=1)
    for d in range(3):
        u, w = (d + 1) % 3, (d + 2) % 3
        ids = (nonzero & (dominant == d)).nonzero(as_tuple=True)[0]
        if ids.numel() == 0:
            continue
        wu, ww = hi[ids, u] - lo[ids, u] + 1, hi[ids, w] - lo[ids, w] + 1
        for s, e in chunk_bounds(wu * ww, max(1, budget // 4)):           # up to ~4 boxes per column
            check(cancel)
            t, c = expand((wu * ww)[s:e])
            f = ids[s:e][t]
            i, j = lo[f, u] + c // ww[s:e][t], lo[f, w] + c % ww[s:e][t]
            n, v0 = normal[f], tri[f, 0]
            off = (n * v0).sum(-1)
            heights = torch.stack([(off - n[:, u] * (i + du) - n[:, w] * (j + dw)) / n[:, d]
                                   for du in (0, 1) for dw in (0, 1)], dim=1)
            kfirst = torch.maximum(torch.ceil(heights.amin(1)).long() - 1, lo[f, d])
            klast = torch.minimum(torch.floor(heights.amax(1)).long(), hi[f, d])
            col, k = expand((klast - kfirst + 1).clamp(min=0))
            box = torch.empty(col.shape[0], 3, dtype=torch.long, device=tri.device)
            box[:, u], box[:, w], box[:, d] = i[col], j[col], kfirst[col] + k
            fc = f[col]
            row = lookup.find(box)
            hit = row >= 0
            hit[hit.clone()] = boxes_pass(plane[fc[hit]], edges[fc[hit]], normal[fc[hit]], box[hit].to(tri.dtype))
            q.index_add_(0, row[hit], plane_q[fc[hit]])


def boundary_edges(faces: torch.Tensor) -> torch.Tensor:
    """int64 [B, 2]: undirected edges (by vertex index, smaller first) used by exactly one face."""
    e = faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2).long()
    e = torch.sort(e, dim=1).values
    n = int(e.max()) + 1 if e.numel() else 1
    uniq, counts = torch.unique(e[:, 0] * n + e[:, 1], return_counts=True)
    uniq = uniq[counts == 1]
    return torch.stack([uniq // n, uniq % n], dim=1)


def add_boundary_term(q: torch.Tensor, vertices: torch.Tensor, edges: torch.Tensor, lookup: VoxelLookup,
                      weight: float, min_length: float, budget: int, cancel: CancelCheck = None) -> None:
    """q [N, 10] += weight * line quadric for every (boundary edge, existing voxel its DDA walk visits);
    ``vertices`` in grid units, edges shorter than ``min_length`` (grid units) skipped."""
    a, b = vertices[edges[:, 0]], vertices[edges[:, 1]]
    keep = (b - a).norm(dim=-1) >= min_length
    a, b = a[keep], b[keep]
    if a.shape[0] == 0:
        return
    line_q = line_quadrics(a, b) * weight
    start = torch.floor(a).long()
    d = b - a
    pos = torch.where(d > 0, torch.floor(b).long() - start, torch.zeros_like(start)).clamp(min=0)
    neg = torch.where(d < 0, start - torch.ceil(b).long() + 1, torch.zeros_like(start)).clamp(min=0)
    steps = pos + neg                                                          # per segment and axis
    for s, e in chunk_bounds(steps.sum(1) + 1, budget):
        check(cancel)
        seg_parts, t_parts, axis_parts = [], [], []
        for axis in range(3):
            seg, j = expand(steps[s:e, axis])
            seg = seg + s
            forward = d[seg, axis] > 0
            plane = torch.where(forward, start[seg, axis] + 1 + j, start[seg, axis] - j).to(a.dtype)
            seg_parts.append(seg)
            t_parts.append((plane - a[seg, axis]) / d[seg, axis])
            axis_parts.append(torch.full_like(seg, axis))
        seg, t, axis = torch.cat(seg_parts), torch.cat(t_parts), torch.cat(axis_parts)
        order = torch.sort(-axis, stable=True).indices                        # later axis first on ties
        order = order[torch.sort(t[order], stable=True).indices]
        order = order[torch.sort(seg[order], stable=True).indices]
        seg, axis = seg[order], axis[order]
        step = torch.zeros(seg.shape[0], 3, dtype=torch.long, device=a.device)
        step[torch.arange(seg.shape[0], device=a.device), axis] = torch.sign(d[seg, axis]).long()
        cum = torch.cumsum(step, 0)
        counts = steps[s:e].sum(1)
        first = torch.cumsum(counts, 0) - counts                               # first crossing of each segment
        base = (cum - step)[first.clamp(max=max(seg.shape[0] - 1, 0))] if seg.shape[0] else cum.new_zeros(0, 3)
        walked = start[seg] + cum - base[seg - s] if seg.shape[0] else start.new_zeros(0, 3)
        segs = torch.cat([torch.arange(s, e, device=a.device), seg])
        voxels = torch.cat([start[s:e], walked])
        row = lookup.find(voxels)
        hit = row >= 0
        q.index_add_(0, row[hit], line_q[segs[hit]])
