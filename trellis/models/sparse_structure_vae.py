"""Stage-1 decoder: dense 3-D CNN from the 16^3 latent to 64^3 occupancy logits (spec §5)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..modules.norm import ChannelLayerNorm32, GroupNorm32
from .common import TorsoMixin


def _norm(norm_type: str, channels: int) -> nn.Module:
    if norm_type == "layer":
        return ChannelLayerNorm32(channels, eps=1e-5)
    if norm_type == "group":
        return GroupNorm32(32, channels, eps=1e-5)
    raise ValueError(f"norm_type {norm_type!r} is not supported (use 'layer' or 'group')")


class ResBlock3d(nn.Module):
    def __init__(self, channels: int, out_channels: int | None = None, norm_type: str = "layer"):
        super().__init__()
        out_channels = out_channels or channels
        self.norm1 = _norm(norm_type, channels)
        self.norm2 = _norm(norm_type, out_channels)
        self.conv1 = nn.Conv3d(channels, out_channels, 3, padding=1)
        self.conv2 = nn.Conv3d(out_channels, out_channels, 3, padding=1)
        self.skip_connection = nn.Conv3d(channels, out_channels, 1) if channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return h + self.skip_connection(x)


def pixel_shuffle_3d(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """[B, C*f^3, D, H, W] -> [B, C, fD, fH, fW]; channel c*f^3 + (i f^2 + j f + k) -> offset (i, j, k)."""
    b, c, d, h, w = x.shape
    c_out = c // factor ** 3
    x = x.reshape(b, c_out, factor, factor, factor, d, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4)
    return x.reshape(b, c_out, d * factor, h * factor, w * factor)


class UpsampleBlock3d(nn.Module):
    def __init__(self, channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv3d(channels, out_channels * 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pixel_shuffle_3d(self.conv(x), 2)


class SparseStructureDecoder(TorsoMixin, nn.Module):
    torso_modules = ("blocks", "middle_block")

    def __init__(self, out_channels: int, latent_channels: int, num_res_blocks: int, channels: list[int],
                 num_res_blocks_middle: int = 2, norm_type: str = "layer", use_fp16: bool = False):
        super().__init__()
        self.out_channels, self.latent_channels, self.channels = out_channels, latent_channels, list(channels)
        self.input_layer = nn.Conv3d(latent_channels, channels[0], 3, padding=1)
        self.middle_block = nn.Sequential(*[ResBlock3d(channels[0], norm_type=norm_type)
                                            for _ in range(num_res_blocks_middle)])
        blocks = []
        for i, ch in enumerate(channels):
            blocks += [ResBlock3d(ch, norm_type=norm_type) for _ in range(num_res_blocks)]
            if i < len(channels) - 1:
                blocks.append(UpsampleBlock3d(ch, channels[i + 1]))
        self.blocks = nn.ModuleList(blocks)
        self.out_layer = nn.Sequential(_norm(norm_type, channels[-1]), nn.SiLU(),
                                       nn.Conv3d(channels[-1], out_channels, 3, padding=1))
        self._init_torso(use_fp16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.input_layer(x).to(self.dtype)
        h = self.middle_block(h)
        for block in self.blocks:
            h = block(h)
        return self.out_layer(h.to(x.dtype))
