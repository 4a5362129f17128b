"""The decoded O-Voxel object: the dual-grid mesh plus the fine voxels' PBR attributes (TRELLIS2_FACTS.md §7, §8)."""
from __future__ import annotations

import torch

from .grid_sample import grid_sample_3d
from .head import PBR_LAYOUT
from .lookup import VoxelLookup

__all__ = ["MeshWithVoxel"]


class MeshWithVoxel:
    """One object, z-up, inside [-0.5, 0.5]^3.

    vertices   [V, 3] fp32 world units (one per fine voxel: vertex i is voxel i)
    faces      [F, 3] int64
    coords     [M, 3] int32 voxel coordinates (x, y, z) on the res^3 grid
    attrs      [M, C] fp32 per-voxel attributes (``layout``: base_color 0:3, metallic 3, roughness 4, alpha 5),
               or None until the texture decoder has run
    res        grid resolution; voxel_size = 1 / res; origin (-0.5, -0.5, -0.5)
    """

    def __init__(self, vertices: torch.Tensor, faces: torch.Tensor, coords: torch.Tensor, res: int,
                 attrs: torch.Tensor | None = None, layout: dict | None = None):
        if attrs is not None and attrs.shape[0] != coords.shape[0]:
            raise ValueError(f"attrs has {attrs.shape[0]} rows but there are {coords.shape[0]} voxels")
        self.vertices = vertices
        self.faces = faces.long()
        self.coords = coords.int()
        self.res = int(res)
        self.attrs = attrs
        self.layout = dict(PBR_LAYOUT if layout is None else layout)
        self._lookup = None

    @property
    def voxel_size(self) -> float:
        return 1.0 / self.res

    @property
    def origin(self) -> torch.Tensor:
        return torch.full((3,), -0.5, dtype=torch.float32, device=self.vertices.device)

    @property
    def device(self) -> torch.device:
        return self.vertices.device

    @property
    def success(self) -> bool:
        return self.vertices.shape[0] > 0 and self.faces.shape[0] > 0

    def with_attrs(self, attrs: torch.Tensor) -> "MeshWithVoxel":
        """This mesh with the texture decoder's attributes (``pbr_attributes`` of its rows, in voxel row order)."""
        return MeshWithVoxel(self.vertices, self.faces, self.coords, self.res, attrs, self.layout)

    def attr(self, name: str) -> torch.Tensor:
        """The attribute channels named in ``layout`` ([M, 3] for base_color, [M, 1] for the others)."""
        if self.attrs is None:
            raise ValueError("this mesh has no voxel attributes yet (run the texture decoder)")
        if name not in self.layout:
            raise KeyError(f"unknown attribute {name!r}; known: {', '.join(self.layout)}")
        return self.attrs[:, self.layout[name]]

    def lookup(self) -> VoxelLookup:
        if self._lookup is None:
            self._lookup = VoxelLookup(self.coords)
        return self._lookup

    def query_attrs(self, points: torch.Tensor, mode: str = "trilinear") -> torch.Tensor:
        """[P, C] attributes at world points [P, 3] (grid_sample_3d of the voxel attributes)."""
        if self.attrs is None:
            raise ValueError("this mesh has no voxel attributes yet (run the texture decoder)")
        q = (points.float() - self.origin) / self.voxel_size
        return grid_sample_3d(self.attrs, self.coords, q, mode=mode, lookup=self.lookup())

    def to(self, device) -> "MeshWithVoxel":
        return MeshWithVoxel(self.vertices.to(device), self.faces.to(device), self.coords.to(device), self.res,
                             None if self.attrs is None else self.attrs.to(device), self.layout)

    def __repr__(self) -> str:
        return (f"MeshWithVoxel(V={self.vertices.shape[0]}, F={self.faces.shape[0]}, voxels={self.coords.shape[0]}, "
                f"res={self.res}, attrs={None if self.attrs is None else self.attrs.shape[1]})")
