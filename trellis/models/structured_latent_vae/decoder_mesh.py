"""SLat -> triangle mesh: trunk, two subdivisions to 4x resolution, FlexiCubes (spec §7.4, §8)."""
from __future__ import annotations

import torch.nn as nn

from ...modules.sparse import SparseLinear, SparseSubdivideBlock3d, SparseTensor
from ...representations.mesh import MeshExtractResult, extract_mesh
from .base import SparseTransformerBase


class SLatMeshDecoder(SparseTransformerBase):
    torso_modules = ("blocks", "upsample")

    def __init__(self, resolution: int, model_channels: int, latent_channels: int, num_blocks: int,
                 num_heads: int | None = None, num_head_channels: int = 64, mlp_ratio: float = 4,
                 attn_mode: str = "swin", window_size: int = 8, pe_mode: str = "ape", use_fp16: bool = False,
                 use_checkpoint: bool = False, qk_rms_norm: bool = False, representation_config: dict | None = None):
        super().__init__(latent_channels, model_channels, num_blocks, num_heads, num_head_channels, mlp_ratio,
                         attn_mode, window_size, pe_mode, False, use_checkpoint, qk_rms_norm)
        self.resolution = resolution
        self.rep_config = dict(representation_config or {})
        self.use_color = bool(self.rep_config.get("use_color", False))
        self.mesh_resolution = resolution * 4
        c = model_channels
        self.upsample = nn.ModuleList([SparseSubdivideBlock3d(c, c // 4), SparseSubdivideBlock3d(c // 4, c // 8)])
        # 8 corner SDFs, 8x3 deformations, 21 FlexiCubes weights, (8x6 corner colours).
        self.out_layer = SparseLinear(c // 8, 8 + 24 + 21 + (48 if self.use_color else 0))
        self._init_torso(use_fp16)

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
