"""Timestep and absolute 3-D position embeddings (spec §3.1, §3.2)."""
from __future__ import annotations

import math

import torch
import torch.nn as nn


def timestep_features(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """[cos(t f), sin(t f)] with f_i = exp(-ln(max_period) i / (dim/2)); t already scaled by 1000."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedder(nn.Module):
    """Sinusoidal features of size 256 -> Linear -> SiLU -> Linear (keys mlp.0, mlp.2; always fp32)."""

    def __init__(self, channels: int, frequency_size: int = 256):
        super().__init__()
        self.frequency_size = frequency_size
        self.mlp = nn.Sequential(nn.Linear(frequency_size, channels), nn.SiLU(), nn.Linear(channels, channels))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        feats = timestep_features(t, self.frequency_size).to(self.mlp[0].weight.dtype)
        return self.mlp(feats)


def absolute_position_embedding(coords: torch.Tensor, channels: int) -> torch.Tensor:
    """Sin/cos embedding of integer coordinates [N, 3] -> [N, channels] fp32.

    F = channels // 6 frequencies 1/10000^(j/F); per axis [sin, cos] blocks in x, y, z order; zero
    padding up to `channels`.
    """
    n_freq = channels // 3 // 2
    freqs = 1.0 / (10000.0 ** (torch.arange(n_freq, dtype=torch.float32, device=coords.device) / n_freq))
    args = coords.float()[:, :, None] * freqs                               # [N, 3, F]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=-1).reshape(coords.shape[0], -1)
    if emb.shape[1] < channels:
        emb = torch.cat([emb, emb.new_zeros(coords.shape[0], channels - emb.shape[1])], dim=1)
    return emb


def grid_coords(size: int, device=None) -> torch.Tensor:
    """All points of a size^3 grid in C order (x slowest), as [size^3, 3] int64."""
    r = torch.arange(size, device=device)
    return torch.stack(torch.meshgrid(r, r, r, indexing="ij"), dim=-1).reshape(-1, 3)


def cached_position_embedding(x, channels: int) -> torch.Tensor:
    """APE of a SparseTensor's spatial coordinates, kept in its coordinate cache."""
    key = ("ape", channels, x.device)
    emb = x.cache.get(key)
    if emb is None:
        emb = x.cache[key] = absolute_position_embedding(x.coords[:, 1:], channels)
    return emb
