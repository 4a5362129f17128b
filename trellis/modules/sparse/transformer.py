"""Sparse transformer pieces: linear, attention (full / shifted windows / cross), blocks (spec §3.4, §3.11, §7.1)."""
from __future__ import annotations

import torch
import torch.nn as nn

from ..attention import SeqLens, varlen_attention
from ..norm import LayerNorm32
from ..transformer import (AttentionProjections, FeedForwardNet, ModulatedTransformerCrossBlock, gated_residual,
                           gated_residual_sum, modulate, norm_modulate)
from .tensor import SparseTensor, pack_keys


class SparseLinear(nn.Linear):
    def forward(self, x: SparseTensor) -> SparseTensor:
        return x.replace(super().forward(x.feats))


def item_seqlens(x: SparseTensor) -> SeqLens:
    """Rows per batch item, as attention metadata (cached per tensor)."""
    key = ("item_seqlens", x.device)
    lengths = x.cache.get(key)
    if lengths is None:
        lengths = x.cache[key] = SeqLens(x.seqlens(), x.device)
    return lengths


def window_partition(x: SparseTensor, window_size: int, shift: int):
    """Group rows by (batch, floor((coord + shift) / W)) (cached per tensor).

    Returns (order, lengths): `x.feats[order]` lists the rows window by window, `lengths` (SeqLens)
    the number of rows in each window.
    """
    key = ("window_partition", window_size, shift, x.device)
    part = x.cache.get(key)
    if part is None:
        c = x.coords.long().clone()
        c[:, 1:] = torch.div(c[:, 1:] + shift, window_size, rounding_mode="floor")
        wkeys = pack_keys(c)
        order = torch.argsort(wkeys, stable=True)
        _, counts = torch.unique_consecutive(wkeys[order], return_counts=True)
        part = (order, SeqLens(counts, x.device))
        x.cache[key] = part
    return part


class SparseMultiHeadAttention(AttentionProjections):
    """Attention over the rows of a SparseTensor.

    attn_mode "full": each batch item attends to all its voxels; "swin": within shifted 8^3 windows;
    cross-attention: the voxels of item b attend to the dense context tokens [B, L, ctx] of item b.
    Self-attention rotates q and k by per-row RoPE ``phases`` [N, D/2] when given.
    """

    def __init__(self, channels: int, num_heads: int, ctx_channels: int | None = None, cross: bool = False,
                 qk_rms_norm: bool = False, attn_mode: str = "full", window_size: int = 8, shift: int = 0):
        super().__init__(channels, num_heads, ctx_channels, cross, qk_rms_norm)
        if attn_mode not in ("full", "swin"):
            raise ValueError(f"attn_mode {attn_mode!r} is not supported (use 'full' or 'swin')")
        self.attn_mode, self.window_size, self.shift = attn_mode, window_size, shift

    def forward(self, x: SparseTensor, context: torch.Tensor | None = None,
                phases: torch.Tensor | None = None) -> SparseTensor:
        if self.cross:
            q, k, v = self.qkv(x.feats, context, packed=True)     # q [N,H,D], k/v [B*L,H,D]
            lengths_kv = SeqLens.uniform(context.shape[0], context.shape[1], context.device)
            out = varlen_attention(q, k, v, item_seqlens(x), lengths_kv)
        elif self.attn_mode == "full":
            q, k, v = self.qkv(x.feats, phases=phases)
            lengths = item_seqlens(x)
            out = varlen_attention(q, k, v, lengths, lengths)
        else:
            order, lengths = window_partition(x, self.window_size, self.shift)
            q, k, v = self.qkv(x.feats[order], phases=None if phases is None else phases[order])
            out = torch.empty_like(q)
            out[order] = varlen_attention(q, k, v, lengths, lengths)
        return x.replace(self.out(out))


class SparseTransformerBlock(nn.Module):
    """Pre-norm block without modulation (decoders): x += Attn(LN(x)); x += MLP(LN(x))."""

    def __init__(self, channels: int, num_heads: int, mlp_ratio: float = 4.0, attn_mode: str = "swin",
                 window_size: int = 8, shift: int = 0, qk_rms_norm: bool = False):
        super().__init__()
        self.norm1 = LayerNorm32(channels, elementwise_affine=False, eps=1e-6)
        self.norm2 = LayerNorm32(channels, elementwise_affine=False, eps=1e-6)
        self.attn = SparseMultiHeadAttention(channels, num_heads, qk_rms_norm=qk_rms_norm, attn_mode=attn_mode,
                                             window_size=window_size, shift=shift)
        self.mlp = FeedForwardNet(channels, mlp_ratio)

    def forward(self, x: SparseTensor) -> SparseTensor:
        h = x.feats + self.attn(x.replace(self.norm1(x.feats))).feats
        h = h + self.mlp(self.norm2(h))
        return x.replace(h)


class SparseModulatedTransformerCrossBlock(ModulatedTransformerCrossBlock):
    """The DiT block of §3.5 on sparse voxels; modulation vectors broadcast to each item's rows."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, attention_cls=SparseMultiHeadAttention, **kwargs)

    # Hidden-layer elements of one MLP chunk in the lean path (fp16: 16 MiB; 2048 rows at 4 x 1024 channels).
    LEAN_MLP_ELEMENTS = 1 << 23

    def forward(self, x: SparseTensor, emb: torch.Tensor, context: torch.Tensor, phases: torch.Tensor | None = None,
                lean: bool = False) -> SparseTensor:
        rows = equal_rows(x)
        if rows is None:                  # items of different sizes: one modulation row per voxel
            index = x.batch_index()
            mods, shape = [m[index] for m in self.modulation_chunks(emb)], x.feats.shape
        else:                             # [B, rows, C] views: the [B, 1, C] modulation broadcasts
            mods, shape = self.item_modulation(emb), (len(x.layout), rows, x.feats.shape[-1])
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mods

        def rows_of(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(shape)

        def sparse(t: torch.Tensor) -> SparseTensor:
            return x.replace(t.reshape(x.feats.shape))

        h = rows_of(x.feats)
        if lean:
            return sparse(self._forward_lean(h, mods, context, rows_of, sparse, phases))
        h, y = norm_modulate(h, None, None, self.norm1, shift_msa, scale_msa)
        h, y = norm_modulate(h, rows_of(self.self_attn(sparse(y), phases=phases).feats), gate_msa, self.norm2)
        h, y = norm_modulate(h, rows_of(self.cross_attn(sparse(y), context).feats), None, self.norm3, shift_mlp,
                             scale_mlp)
        return sparse(gated_residual_sum(h, gate_mlp, self.mlp(y)))

    def _forward_lean(self, h: torch.Tensor, mods, context: torch.Tensor, rows_of, sparse,
                      phases: torch.Tensor | None = None) -> torch.Tensor:
        """The block with a lower memory peak, same numbers (the SLat flow's low-VRAM mode).

        Each temporary is dropped as soon as it is used; the residual sums after the first (which makes the
        fresh tensor, so the caller's input is left alone) are in place; the MLP runs over chunks of rows
        (rows are independent) and adds each chunk's gated output into its rows of the residual in place, so
        its [rows, 4C] hidden tensor and GELU output exist for one chunk at a time and its [rows, C] output
        never in full."""
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mods
        y = modulate(self.norm1(h), shift_msa, scale_msa)
        y = self.self_attn(sparse(y), phases=phases).feats
        h = gated_residual(h, gate_msa, rows_of(y))
        y = self.cross_attn(sparse(self.norm2(h)), context).feats
        h += rows_of(y)
        del y
        rows = h.shape[-2]
        per_row = h.numel() // max(1, rows * h.shape[-1]) * self.mlp.mlp[0].out_features
        step = _balanced_step(rows, max(1, self.LEAN_MLP_ELEMENTS // max(1, per_row)))
        for a in range(0, rows, step):
            part = h[..., a:a + step, :]

            def cut(m: torch.Tensor) -> torch.Tensor:     # [B, 1, C] broadcasts; per-row [N, C] is cut
                return m if m.shape[-2] == 1 else m[..., a:a + step, :]

            part.addcmul_(cut(gate_mlp), self.mlp(modulate(self.norm3(part), cut(shift_mlp), cut(scale_mlp))))
        return h


def equal_rows(x: SparseTensor) -> int | None:
    """The row count when every batch item has the same number of rows (a CFG pair, one item), else None."""
    sizes = {s.stop - s.start for s in x.layout}
    return sizes.pop() if len(sizes) == 1 else None


def _balanced_step(rows: int, step: int) -> int:
    """Rows per chunk when `rows` are cut into ceil(rows / step) chunks of (nearly) equal size: no small tail
    chunk (the CPU's GEMM takes another kernel for a few rows, which rounds differently)."""
    chunks = max(1, -(-rows // step))
    return max(1, -(-rows // chunks))
