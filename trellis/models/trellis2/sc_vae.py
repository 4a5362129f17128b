"""TRELLIS.2's SC-VAE decoders (TRELLIS2_FACTS.md §7.1, §8); the encoders (§7.4) live in sc_vae_encoder.

Level i (channels C_i) is n_i ConvNeXt blocks, then (i < last) a C2S block C_i -> C_{i+1} at index n_i, so the
latent grid L becomes 16 L after the four C2S levels. ``from_latent`` and the head (affine-free LayerNorm,
``output_layer``) run in fp32; the blocks in the torso dtype (fp16 when use_fp16).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...modules.norm import layer_norm32
from ...modules.sparse import SparseLinear, SparseTensor
from ...representations.ovoxel import MeshWithVoxel, flexible_dual_grid_to_mesh, shape_head
from ...representations.ovoxel.head import VOXEL_MARGIN
from ..common import TorsoMixin
from .sc_vae_blocks import check_levels, rowwise
from .sc_vae_encoder import FlexiDualGridVaeEncoder, SparseUnetVaeEncoder

__all__ = ["SparseUnetVaeDecoder", "FlexiDualGridVaeDecoder", "SparseUnetVaeEncoder", "FlexiDualGridVaeEncoder"]


def on_guide_voxels(h: SparseTensor, guide: SparseTensor | None) -> SparseTensor:
    """`h` on the coordinates (and so the cached neighbour maps) of a guide subdivision on the same voxels in the
    same order: the texture decoder follows the shape decoder's levels, whose maps the guides keep alive anyway, so
    they are not built twice. `h` itself otherwise."""
    if guide is None or guide.coords is h.coords or guide.coords.shape != h.coords.shape \
            or guide.coords.device != h.coords.device or not torch.equal(guide.coords, h.coords):
        return h
    return SparseTensor(h.feats, guide.coords, layout=guide.layout, cache=guide.cache)


class SparseUnetVaeDecoder(TorsoMixin, nn.Module):
    """Latent [N, latent_channels] -> per fine voxel [M, out_channels] (fp32), on the 16x grid.

    ``pred_subdiv``: each C2S block predicts which children exist; otherwise ``guide_subs`` (the shape decoder's
    subdivision logits, one SparseTensor per C2S level, from ``forward(..., return_subs=True)``) decides."""

    torso_modules = ("blocks",)

    def __init__(self, out_channels: int, model_channels: list[int], latent_channels: int, num_blocks: list[int],
                 block_type: list[str], up_block_type: list[str], block_args: list[dict] | None = None,
                 use_fp16: bool = False, pred_subdiv: bool = True, use_checkpoint: bool = False):
        super().__init__()
        blocks, ups, block_args = check_levels(model_channels, num_blocks, block_type, up_block_type, block_args, "up")
        self.out_channels, self.latent_channels, self.pred_subdiv = out_channels, latent_channels, pred_subdiv
        self.model_channels = list(model_channels)
        self.from_latent = SparseLinear(latent_channels, model_channels[0])
        self.blocks = nn.ModuleList()
        for i, c in enumerate(model_channels):
            level = nn.ModuleList([blocks[i](c, **block_args[i]) for _ in range(num_blocks[i])])
            if i + 1 < len(model_channels):
                level.append(ups[i](c, model_channels[i + 1], pred_subdiv=pred_subdiv))
            self.blocks.append(level)
        self.output_layer = SparseLinear(model_channels[-1], out_channels)
        self._init_torso(use_fp16)

    @property
    def device(self) -> torch.device:
        return self.from_latent.weight.device

    @property
    def levels(self) -> int:
        """Number of C2S up-sampling levels (4 in the released decoders: x16)."""
        return len(self.blocks) - 1

    def embed(self, x: SparseTensor) -> SparseTensor:
        if x.feats.ndim != 2 or x.feats.shape[1] != self.latent_channels:
            raise ValueError(f"the latent must be [N, {self.latent_channels}], got {tuple(x.feats.shape)}")
        return self.from_latent(x.float()).type(self.dtype)

    def level_blocks(self, i: int, h: SparseTensor) -> SparseTensor:
        """The ConvNeXt blocks of level i."""
        level = self.blocks[i]
        for block in (level[:-1] if i < self.levels else level):
            h = block(h)
        return h

    def guide(self, guide_subs, i: int):
        if self.pred_subdiv:
            return None if guide_subs is None else guide_subs[i]
        if guide_subs is None or len(guide_subs) != self.levels:
            raise ValueError(f"this decoder follows a guide subdivision (pred_subdiv=false): pass guide_subs, the "
                             f"{self.levels} subdivision logits of the shape decoder (forward(..., return_subs=True))")
        return guide_subs[i]

    def forward(self, x: SparseTensor, guide_subs: list[SparseTensor] | None = None, return_subs: bool = False):
        """Head output SparseTensor [M, out_channels] fp32 on the fine voxels; with ``return_subs`` also the
        subdivision logits used at each C2S level (SparseTensors [N_i, 8] on that level's input voxels)."""
        h = self.embed(x)
        subs = []
        for i in range(self.levels):
            guide = self.guide(guide_subs, i)
            h = self.level_blocks(i, on_guide_voxels(h, guide))
            h, sub = self.blocks[i][-1](h, guide)
            subs.append(sub)
        h = self.level_blocks(self.levels, h)
        out = self.head(h)
        return (out, subs) if return_subs else out

    # Rows of the fp32 head per chunk (its fp32 copies of the 64-channel features: 2 x 64 MiB).
    HEAD_CHUNK = 1 << 18

    def head(self, h: SparseTensor) -> SparseTensor:
        """fp32 affine-free LayerNorm (eps 1e-5), then ``output_layer``, row chunk by row chunk."""
        w, b = self.output_layer.weight, self.output_layer.bias
        out = rowwise(lambda f: F.linear(layer_norm32(f.float(), None, None, 1e-5), w, b), h.feats,
                      self.out_channels, self.HEAD_CHUNK, dtype=torch.float32)
        return h.replace(out)

    @torch.no_grad()
    def upsample(self, x: SparseTensor, times: int = 4) -> torch.Tensor:
        """The cascade's up-sampling (§3.2): int32 [M, 4] (batch, x, y, z) coordinates of the voxels after
        ``times`` C2S levels (on the 2^times grid), each level keeping the children its own logits choose.
        The last level's features are never computed: only its subdivision is needed."""
        if not self.pred_subdiv:
            raise ValueError("upsample needs a decoder that predicts its subdivision (the shape decoder)")
        if not 1 <= times <= self.levels:
            raise ValueError(f"times must be in 1..{self.levels}, got {times}")
        h = self.embed(x)
        for i in range(times - 1):
            h, _ = self.blocks[i][-1](self.level_blocks(i, h))
        return self.blocks[times - 1][-1].fine_coords(self.level_blocks(times - 1, h))


class FlexiDualGridVaeDecoder(SparseUnetVaeDecoder):
    """The shape decoder: a 7-channel O-Voxel head (dual vertex, 3 edge flags, split weight) and its subdivision.

    ``resolution`` is the grid the mesh is built on (the JSON's 256 is a placeholder: ``set_resolution``)."""

    def __init__(self, resolution: int, model_channels: list[int], latent_channels: int, num_blocks: list[int],
                 block_type: list[str], up_block_type: list[str], block_args: list[dict] | None = None,
                 use_fp16: bool = False, voxel_margin: float = VOXEL_MARGIN, use_checkpoint: bool = False):
        super().__init__(7, model_channels, latent_channels, num_blocks, block_type, up_block_type, block_args,
                         use_fp16=use_fp16, pred_subdiv=True)
        self.voxel_margin = voxel_margin
        self.set_resolution(resolution)

    def set_resolution(self, resolution: int) -> None:
        if int(resolution) != resolution or resolution <= 0:
            raise ValueError(f"resolution must be a positive integer, got {resolution!r}")
        self.resolution = int(resolution)

    def to_meshes(self, out: SparseTensor) -> list[MeshWithVoxel]:
        """One MeshWithVoxel per batch item from the head output (no attributes yet), at ``self.resolution``."""
        meshes = []
        for s in out.layout:
            coords = out.coords[s, 1:]
            head = shape_head(out.feats[s], self.voxel_margin)
            vertices, faces = flexible_dual_grid_to_mesh(coords, head.dual_vertices, head.intersected,
                                                         head.split_weight, self.resolution)
            meshes.append(MeshWithVoxel(vertices, faces, coords, self.resolution))
        return meshes
