"""The texture decoder's subdivision for texturing (TRELLIS2_TEXTURING_FACTS.md §7): the encoder's own levels."""
from __future__ import annotations

import torch

from ..models.trellis2.sc_vae_blocks import CHILD_OFFSETS, child_coords
from ..modules.sparse import SparseTensor
from ..representations.ovoxel import VoxelLookup

__all__ = ["guide_subdivisions"]


def guide_subdivisions(latent_coords: torch.Tensor, fine_coords: torch.Tensor, levels: int = 4):
    """(subdivision logits per C2S level, the decoder's fine coords [M, 4]): each coarse voxel keeps exactly the
    children that exist in the encoder's level below (logit +1, else -1), so the texture decoder rebuilds the
    encoder's voxel set level by level. ``latent_coords`` [L, 4] (the encoder's output), ``fine_coords`` [N, 3]."""
    fine = fine_coords.long()
    lookups = [VoxelLookup(fine >> j) for j in range(levels)]          # duplicates are fine for find()
    cur, subs = latent_coords.int(), []
    offsets = CHILD_OFFSETS.to(cur.device).long()
    for i in range(levels):
        children = cur[:, None, 1:].long() * 2 + offsets                    # [P, 8, 3]
        exists = lookups[levels - 1 - i].find(children) >= 0
        subs.append(SparseTensor(torch.where(exists, 1.0, -1.0), cur))
        parent, k = exists.nonzero(as_tuple=True)
        cur = child_coords(cur, parent, k)
    return subs, cur
