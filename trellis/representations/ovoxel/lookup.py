"""Row of a voxel by its integer coordinates: a sorted-key lookup (binary search, no Python loop over voxels)."""
from __future__ import annotations

import torch

__all__ = ["VoxelLookup"]


class VoxelLookup:
    """Index of [M, 3] distinct non-negative integer voxel coordinates; ``find`` answers many queries at once."""

    def __init__(self, coords: torch.Tensor):
        if coords.ndim != 2 or coords.shape[1] != 3:
            raise ValueError(f"voxel coords must be [M, 3], got {tuple(coords.shape)}")
        c = coords.long()
        if c.numel() and bool((c < 0).any()):
            raise ValueError("voxel coords must be non-negative")
        self.count = c.shape[0]
        self.dims = (c.amax(0) + 1) if self.count else torch.ones(3, dtype=torch.long, device=c.device)
        self.sorted_keys, self.order = torch.sort(self.keys(c))

    def keys(self, c: torch.Tensor) -> torch.Tensor:
        """x-major linear key inside the coordinates' bounding box (int64: 1536^3 fits easily)."""
        return (c[..., 0] * self.dims[1] + c[..., 1]) * self.dims[2] + c[..., 2]

    def find(self, queries: torch.Tensor) -> torch.Tensor:
        """int64 [...]: the row of each query [..., 3] (any integer dtype, may be negative), or -1 if absent."""
        q = queries.long()
        if self.count == 0:
            return torch.full(q.shape[:-1], -1, dtype=torch.long, device=q.device)
        inside = ((q >= 0) & (q < self.dims)).all(dim=-1)
        k = self.keys(torch.minimum(q.clamp(min=0), self.dims - 1))
        pos = torch.searchsorted(self.sorted_keys, k.reshape(-1)).clamp_(max=self.count - 1).view(k.shape)
        hit = inside & (self.sorted_keys[pos] == k)
        return torch.where(hit, self.order[pos], torch.full_like(pos, -1))
