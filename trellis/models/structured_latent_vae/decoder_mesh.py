"""SLat -> triangle mesh: trunk, two subdivisions to 4x resolution, FlexiCubes (spec §7.4, §8)."""
from __future__ import annotations

import torch.nn as nn

from ...modules.sparse import SparseLinear, SparseSubdivideBlock3d, SparseTensor
from ...representations.mesh import MeshExtractResult, extract_mesh
from .base import SparseTransformerBase


class SLatMeshDecoder(SparseTransformerBase):
    torso_modules = ("blocks", "upsample")

    def build_head(self, channels: int) -> None:
        self.use_color = bool(self.rep_config.get("use_color", False))
        self.mesh_resolution = self.resolution * 4
        c = channels
        self.upsample = nn.ModuleList([SparseSubdivideBlock3d(c, c // 4), SparseSubdivideBlock3d(c // 4, c // 8)])
        # 8 corner SDFs, 8x3 deformations, 21 FlexiCubes weights, (8x6 corner colours).
        self.out_layer = SparseLinear(c // 8, 8 + 24 + 21 + (48 if self.use_color else 0))

    def decode_features(self, x: SparseTensor) -> SparseTensor:
        """Per-voxel head features at the mesh resolution (before extraction)."""
        h = self.trunk(x)
        for block in self.upsample:
            h = block(h)
        return self.out_layer(h.type(x.dtype))

    def forward(self, x: SparseTensor) -> list[MeshExtractResult]:
        return self.to_representation(self.decode_features(x))

    def to_representation(self, x: SparseTensor) -> list[MeshExtractResult]:
        # Always the inference path of the extraction, whatever the module's train/eval flag (§19.14).
        return [extract_mesh(x.coords[s, 1:], x.feats[s], self.mesh_resolution, use_color=self.use_color)
                for s in x.layout]
