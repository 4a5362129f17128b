"""Sampling a sparse voxel attribute volume at points (TRELLIS2_FACTS.md §10.2, FlexGEMM's grid_sample_3d).

Queries are in voxel units: voxel i covers [i, i + 1), its centre is i + 0.5. Trilinear mode blends the 8 voxels
floor(q - 0.5) + {0, 1}^3 that exist, weights prod(1 - |n + 0.5 - q|) renormalised over those (zero where none
exists); nearest mode reads voxel floor(q), or zero.
"""
from __future__ import annotations

import torch

from .lookup import VoxelLookup

__all__ = ["grid_sample_3d"]

# Queries per chunk (8 corners x (index + weight + C features) each: bounds the temporaries).
SAMPLE_CHUNK = 1 << 18
_CORNERS = torch.tensor([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], dtype=torch.long)


def grid_sample_3d(feats: torch.Tensor, coords: torch.Tensor, queries: torch.Tensor, mode: str = "trilinear",
                   lookup: VoxelLookup | None = None) -> torch.Tensor:
    """[Q, C] attributes at ``queries`` [Q, 3] (voxel units) from ``feats`` [M, C] on ``coords`` [M, 3];
    fp32 (or feats' dtype if wider). ``lookup``: a VoxelLookup of coords, to reuse across calls."""
    if mode not in ("trilinear", "nearest"):
        raise ValueError(f"mode must be 'trilinear' or 'nearest', got {mode!r}")
    if feats.ndim != 2 or feats.shape[0] != coords.shape[0]:
        raise ValueError(f"feats must be [M, C] beside coords [M, 3], got {tuple(feats.shape)}")
    if queries.ndim != 2 or queries.shape[1] != 3:
        raise ValueError(f"queries must be [Q, 3], got {tuple(queries.shape)}")
    lookup = lookup or VoxelLookup(coords)
    dt = torch.promote_types(feats.dtype, torch.float32)
    padded = torch.cat([feats.to(dt), feats.new_zeros(1, feats.shape[1], dtype=dt)])   # row M: a missing voxel
    out = torch.empty(queries.shape[0], feats.shape[1], dtype=dt, device=feats.device)
    corners = _CORNERS.to(queries.device)
    for a in range(0, queries.shape[0], SAMPLE_CHUNK):
        q = queries[a:a + SAMPLE_CHUNK].to(dt)
        if mode == "nearest":
            idx = lookup.find(torch.floor(q).long())
            out[a:a + SAMPLE_CHUNK] = padded[torch.where(idx >= 0, idx, feats.shape[0])]
            continue
        n = torch.floor(q - 0.5).long()[:, None, :] + corners                  # [q, 8, 3]
        w = (1 - (n.to(dt) + 0.5 - q[:, None, :]).abs()).prod(dim=-1)          # [q, 8]
        idx = lookup.find(n)
        w = torch.where(idx >= 0, w, torch.zeros_like(w))
        acc = (padded[torch.where(idx >= 0, idx, feats.shape[0])] * w[..., None]).sum(dim=1)
        out[a:a + SAMPLE_CHUNK] = acc / w.sum(dim=1, keepdim=True).clamp(min=1e-12)
    return out
