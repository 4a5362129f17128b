"""Triangle mesh -> O-Voxel, TRELLIS.2's flexible dual grid (TRELLIS2_TEXTURING_FACTS.md §5), in PyTorch.

The mesh lies in the aabb [-0.5, 0.5]^3 (z up, as the texturing pipeline normalises it); R = resolution. Voxels
exist around every grid edge the surface crosses (edge_scan); each gets one dual vertex, the box-constrained
minimiser of its quadric (intersection + face + boundary + regularisation terms, qef / voxel_terms), and 3
edge-crossing flags. Work is chunked (``chunk`` crossings or candidate boxes at a time) so memory stays bounded by
the voxel table (about 150 bytes per voxel, float64) plus one chunk's temporaries. Runs on any device.

This is the PyTorch twin; on the GPU a fused scan + scatter kernel would replace ``_crossing_table`` and the face
term's candidate loop (``voxel_terms.add_face_term``).
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from ...core.callbacks import CancelCheck, check
from .dual_grid import flexible_dual_grid_to_mesh
from .edge_scan import scan_axis
from .lookup import VoxelLookup
from .mesh_with_voxel import MeshWithVoxel
from .qef import plane_quadrics, regularization_quadrics, solve_box
from .voxel_terms import add_boundary_term, add_face_term, boundary_edges

__all__ = ["OVoxelGrid", "mesh_to_ovoxel", "ovoxel_features", "ovoxel_mesh", "weld_vertices",
           "FACE_WEIGHT", "BOUNDARY_WEIGHT", "REGULARIZATION"]

# The texturing pipeline's call (the o-voxel Python wrapper's own defaults differ and are not used).
FACE_WEIGHT, BOUNDARY_WEIGHT, REGULARIZATION = 1.0, 0.2, 1e-2
# Boundary edges shorter than this (world units) have no direction.
MIN_BOUNDARY_LENGTH = 1e-6
DEFAULT_CHUNK = 1 << 20


class OVoxelGrid(NamedTuple):
    """coords int32 [N, 3] (x, y, z) on the R^3 grid, in the reference's creation order; dual_vertices float32
    [N, 3] local, in [0, 1]^3 of their voxel (world = (coords + d) / R - 0.5); intersected bool [N, 3] (the a-flag
    is the voxel's edge along a at its +ax0, +ax1 corner)."""
    coords: torch.Tensor
    dual_vertices: torch.Tensor
    intersected: torch.Tensor


def ovoxel_features(grid: OVoxelGrid) -> torch.Tensor:
    """float32 [N, 6]: the shape encoder's input, [d - 0.5, flags - 0.5]."""
    return torch.cat([grid.dual_vertices.float() - 0.5, grid.intersected.float() - 0.5], dim=1)


def ovoxel_mesh(grid: OVoxelGrid, resolution: int, attrs: torch.Tensor | None = None) -> MeshWithVoxel:
    """The MeshWithVoxel a perfect decoder would give for this grid: its dual-grid mesh (quads split by normal
    alignment, as without predicted split weights), its voxels and optional per-voxel attributes."""
    v, f = flexible_dual_grid_to_mesh(grid.coords, grid.dual_vertices, grid.intersected, None, resolution)
    return MeshWithVoxel(v, f, grid.coords, resolution, attrs)


def weld_vertices(vertices: torch.Tensor, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(unique positions, faces re-indexed onto them): vertices split at UV seams or hard edges become one."""
    uniq, inverse = torch.unique(vertices, dim=0, return_inverse=True)
    return uniq, inverse[faces.long()]


class _VoxelSet:
    """Voxels found so far, sorted by key, with their flags and first creation event (pass 1 of the scan)."""

    def __init__(self, device):
        self.keys = torch.zeros(0, dtype=torch.long, device=device)
        self.flags = torch.zeros(0, 3, dtype=torch.int32, device=device)
        self.event = torch.zeros(0, dtype=torch.long, device=device)

    def merge(self, keys, flags, event):
        uniq, inv = torch.unique(torch.cat([self.keys, keys]), return_inverse=True)
        n = uniq.shape[0]
        self.flags = self.flags.new_zeros(n, 3).index_add_(0, inv, torch.cat([self.flags, flags]))
        big = torch.iinfo(torch.long).max
        self.event = torch.full((n,), big, dtype=torch.long, device=keys.device).scatter_reduce_(
            0, inv, torch.cat([self.event, event]), reduce="amin")
        self.keys = uniq


def _crossings(tri, r: int, chunk: int, cancel: CancelCheck = None):
    """(axis, Crossings, voxel keys [H, 4]) batch by batch, every axis; ``cancel`` asked between batches."""
    ids = torch.arange(tri.shape[0], device=tri.device)
    for axis in range(3):
        for cr in scan_axis(tri, ids, axis, r, chunk):
            check(cancel)
            if cr.tri.numel() == 0:
                continue
            coords, flag, point = cr.voxels(r)
            yield axis, cr, (coords[..., 0] * r + coords[..., 1]) * r + coords[..., 2], flag, point


def _crossing_table(g: torch.Tensor, faces: torch.Tensor, plane_q: torch.Tensor, resolution: int, chunk: int,
                    cancel: CancelCheck = None):
    """(voxel keys sorted, flags, first events, point sums, counts, intersection quadric sums). Two passes over
    the crossings: the voxel set first (small records), then the sums straight into their rows (no merging of
    the wide quadric records)."""
    tri = g[faces]
    found = _VoxelSet(g.device)
    for axis, cr, keys, flag, _ in _crossings(tri, resolution, chunk, cancel):
        flags = torch.zeros(*keys.shape, 3, dtype=torch.int32, device=g.device)
        flags[:, :, axis] = flag.int()
        event = cr.event[:, None] * 4 + torch.arange(4, device=g.device)
        found.merge(keys.reshape(-1), flags.reshape(-1, 3), event.reshape(-1))
    n = found.keys.shape[0]
    psum = g.new_zeros(n, 3)
    count = g.new_zeros(n)
    q = g.new_zeros(n, 10)
    for _, cr, keys, _, point in _crossings(tri, resolution, chunk, cancel):
        rows = torch.searchsorted(found.keys, keys)                          # [H, 4]
        tri_q, ones = plane_q[cr.tri], torch.ones_like(point[:, 0])
        for d in range(4):
            psum.index_add_(0, rows[:, d], point)
            count.index_add_(0, rows[:, d], ones)
            q.index_add_(0, rows[:, d], tri_q)
    return found.keys, found.flags, found.event, psum, count, q


@torch.no_grad()
def mesh_to_ovoxel(vertices: torch.Tensor, faces: torch.Tensor, resolution: int, *,
                   face_weight: float = FACE_WEIGHT, boundary_weight: float = BOUNDARY_WEIGHT,
                   regularization: float = REGULARIZATION, weld: bool = True, chunk: int = DEFAULT_CHUNK,
                   dtype: torch.dtype = torch.float64, cancel: CancelCheck = None) -> OVoxelGrid:
    """The O-Voxel of a triangle mesh (``vertices`` [V, 3] inside [-0.5, 0.5]^3, ``faces`` [F, 3]) at R^3.

    ``weld``: boundary edges are found on positions (vertices split at seams are one); the reference finds them by
    vertex index (``weld=False``), so a mesh split at UV seams gets boundary pulls along its seams there.
    Runs on ``vertices``' device; ``cancel()`` returning True raises ``Cancelled`` (asked between chunks)."""
    if resolution < 2:
        raise ValueError(f"resolution must be at least 2, got {resolution}")
    if vertices.ndim != 2 or vertices.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError("vertices must be [V, 3] and faces [F, 3]")
    device = vertices.device
    faces = faces.to(device).long()
    g = (vertices.to(dtype) + 0.5) * resolution                                # grid units
    plane_q = plane_quadrics(g[faces])
    keys, flags, event, psum, count, q = _crossing_table(g, faces, plane_q, resolution, chunk, cancel)
    r = resolution
    coords = torch.stack([keys // (r * r), (keys // r) % r, keys % r], dim=1)
    if coords.shape[0]:
        lookup = VoxelLookup(coords)
        if face_weight > 0:
            add_face_term(q, g[faces], plane_q, lookup, r, chunk, cancel)
        if boundary_weight > 0:
            bv, bf = weld_vertices(g, faces) if weld else (g, faces)
            add_boundary_term(q, bv, boundary_edges(bf), lookup, boundary_weight, MIN_BOUNDARY_LENGTH * r, chunk,
                              cancel)
        q += regularization_quadrics(psum / count[:, None], regularization * count)
    dual = torch.empty(coords.shape[0], 3, dtype=torch.float32, device=device)
    for a in range(0, coords.shape[0], chunk):                             # bounds the 4x4 unpacking
        check(cancel)
        lo = coords[a:a + chunk].to(dtype)
        dual[a:a + chunk] = (solve_box(q[a:a + chunk], lo, lo + 1)[0] - lo).float()
    order = torch.argsort(event)
    return OVoxelGrid(coords[order].int(), dual[order], flags[order] > 0)
