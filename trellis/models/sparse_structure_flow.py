"""Stage-1 flow transformer over the dense 16^3 latent grid (spec §4)."""
from __future__ import annotations

import torch
import torch.nn as nn

from ..modules.embed import TimestepEmbedder, absolute_position_embedding, grid_coords
from ..modules.norm import LayerNorm32
from ..modules.transformer import ModulatedTransformerCrossBlock, head_layout, run_block
from .common import TorsoMixin


class SparseStructureFlowModel(TorsoMixin, nn.Module):
    torso_modules = ("blocks",)
    compile_blocks = False     # set from the pipeline's memory policy (MemoryPolicy.compile)

    def __init__(self, resolution: int, in_channels: int, model_channels: int, cond_channels: int,
                 out_channels: int, num_blocks: int, num_heads: int | None = None, num_head_channels: int = 64,
                 mlp_ratio: float = 4, patch_size: int = 2, pe_mode: str = "ape", use_fp16: bool = False,
                 use_checkpoint: bool = False, share_mod: bool = False, qk_rms_norm: bool = False,
                 qk_rms_norm_cross: bool = False):
        super().__init__()
        if pe_mode != "ape":
            raise ValueError(f"pe_mode {pe_mode!r} is not supported (TRELLIS checkpoints use 'ape')")
        if resolution % patch_size:
            raise ValueError("resolution must be a multiple of patch_size")
        self.resolution, self.in_channels, self.out_channels = resolution, in_channels, out_channels
        self.model_channels, self.patch_size, self.share_mod = model_channels, patch_size, share_mod
        heads, _ = head_layout(model_channels, num_heads, num_head_channels)
        grid = resolution // patch_size

        self.t_embedder = TimestepEmbedder(model_channels)
        if share_mod:
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(model_channels, 6 * model_channels))
        self.register_buffer("pos_emb", absolute_position_embedding(grid_coords(grid), model_channels))
        self.input_layer = nn.Linear(in_channels * patch_size ** 3, model_channels)
        self.blocks = nn.ModuleList([
            ModulatedTransformerCrossBlock(model_channels, cond_channels, heads, mlp_ratio, qk_rms_norm=qk_rms_norm,
                                           qk_rms_norm_cross=qk_rms_norm_cross, share_mod=share_mod)
            for _ in range(num_blocks)])
        self.out_layer = nn.Linear(model_channels, out_channels * patch_size ** 3)
        self.final_norm = LayerNorm32(model_channels, elementwise_affine=False, eps=1e-5)
        self._init_torso(use_fp16)

    def _to_tokens(self, x: torch.Tensor) -> torch.Tensor:
        b, c, p = x.shape[0], x.shape[1], self.patch_size
        g = self.resolution // p
        x = x.reshape(b, c, g, p, g, p, g, p).permute(0, 2, 4, 6, 1, 3, 5, 7)
        return x.reshape(b, g ** 3, c * p ** 3)

    def _from_tokens(self, h: torch.Tensor) -> torch.Tensor:
        b, c, p = h.shape[0], self.out_channels, self.patch_size
        g = self.resolution // p
        h = h.reshape(b, g, g, g, c, p, p, p).permute(0, 4, 1, 5, 2, 6, 3, 7)
        return h.reshape(b, c, g * p, g * p, g * p)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        expected = (self.in_channels, *[self.resolution] * 3)
        if tuple(x.shape[1:]) != expected:
            raise ValueError(f"expected input [B, {', '.join(map(str, expected))}], got {list(x.shape)}")
        h = self.input_layer(self._to_tokens(x)) + self.pos_emb[None]
        emb = self.t_embedder(t)
        if self.share_mod:
            emb = self.adaLN_modulation(emb)
        h, emb, cond = h.to(self.dtype), emb.to(self.dtype), self.context_in_dtype(cond)
        for block in self.blocks:
            h = run_block(block, h, emb, cond, compiled=self.compile_blocks)
        h = self.out_layer(self.final_norm(h.to(x.dtype)))
        return self._from_tokens(h)
