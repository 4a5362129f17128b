"""What the three SLat decoders share (spec §7.1): the constructor, input projection + APE + swin blocks.

Each decoder adds its head in `build_head` and turns the head's output into its representation.
"""
from __future__ import annotations

import torch.nn as nn

from ...modules.embed import cached_position_embedding
from ...modules.sparse import SparseLinear, SparseTensor, SparseTransformerBlock
from ...modules.transformer import head_layout
from ..common import TorsoMixin


class SparseTransformerBase(TorsoMixin, nn.Module):
    torso_modules = ("blocks",)

    def __init__(self, resolution: int, model_channels: int, latent_channels: int, num_blocks: int,
                 num_heads: int | None = None, num_head_channels: int = 64, mlp_ratio: float = 4,
                 attn_mode: str = "swin", window_size: int = 8, pe_mode: str = "ape", use_fp16: bool = False,
                 use_checkpoint: bool = False, qk_rms_norm: bool = False, representation_config: dict | None = None):
        super().__init__()
        if pe_mode != "ape":
            raise ValueError(f"pe_mode {pe_mode!r} is not supported (TRELLIS checkpoints use 'ape')")
        if attn_mode not in ("swin", "full"):
            raise ValueError(f"attn_mode {attn_mode!r} is not supported (TRELLIS decoders use 'swin')")
        self.resolution, self.model_channels = resolution, model_channels
        self.rep_config = dict(representation_config or {})
        heads, _ = head_layout(model_channels, num_heads, num_head_channels)
        self.input_layer = SparseLinear(latent_channels, model_channels)
        self.blocks = nn.ModuleList([
            SparseTransformerBlock(model_channels, heads, mlp_ratio, attn_mode=attn_mode, window_size=window_size,
                                   shift=(window_size // 2) * (i % 2) if attn_mode == "swin" else 0,
                                   qk_rms_norm=qk_rms_norm)
            for i in range(num_blocks)])
        self.build_head(model_channels)
        self._init_torso(use_fp16)

    def build_head(self, channels: int) -> None:
        raise NotImplementedError

    def trunk(self, x: SparseTensor) -> SparseTensor:
        """Returns torso-dtype features on x's coordinates and row order."""
        h = self.input_layer(x)
        h = h + cached_position_embedding(x, self.model_channels)
        h = h.type(self.dtype)
        for block in self.blocks:
            h = block(h)
        return h
