"""Dense transformer pieces shared by the flow models (spec §3.4, §3.5).

Parameter names follow the checkpoints: `to_qkv` / `to_q` + `to_kv` / `to_out`, `q_rms_norm.gamma`,
`mlp.mlp.{0,2}`, `adaLN_modulation.1`, `norm2`.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import fastpaths
from .attention import dense_attention
from .context_cache import for_context
from .norm import LayerNorm32, MultiHeadRMSNorm, layer_norm32, rms_norm_heads
from .rope import rope_torch


def head_layout(channels: int, num_heads: int | None, num_head_channels: int = 64) -> tuple[int, int]:
    """(heads, head_dim) from the constructor args (spec §2.3)."""
    heads = num_heads if num_heads is not None else channels // num_head_channels
    if channels % heads:
        raise ValueError(f"model_channels {channels} is not divisible by {heads} heads")
    return heads, channels // heads


def eager_fast_path(name: str, twin, x: torch.Tensor, *args):
    """``twin(x, *args)``, through the fast path ``name`` when ``x`` is on CUDA and not being traced by torch.compile
    (there the twin is traced: Inductor fuses it itself)."""
    if not x.is_cuda or torch.compiler.is_compiling():
        return twin(x, *args)
    return fastpaths.dispatch(name, x.device, twin, x, *args)


def linear_gelu_torch(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``tanh-GELU(x @ weight^T + bias)``: the MLPs' first layer and activation (the twin of the fast path
    "linear_gelu", which puts the GELU in the GEMM's epilogue)."""
    return F.gelu(F.linear(x, weight, bias), approximate="tanh")


def linear_gelu(x: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
    """``linear_gelu_torch`` with ``linear``'s parameters, through the fast path "linear_gelu" on CUDA (eager)."""
    return eager_fast_path("linear_gelu", linear_gelu_torch, x, linear.weight, linear.bias)


class FeedForwardNet(nn.Module):
    """Linear -> tanh-GELU -> Linear; keys mlp.0 / mlp.2."""

    def __init__(self, channels: int, mlp_ratio: float = 4.0):
        super().__init__()
        hidden = int(channels * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fc1, _, fc2 = self.mlp
        return fc2(linear_gelu(x, fc1))


class AttentionProjections(nn.Module):
    """Projections of self- or cross-attention; the attention itself is done by the caller.

    Self: `to_qkv` (C -> 3C, split [q|k|v], heads major inside each part). Cross: `to_q` (C -> C),
    `to_kv` (ctx -> 2C, split [k|v]). Optional per-head RMS norm of q and k.
    """

    def __init__(self, channels: int, num_heads: int, ctx_channels: int | None = None, cross: bool = False,
                 qk_rms_norm: bool = False):
        super().__init__()
        self.channels, self.heads, self.cross = channels, num_heads, cross
        self.head_dim = channels // num_heads
        if cross:
            self.to_q = nn.Linear(channels, channels)
            self.to_kv = nn.Linear(ctx_channels or channels, 2 * channels)
        else:
            self.to_qkv = nn.Linear(channels, 3 * channels)
        self.qk_rms_norm = qk_rms_norm
        if qk_rms_norm:
            self.q_rms_norm = MultiHeadRMSNorm(self.head_dim, num_heads)
            self.k_rms_norm = MultiHeadRMSNorm(self.head_dim, num_heads)
        self.to_out = nn.Linear(channels, channels)

    def qkv(self, x: torch.Tensor, context: torch.Tensor | None = None, packed: bool = False,
            phases: torch.Tensor | None = None):
        """x [..., C] (and context [B, Lc, ctx]) -> q, k, v with a trailing [H, D]; cross-attention's k, v come
        packed as [B * Lc, H, D] when `packed`. Their projection depends on the context alone: computed once per
        sampling run inside ``context_cache`` (``for_context``). Self-attention's q and k are rotated by
        the tokens' RoPE ``phases`` [..., L, D/2] when given, after their norm (rope.py)."""
        h, d = self.heads, self.head_dim
        if not self.cross:
            q, k, v = self.to_qkv(x).unflatten(-1, (3, h, d)).unbind(-3)
            if self.qk_rms_norm:
                q, k = head_rms_norm(q, k, self.q_rms_norm, self.k_rms_norm)
            if phases is not None:
                q, k = rope_torch(q, k, phases)
            return q, k, v
        q = self.to_q(x).unflatten(-1, (h, d))
        if not self.qk_rms_norm:
            k, v = for_context((self, packed), context, lambda: self._context_kv(context, packed))
            return q, k, v
        # The projection is kept; k's norm stays in the one q/k kernel (per row, so the same numbers either way).
        k, v = for_context((self, False), context, lambda: self._context_kv(context, False))
        q, k = head_rms_norm(q, k, self.q_rms_norm, self.k_rms_norm)
        return (q, k.flatten(0, 1), v.flatten(0, 1)) if packed else (q, k, v)

    def _context_kv(self, context: torch.Tensor, packed: bool):
        k, v = self.to_kv(context).unflatten(-1, (2, self.heads, self.head_dim)).unbind(-3)
        return (k.flatten(0, 1), v.flatten(0, 1)) if packed else (k, v)

    def out(self, attn: torch.Tensor) -> torch.Tensor:
        return self.to_out(attn.flatten(-2))


class MultiHeadAttention(AttentionProjections):
    """Dense attention over [B, L, C] tokens (full self-attention, or cross to a [B, Lc, ctx] context)."""

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                phases: torch.Tensor | None = None) -> torch.Tensor:
        q, k, v = self.qkv(x, context, phases=phases)
        return self.out(dense_attention(q, k, v))


def modulate(h: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """h * (1 + scale) + shift, one kernel (rounded once in half precision)."""
    return torch.addcmul(shift, h, 1 + scale)


def gated_residual(x: torch.Tensor, gate: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """x + gate * y, one kernel (rounded once in half precision); the twin of the fast path "gated_residual"."""
    return torch.addcmul(x, gate, y)


def gated_residual_sum(x: torch.Tensor, gate: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``gated_residual`` through the fast path "gated_residual" on CUDA (eager): PyTorch's ``addcmul`` cannot
    vectorise a gate that broadcasts ([B, 1, C]) and took ~2x the memory traffic's time."""
    return eager_fast_path("gated_residual", gated_residual, x, gate, y)


# ------------------------------------------------------------- the blocks' norms: twins and their dispatch
# In eager mode a block's LayerNorms, adaLN modulation, residual sums and q/k RMS norms are ~30 small PyTorch
# kernels per block (a third of a SLat-flow step's GPU time, and launches enough to make the step CPU-bound;
# docs/benchmarks/kernels.md#block-norms). The fast paths "norm_modulate" and "head_rms_norm" do each group in
# one kernel (NVRTC: no Triton needed, so Windows gets them too) and round where these twins round. Inside torch.compile the twins are traced
# (Inductor fuses them itself).

def norm_modulate_torch(x: torch.Tensor, y: torch.Tensor | None, gate: torch.Tensor | None,
                        weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float,
                        shift: torch.Tensor | None, scale: torch.Tensor | None):
    """The residual sum then the next norm of a block: ``x' = x + gate * y`` (``x + y`` without ``gate``,
    ``x`` itself without ``y``), ``h = LayerNorm32(x')`` (affine when ``weight``/``bias``), then adaLN's
    ``h * (1 + scale) + shift`` when ``shift``/``scale`` are given. ``x``/``y`` [..., L, C]; ``gate``/``shift``/
    ``scale`` broadcast to them ([..., 1, C] per item or [..., L, C] per row). Returns ``(x', h)``."""
    if y is not None:
        x = x + y if gate is None else gated_residual(x, gate, y)
    h = layer_norm32(x, weight, bias, eps)
    return x, (h if shift is None else modulate(h, shift, scale))


def norm_modulate(x: torch.Tensor, y: torch.Tensor | None, gate: torch.Tensor | None, norm: nn.LayerNorm,
                  shift: torch.Tensor | None = None, scale: torch.Tensor | None = None):
    """``norm_modulate_torch`` with ``norm``'s parameters, through the fast path "norm_modulate" on CUDA."""
    return eager_fast_path("norm_modulate", norm_modulate_torch, x, y, gate, norm.weight, norm.bias, norm.eps, shift,
                           scale)


def head_rms_norm_torch(q: torch.Tensor, k: torch.Tensor, gamma_q: torch.Tensor, gamma_k: torch.Tensor,
                        scale: float):
    """MultiHeadRMSNorm of q and k (each [..., H, D], own gains [H, D]); new tensors in their dtype."""
    return rms_norm_heads(q, gamma_q, scale), rms_norm_heads(k, gamma_k, scale)


def head_rms_norm(q: torch.Tensor, k: torch.Tensor, q_norm: MultiHeadRMSNorm, k_norm: MultiHeadRMSNorm):
    """``head_rms_norm_torch`` with the two modules' gains (one head size, so one scale), through the fast path
    "head_rms_norm" on CUDA."""
    return eager_fast_path("head_rms_norm", head_rms_norm_torch, q, k, q_norm.gamma, k_norm.gamma, q_norm.scale)


class ModulatedTransformerCrossBlock(nn.Module):
    """adaLN-modulated DiT block with self-attention, cross-attention and MLP (spec §3.5).

    Works on dense [B, L, C] tokens; the sparse flow uses the same block with a row-wise broadcast of
    the modulation (see sparse.transformer). With ``share_mod`` the model computes the modulation once for all
    blocks; ``own_modulation`` (TRELLIS.2, facts §6.1) adds each block's learned vector `modulation` [6C] to it.
    Self-attention's q and k are rotated by RoPE ``phases`` when the forward gets them.
    """

    def __init__(self, channels: int, ctx_channels: int, num_heads: int, mlp_ratio: float = 4.0,
                 qk_rms_norm: bool = False, qk_rms_norm_cross: bool = False, share_mod: bool = False,
                 attention_cls=MultiHeadAttention, own_modulation: bool = False):
        super().__init__()
        if own_modulation and not share_mod:
            raise ValueError("own_modulation adds to a shared modulation: it needs share_mod")
        self.own_modulation = own_modulation
        if own_modulation:                # first, as in the checkpoints' key order
            self.modulation = nn.Parameter(torch.zeros(6 * channels))
        self.norm1 = LayerNorm32(channels, elementwise_affine=False, eps=1e-6)
        self.norm2 = LayerNorm32(channels, elementwise_affine=True, eps=1e-6)
        self.norm3 = LayerNorm32(channels, elementwise_affine=False, eps=1e-6)
        self.self_attn = attention_cls(channels, num_heads, qk_rms_norm=qk_rms_norm)
        self.cross_attn = attention_cls(channels, num_heads, ctx_channels=ctx_channels, cross=True,
                                        qk_rms_norm=qk_rms_norm_cross)
        self.mlp = FeedForwardNet(channels, mlp_ratio)
        self.share_mod = share_mod
        if not share_mod:
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(channels, 6 * channels))

    def modulation_vector(self, emb: torch.Tensor) -> torch.Tensor:
        """[B, 6C]: the block's adaLN of ``emb``, or the shared one plus the block's own vector, summed in fp32
        and rounded once to ``emb``'s dtype."""
        if not self.share_mod:
            return self.adaLN_modulation(emb)
        if self.own_modulation:
            return (self.modulation.to(torch.float32) + emb.to(torch.float32)).to(emb.dtype)
        return emb

    def modulation_chunks(self, emb: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Six [B, C] chunks: shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp."""
        return self.modulation_vector(emb).chunk(6, dim=-1)

    def item_modulation(self, emb: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The six chunks as [B, 1, C] views that broadcast over each item's tokens (two view operations instead
        of seven: the eager blocks' host time counts)."""
        mod = self.modulation_vector(emb)
        return mod.view(mod.shape[0], 1, 6, -1).unbind(2)

    def forward(self, x: torch.Tensor, emb: torch.Tensor, context: torch.Tensor,
                phases: torch.Tensor | None = None) -> torch.Tensor:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.item_modulation(emb)
        x, h = norm_modulate(x, None, None, self.norm1, shift_msa, scale_msa)
        x, h = norm_modulate(x, self.self_attn(h, phases=phases), gate_msa, self.norm2)
        x, h = norm_modulate(x, self.cross_attn(h, context), None, self.norm3, shift_mlp, scale_mlp)
        return gated_residual_sum(x, gate_mlp, self.mlp(h))


def block_forward_torch(block: nn.Module, *args):
    """A flow's transformer block, eager: the twin of the compiled block (``trellis_triton.compiled_block``)."""
    return block(*args)


def run_block(block: nn.Module, *args, compiled: bool = False):
    """``block(*args)``, through torch.compile when ``compiled`` and the fast paths allow (fastpaths
    "flow_block": Triton on CUDA; otherwise, or after a failure, the eager block)."""
    if not compiled:
        return block(*args)
    x = args[0]
    device = x.device if isinstance(x, torch.Tensor) else x.feats.device
    return fastpaths.dispatch("flow_block", device, block_forward_torch, block, *args)
