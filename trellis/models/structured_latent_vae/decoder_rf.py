"""SLat -> radiance field as rank-R tri-vector voxels (spec §7.3)."""
from __future__ import annotations

import math

import torch

from ...modules.norm import LayerNorm32
from ...modules.sparse import SparseLinear, SparseTensor
from ...representations.radiance_field import Strivec
from .base import SparseTransformerBase


class SLatRadianceFieldDecoder(SparseTransformerBase):
    def build_head(self, channels: int) -> None:
        self.rank, self.dim = self.rep_config["rank"], self.rep_config["dim"]
        self.final_norm = LayerNorm32(channels, elementwise_affine=False, eps=1e-5)
        self.out_layer = SparseLinear(channels, self.rank * (3 * self.dim + 1 + 3))

    def forward(self, x: SparseTensor) -> list[Strivec]:
        h = self.trunk(x)
        h = h.replace(self.final_norm(h.feats.to(x.dtype)))
        return self.to_representation(self.out_layer(h))

    def to_representation(self, x: SparseTensor) -> list[Strivec]:
        r, d, res = self.rank, self.dim, self.resolution
        depth = int(round(math.log2(res)))
        out = []
        for s in x.layout:
            feats, n = x.feats[s], s.stop - s.start
            rep = Strivec(sh_degree=0, resolution=res, aabb=[-0.5, -0.5, -0.5, 1.0, 1.0, 1.0], rank=r, dim=d,
                          device=feats.device)
            rep.position = (x.coords[s, 1:].float() + 0.5) / res
            rep.depth = torch.full((n, 1), depth, dtype=torch.uint8, device=feats.device)
            rep.trivec = feats[:, :3 * r * d].reshape(n, r, 3, d) + 1
            rep.density = feats[:, 3 * r * d:3 * r * d + r].reshape(n, r)
            rep.features_dc = feats[:, 3 * r * d + r:].reshape(n, r, 1, 3)
            out.append(rep)
        return out
