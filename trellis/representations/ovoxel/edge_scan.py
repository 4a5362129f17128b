"""Which O-Voxels exist: the grid edges a triangle mesh crosses (TRELLIS2_TEXTURING_FACTS.md §5.2).

Everything is in grid units (the [0, 1]^3 frame times R), so grid lines sit at integers. For each axis a the lines
parallel to a at (ax0, ax1) = (m, n), m, n in 1..R-1, are tested against each triangle's projection with the
half-open rule (rows y0 < n <= y2, columns x_left < m <= x_right); a crossing at height z gives the 4 voxels
(m - 1 + d0, n - 1 + d1, floor z) around that edge, and the a-flag of the (d0, d1) = (0, 0) one.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Crossings", "chunk_bounds", "expand", "scan_axis"]


def chunk_bounds(counts: torch.Tensor, budget: int):
    """Yield (start, end) slices of ``counts`` whose sums stay within ``budget`` (one item at least)."""
    cum = torch.cumsum(counts, 0)
    total, start, done = counts.shape[0], 0, 0
    while start < total:
        end = int(torch.searchsorted(cum, torch.tensor(done + budget, device=cum.device), right=True))
        end = max(end, start + 1)
        yield start, end
        done = int(cum[end - 1])
        start = end


def expand(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(parent, local) for ``counts`` children per parent: parent index and rank of each child."""
    parent = torch.repeat_interleave(torch.arange(counts.shape[0], device=counts.device), counts)
    start = torch.cumsum(counts, 0) - counts
    local = torch.arange(parent.shape[0], device=counts.device) - start[parent]
    return parent, local


@dataclass
class Crossings:
    """Grid-edge crossings of one axis: the triangle, the line (m, n), the height z and the creation key."""
    axis: int
    tri: torch.Tensor        # int64 [H]
    m: torch.Tensor          # int64 [H]
    n: torch.Tensor          # int64 [H]
    z: torch.Tensor          # float [H], in grid units along the axis
    event: torch.Tensor      # int64 [H]: ((tri * 3 + axis) * R + n) * R + m, the reference's creation order

    def voxels(self, resolution: int):
        """(coords [H, 4, 3] int64 in x, y, z order, flag [H, 4] bool, point [H, 3]) of the 4 voxels per crossing,
        in (d0 outer, d1 inner) order; the point is the 3-D crossing."""
        a, ax0, ax1 = self.axis, (self.axis + 1) % 3, (self.axis + 2) % 3
        d0 = torch.tensor([0, 0, 1, 1], device=self.m.device)
        d1 = torch.tensor([0, 1, 0, 1], device=self.m.device)
        coords = torch.empty(self.m.shape[0], 4, 3, dtype=torch.long, device=self.m.device)
        coords[:, :, ax0] = self.m[:, None] - 1 + d0
        coords[:, :, ax1] = self.n[:, None] - 1 + d1
        coords[:, :, a] = torch.floor(self.z).long()[:, None]
        flag = (d0 == 0) & (d1 == 0)
        point = torch.empty(self.m.shape[0], 3, dtype=self.z.dtype, device=self.z.device)
        point[:, ax0], point[:, ax1], point[:, a] = self.m.to(self.z.dtype), self.n.to(self.z.dtype), self.z
        return coords, flag.expand(self.m.shape[0], 4), point


def _rows(tri: torch.Tensor, axis: int, resolution: int):
    """Per triangle, its vertices sorted by the row coordinate and its first row and row count."""
    ax0, ax1 = (axis + 1) % 3, (axis + 2) % 3
    proj = tri[:, :, [ax0, ax1, axis]]                                       # (x, y, z) = (ax0, ax1, a)
    order = torch.argsort(proj[:, :, 1], dim=1)
    proj = torch.gather(proj, 1, order[:, :, None].expand(-1, -1, 3))
    y0, y2 = proj[:, 0, 1], proj[:, 2, 1]
    first = (torch.floor(y0).long() + 1).clamp(min=1)                         # smallest n > y0
    last = torch.floor(y2).long().clamp(max=resolution - 1)                  # largest n <= y2
    return proj, first, (last - first + 1).clamp(min=0)


def _edge_at(pa, pb, n):
    """(x, z) where the row y = n meets the edge pa -> pb (rows known to lie in its span)."""
    dy = pb[:, 1] - pa[:, 1]
    t = (n - pa[:, 1]) / torch.where(dy == 0, torch.ones_like(dy), dy)
    return pa[:, 0] + t * (pb[:, 0] - pa[:, 0]), pa[:, 2] + t * (pb[:, 2] - pa[:, 2])


def scan_axis(tri: torch.Tensor, tri_ids: torch.Tensor, axis: int, resolution: int, budget: int):
    """Yield Crossings of the lines parallel to ``axis`` for triangles ``tri`` [F, 3, 3] (grid units), in
    triangle, row, column order; each batch holds about ``budget`` crossings or fewer."""
    proj, first, nrows = _rows(tri, axis, resolution)
    for s, e in chunk_bounds(nrows, budget):
        t_local, r = expand(nrows[s:e])
        p = proj[s:e][t_local]
        n = (first[s:e][t_local] + r)
        nf = n.to(p.dtype)
        xa, za = _edge_at(p[:, 0], p[:, 2], nf)                              # the long edge spans every row
        upper = nf > p[:, 1, 1]
        xs0, zs0 = _edge_at(p[:, 0], p[:, 1], nf)
        xs1, zs1 = _edge_at(p[:, 1], p[:, 2], nf)
        xb, zb = torch.where(upper, xs1, xs0), torch.where(upper, zs1, zs0)
        swap = xb < xa
        xl, xr = torch.where(swap, xb, xa), torch.where(swap, xa, xb)
        zl, zr = torch.where(swap, zb, za), torch.where(swap, za, zb)
        mfirst = (torch.floor(xl).long() + 1).clamp(min=1)
        ncols = (torch.floor(xr).long().clamp(max=resolution - 1) - mfirst + 1).clamp(min=0)
        for cs, ce in chunk_bounds(ncols, budget):
            row, c = expand(ncols[cs:ce])
            row = row + cs
            m = mfirst[row] + c
            width = (xr - xl)[row]
            z = zl[row] + (zr - zl)[row] * (m.to(p.dtype) - xl[row]) / torch.where(width > 0, width,
                                                                                   torch.ones_like(width))
            keep = (z >= 0) & (z < resolution)
            tri_id = tri_ids[s:e][t_local[row]]
            tri_id, m, nn, z = tri_id[keep], m[keep], n[row][keep], z[keep]
            event = ((tri_id * 3 + axis) * resolution + nn) * resolution + m
            yield Crossings(axis, tri_id, m, nn, z, event)
