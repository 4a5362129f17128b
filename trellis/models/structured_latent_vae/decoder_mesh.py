"""SLat -> triangle mesh: trunk, two subdivisions to 4x resolution, FlexiCubes (spec §7.4, §8)."""
from __future__ import annotations

import torch
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

    # Rows of the fp32 head computed at once (its fp32 input copy: 64 k x 96 x 4 = 24 MiB).
    OUT_CHUNK = 1 << 16

    def decode_features(self, x: SparseTensor) -> SparseTensor:
        """Per-voxel head features at the mesh resolution (before extraction), in x's dtype.

        The head runs in row chunks on the fp32 cast of the torso's output, written into one output
        tensor (no fp32 copy of all 1.3 M x 96 torso features); the result has a fresh cache, so the
        256^3 level's neighbour map is freed with the torso's features, before the extraction."""
        h = self.trunk(x)
        for block in self.upsample:
            h = block(h)
        coords, layout, feats = h.coords, h.layout, h.feats
        del h                                        # its cache (the neighbour maps) goes with it
        w, b = self.out_layer.weight, self.out_layer.bias
        out = torch.empty(feats.shape[0], w.shape[0], dtype=x.dtype, device=feats.device)
        for a in range(0, feats.shape[0], self.OUT_CHUNK):
            out[a:a + self.OUT_CHUNK] = torch.nn.functional.linear(feats[a:a + self.OUT_CHUNK].type(x.dtype), w, b)
        return SparseTensor(out, coords, layout=layout)

    def forward(self, x: SparseTensor) -> list[MeshExtractResult]:
        return self.to_representation(self.decode_features(x))

    def to_representation(self, x: SparseTensor) -> list[MeshExtractResult]:
        # Always the inference path of the extraction, whatever the module's train/eval flag (§19.14).
        return [extract_mesh(x.coords[s, 1:], x.feats[s], self.mesh_resolution, use_color=self.use_color)
                for s in x.layout]
