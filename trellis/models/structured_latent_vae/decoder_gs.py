"""SLat -> 3-D Gaussians (spec §7.2)."""
from __future__ import annotations

import torch

from ...modules.norm import LayerNorm32
from ...modules.sparse import SparseLinear, SparseTensor
from ...representations.gaussian import Gaussian
from ...core.lowdiscrepancy import hammersley_3d
from .base import SparseTransformerBase

_FIELDS = ("_xyz", "_features_dc", "_scaling", "_rotation", "_opacity")


def offset_perturbation(num_gaussians: int, voxel_size: float) -> torch.Tensor:
    """atanh((2h - 1) / voxel_size): with zero network output the Gaussians tile their voxel."""
    h = torch.tensor(hammersley_3d(num_gaussians), dtype=torch.float32)   # honours a default-device context
    return torch.atanh((2 * h - 1) / voxel_size)


class SLatGaussianDecoder(SparseTransformerBase):
    def build_head(self, channels: int) -> None:
        g = self.rep_config["num_gaussians"]
        self.num_gaussians = g
        # Channels per field per Gaussian, in the order of the output layer.
        self.layout = {"_xyz": 3, "_features_dc": 3, "_scaling": 3, "_rotation": 4, "_opacity": 1}
        self.final_norm = LayerNorm32(channels, elementwise_affine=False, eps=1e-5)
        self.out_layer = SparseLinear(channels, g * sum(self.layout.values()))
        if self.rep_config.get("perturb_offset", False):
            self.register_buffer("offset_perturbation",
                                 offset_perturbation(g, self.rep_config["voxel_size"]))

    def forward(self, x: SparseTensor) -> list[Gaussian]:
        h = self.trunk(x)
        h = h.replace(self.final_norm(h.feats.to(x.dtype)))
        return self.to_representation(self.out_layer(h))

    def to_representation(self, x: SparseTensor) -> list[Gaussian]:
        cfg, g, res = self.rep_config, self.num_gaussians, self.resolution
        lr = cfg.get("lr", {})
        out = []
        for s in x.layout:
            feats, n = x.feats[s], s.stop - s.start
            fields, start = {}, 0
            for name in _FIELDS:
                width = self.layout[name] * g
                fields[name] = feats[:, start:start + width].reshape(n, g, self.layout[name]) * lr.get(name, 1.0)
                start += width
            centres = (x.coords[s, 1:].to(feats.dtype) + 0.5) / res
            offset = fields["_xyz"]
            if cfg.get("perturb_offset", False):
                offset = offset + self.offset_perturbation.to(offset)
            offset = torch.tanh(offset) / res * 0.5 * cfg["voxel_size"]
            rep = Gaussian(
                sh_degree=0,
                aabb=[-0.5, -0.5, -0.5, 1.0, 1.0, 1.0],
                mininum_kernel_size=cfg["3d_filter_kernel_size"],
                scaling_bias=cfg["scaling_bias"],
                opacity_bias=cfg["opacity_bias"],
                scaling_activation=cfg["scaling_activation"],
                device=feats.device,
            )
            rep._xyz = (centres[:, None, :] + offset).reshape(-1, 3)
            rep._features_dc = fields["_features_dc"].reshape(-1, 1, 3)
            rep._scaling = fields["_scaling"].reshape(-1, 3)
            rep._rotation = fields["_rotation"].reshape(-1, 4)
            rep._opacity = fields["_opacity"].reshape(-1, 1)
            out.append(rep)
        return out
