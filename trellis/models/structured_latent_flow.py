"""Stage-2 flow: a sparse U-shaped DiT over the occupied voxels (spec §6)."""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..modules.embed import TimestepEmbedder, cached_position_embedding
from ..modules.norm import LayerNorm32
from ..modules.sparse import (SparseLinear, SparseModulatedTransformerCrossBlock, SparseResBlock3d, SparseTensor,
                              sparse_cat)
from ..modules.transformer import head_layout, run_block
from .common import TorsoMixin


class SLatFlowModel(TorsoMixin, nn.Module):
    torso_modules = ("input_blocks", "blocks", "out_blocks")
    compile_blocks = False     # set from the pipeline's memory policy (MemoryPolicy.compile)
    # Low-VRAM mode (the pipeline sets it when it offloads with little free: pipelines.base.LEAN_BELOW_FREE_BYTES;
    # measured by benchmarks/slat_memory_gpu.py): the same numbers
    # with a lower activation peak (row-chunked norms and MLPs, temporaries dropped early, skips released
    # once used; see SparseResBlock3d._forward_lean and SparseModulatedTransformerCrossBlock._forward_lean).
    # The compiled transformer blocks (compile_blocks) stay as they are: lean only changes the eager ones.
    lean = False

    def __init__(self, resolution: int, in_channels: int, model_channels: int, cond_channels: int,
                 out_channels: int, num_blocks: int, num_heads: int | None = None, num_head_channels: int = 64,
                 mlp_ratio: float = 4, patch_size: int = 2, num_io_res_blocks: int = 2,
                 io_block_channels: list[int] | None = None, pe_mode: str = "ape", use_fp16: bool = False,
                 use_checkpoint: bool = False, use_skip_connection: bool = True, share_mod: bool = False,
                 qk_rms_norm: bool = False, qk_rms_norm_cross: bool = False):
        super().__init__()
        if pe_mode != "ape":
            raise ValueError(f"pe_mode {pe_mode!r} is not supported (TRELLIS checkpoints use 'ape')")
        io = list(io_block_channels or [])
        if 2 ** len(io) != patch_size:
            raise ValueError(f"patch_size {patch_size} needs log2(patch_size) = {math.log2(patch_size):g} "
                             f"io_block_channels, got {io}")
        if io and num_io_res_blocks < 1:
            raise ValueError("num_io_res_blocks must be at least 1")
        self.resolution, self.in_channels, self.out_channels = resolution, in_channels, out_channels
        self.model_channels, self.patch_size, self.share_mod = model_channels, patch_size, share_mod
        self.use_skip_connection = use_skip_connection
        heads, _ = head_layout(model_channels, num_heads, num_head_channels)
        c = model_channels

        self.t_embedder = TimestepEmbedder(c)
        if share_mod:
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(c, 6 * c))
        self.input_layer = SparseLinear(in_channels, io[0] if io else c)

        self.input_blocks = nn.ModuleList()
        for i, ch in enumerate(io):
            nxt = io[i + 1] if i + 1 < len(io) else c
            self.input_blocks.extend(SparseResBlock3d(ch, c, ch) for _ in range(num_io_res_blocks - 1))
            self.input_blocks.append(SparseResBlock3d(ch, c, nxt, downsample=True))

        self.blocks = nn.ModuleList([
            SparseModulatedTransformerCrossBlock(c, cond_channels, heads, mlp_ratio, qk_rms_norm=qk_rms_norm,
                                                 qk_rms_norm_cross=qk_rms_norm_cross, share_mod=share_mod)
            for _ in range(num_blocks)])

        skip = 2 if use_skip_connection else 1
        self.out_blocks = nn.ModuleList()
        for i in reversed(range(len(io))):
            prev = c if i == len(io) - 1 else io[i + 1]
            ch = io[i]
            self.out_blocks.append(SparseResBlock3d(prev * skip, c, ch, upsample=True))
            self.out_blocks.extend(SparseResBlock3d(ch * skip, c, ch) for _ in range(num_io_res_blocks - 1))

        self.final_norm = LayerNorm32(io[0] if io else c, elementwise_affine=False, eps=1e-5)
        self.out_layer = SparseLinear(io[0] if io else c, out_channels)
        self._init_torso(use_fp16)

    def forward(self, x: SparseTensor, t: torch.Tensor, cond: torch.Tensor) -> SparseTensor:
        if x.feats.shape[-1] != self.in_channels:
            raise ValueError(f"expected {self.in_channels} input channels, got {x.feats.shape[-1]}")
        h = self.input_layer(x).type(self.dtype)
        emb = self.t_embedder(t)
        if self.share_mod:
            emb = self.adaLN_modulation(emb)
        emb, cond = emb.to(self.dtype), self.context_in_dtype(cond)

        lean = self.lean
        skips = []
        for block in self.input_blocks:
            h = block(h, emb, lean=lean)
            skips.append(h.feats)
        h = h + cached_position_embedding(h, self.model_channels).to(self.dtype)
        for block in self.blocks:
            if lean and not self.compile_blocks:
                h = block(h, emb, cond, lean=True)
            else:
                h = run_block(block, h, emb, cond, compiled=self.compile_blocks)
        for block in self.out_blocks:
            skip = skips.pop()               # released once concatenated
            if self.use_skip_connection:
                h = sparse_cat([h, h.replace(skip)])
            del skip
            h = block(h, emb, lean=lean)
        # The reference normalises the torso-dtype features and casts afterwards (quirk §19.3).
        h = h.replace(self.final_norm(h.feats).to(x.dtype))
        return self.out_layer(h)
