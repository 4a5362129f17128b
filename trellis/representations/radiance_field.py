"""Rank-R tri-vector voxels (the reference's Strivec) produced by the radiance-field decoder (spec §7.3)."""
from __future__ import annotations

import torch


class Strivec:
    """Octree leaves at one depth, each holding R rank-1 tri-vectors of length `dim` plus density/colour.

    Attributes (one row per voxel, in the decoder's input row order): `position` [N,3] in [0,1] units,
    `depth` [N,1] uint8, `trivec` [N,R,3,dim], `density` [N,R], `features_dc` [N,R,1,3].
    """

    def __init__(self, resolution: int, aabb, sh_degree: int = 0, rank: int = 8, dim: int = 8, device="cpu"):
        self.resolution, self.sh_degree, self.rank, self.dim = resolution, sh_degree, rank, dim
        self.aabb = torch.tensor(aabb, dtype=torch.float32, device=device)
        self.density_shift = 0
        self.position = self.depth = self.trivec = self.density = self.features_dc = None

    def __len__(self) -> int:
        return 0 if self.position is None else self.position.shape[0]

    @property
    def device(self) -> torch.device:
        """Where the voxels are (the box's device while there are none)."""
        return self.aabb.device if self.position is None else self.position.device

    def to(self, device) -> "Strivec":
        self.aabb = self.aabb.to(device)
        for name in ("position", "depth", "trivec", "density", "features_dc"):
            t = getattr(self, name)
            if t is not None:
                setattr(self, name, t.to(device))
        return self
