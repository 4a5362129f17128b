"""What the SC-VAE decoders' heads mean per fine voxel (TRELLIS2_FACTS.md §7.2, §8)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["PBR_LAYOUT", "VOXEL_MARGIN", "ShapeHead", "shape_head", "pbr_attributes"]

# Channels of the texture decoder's attributes (hard-coded in the reference, not in pipeline.json).
PBR_LAYOUT = {"base_color": slice(0, 3), "metallic": slice(3, 4), "roughness": slice(4, 5), "alpha": slice(5, 6)}
# The shape decoder's default margin m: the dual vertex may leave its voxel by m voxel on each side.
VOXEL_MARGIN = 0.5


class ShapeHead:
    """The 7-channel shape head activated: ``dual_vertices`` [M,3] in voxel units (in (-m, 1 + m)),
    ``intersected`` [M,3] bool (the voxel's x-, y-, z-edge carries a face), ``split_weight`` [M] (> 0)."""

    def __init__(self, dual_vertices: torch.Tensor, intersected: torch.Tensor, split_weight: torch.Tensor):
        self.dual_vertices, self.intersected, self.split_weight = dual_vertices, intersected, split_weight


def shape_head(out: torch.Tensor, margin: float = VOXEL_MARGIN) -> ShapeHead:
    """[M, 7] raw head -> d = (1 + 2m) sigmoid(o) - m, flags o > 0, w = softplus(o), all in fp32."""
    if out.ndim != 2 or out.shape[1] != 7:
        raise ValueError(f"the shape head has 7 channels per voxel, got {tuple(out.shape)}")
    o = out.float()
    return ShapeHead((1 + 2 * margin) * torch.sigmoid(o[:, 0:3]) - margin, o[:, 3:6] > 0, F.softplus(o[:, 6]))


def pbr_attributes(out: torch.Tensor) -> torch.Tensor:
    """[M, 6] raw texture head -> attributes 0.5 o + 0.5 (fp32, not clamped: the export clips)."""
    if out.ndim != 2 or out.shape[1] != 6:
        raise ValueError(f"the texture head has 6 channels per voxel, got {tuple(out.shape)}")
    return out.float() * 0.5 + 0.5
