"""TRELLIS.2's SC-VAE encoders (TRELLIS2_FACTS.md §7.4): fine voxels -> latent, the decoders' mirror.

Level i (channels C_i) is n_i ConvNeXt blocks, then (i < last) an S2C block C_i -> C_{i+1} at index n_i.
``input_layer`` and the head run in fp32, the blocks in the torso dtype. The head mirrors the decoders' (an
affine-free LayerNorm, eps 1e-5, then ``to_latent`` -> mean || logvar); inference uses the mean.
Inputs: the shape encoder takes [dual vertex (voxel units) - 0.5, edge flags - 0.5]; the texture encoder 6 PBR
attributes.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ...modules.norm import layer_norm32
from ...modules.sparse import SparseLinear, SparseTensor
from ..common import TorsoMixin
from .sc_vae_blocks import check_levels

__all__ = ["SparseUnetVaeEncoder", "FlexiDualGridVaeEncoder"]


class SparseUnetVaeEncoder(TorsoMixin, nn.Module):
    torso_modules = ("blocks",)

    def __init__(self, in_channels: int, model_channels: list[int], latent_channels: int, num_blocks: list[int],
                 block_type: list[str], down_block_type: list[str], block_args: list[dict] | None = None,
                 use_fp16: bool = False, use_checkpoint: bool = False):
        super().__init__()
        blocks, downs, block_args = check_levels(model_channels, num_blocks, block_type, down_block_type, block_args,
                                                 "down")
        self.in_channels, self.latent_channels = in_channels, latent_channels
        self.input_layer = SparseLinear(in_channels, model_channels[0])
        self.blocks = nn.ModuleList()
        for i, c in enumerate(model_channels):
            level = nn.ModuleList([blocks[i](c, **block_args[i]) for _ in range(num_blocks[i])])
            if i + 1 < len(model_channels):
                level.append(downs[i](c, model_channels[i + 1]))
            self.blocks.append(level)
        self.to_latent = SparseLinear(model_channels[-1], 2 * latent_channels)
        self._init_torso(use_fp16)

    def forward(self, x: SparseTensor, sample_posterior: bool = False, return_raw: bool = False,
                generator: torch.Generator | None = None):
        """Latent SparseTensor [N, latent_channels] fp32 on the 16x coarser grid (the mean, or a posterior sample);
        with ``return_raw`` also (mean, logvar)."""
        if x.feats.ndim != 2 or x.feats.shape[1] != self.in_channels:
            raise ValueError(f"the encoder's input must be [M, {self.in_channels}], got {tuple(x.feats.shape)}")
        h = self.input_layer(x.float()).type(self.dtype)
        for level in self.blocks:
            for block in level:
                h = block(h)
        h = self.to_latent(h.replace(layer_norm32(h.feats.float(), None, None, 1e-5)))
        mean, logvar = h.feats.chunk(2, dim=1)
        z = mean
        if sample_posterior:
            noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
            z = mean + torch.exp(0.5 * logvar) * noise
        z = h.replace(z.contiguous())
        return (z, mean, logvar) if return_raw else z


class FlexiDualGridVaeEncoder(SparseUnetVaeEncoder):
    """The shape encoder: 6 input channels (3 dual-vertex coordinates, 3 edge flags, each minus 0.5)."""

    def __init__(self, model_channels: list[int], latent_channels: int, num_blocks: list[int], block_type: list[str],
                 down_block_type: list[str], block_args: list[dict] | None = None, use_fp16: bool = False,
                 in_channels: int = 6, use_checkpoint: bool = False):
        super().__init__(in_channels, model_channels, latent_channels, num_blocks, block_type, down_block_type,
                         block_args, use_fp16=use_fp16)
