"""Normalisation layers. All compute in fp32 and return the input dtype (spec §3.3)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


_HALF = (torch.float16, torch.bfloat16)


def _fp32_or_wider(x: torch.Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)


def layer_norm32(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float) -> torch.Tensor:
    """LayerNorm over the last dim in fp32 (optional affine ``weight``/``bias``), returned in ``x``'s dtype."""
    shape = x.shape[-1:]
    if weight is None and x.is_cuda and x.dtype in _HALF:
        # CUDA's layer norm already reduces and normalises half inputs in fp32 and rounds once on the
        # way out: the same numbers as casting to fp32 and back, without the two copies.
        return F.layer_norm(x, shape, None, None, eps)
    dt = _fp32_or_wider(x)
    w = weight.to(dt) if weight is not None else None
    b = bias.to(dt) if bias is not None else None
    return F.layer_norm(x.to(dt), shape, w, b, eps).to(x.dtype)


def exact_in(dtype: torch.dtype, *tensors: torch.Tensor | None) -> tuple | None:
    """``tensors`` cast to ``dtype`` where every value survives the cast exactly (None stays None), else None."""
    cast = tuple(None if t is None else t.detach().to(dtype) for t in tensors)
    for t, c in zip(tensors, cast):
        if t is not None and not torch.equal(c.to(t.dtype), t.detach()):
            return None
    return cast


class LayerNorm32(nn.LayerNorm):
    """LayerNorm over the last dim, computed in fp32 whatever the activation dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight is not None and x.is_cuda and x.dtype in _HALF and not torch.compiler.is_compiling():
            affine = self.half_affine(x.dtype)
            if affine is not None:
                # CUDA's layer norm reduces, normalises and applies a half weight and bias in fp32 and rounds once
                # on the way out: the same numbers as the fp32 path where the half copies are exact (checkpoints
                # keep these weights in fp16), without its three casts.
                return F.layer_norm(x, x.shape[-1:], affine[0], affine[1], self.eps)
        return layer_norm32(x, self.weight, self.bias, self.eps)

    def half_affine(self, dtype: torch.dtype) -> tuple | None:
        """(weight, bias) in ``dtype`` if both are exact there, else None; kept until the parameters change."""
        w, b = self.weight, self.bias
        key = (dtype, w.device, w.data_ptr(), w._version,
               None if b is None else (b.data_ptr(), b._version))
        cached = getattr(self, "_half_affine", None)
        if cached is None or cached[0] != key:
            if w.is_cuda and torch.cuda.is_current_stream_capturing():
                return None                 # the check reads the values back: not inside a CUDA graph's capture
            cached = (key, exact_in(dtype, w, b))
            self._half_affine = cached
        return cached[1]


class GroupNorm32(nn.GroupNorm):
    """GroupNorm on [N, C, ...], computed in fp32."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dt = _fp32_or_wider(x)
        return F.group_norm(x.to(dt), self.num_groups, self.weight.to(dt), self.bias.to(dt), self.eps).to(x.dtype)


class ChannelLayerNorm32(LayerNorm32):
    """LayerNorm over the channel dim of an [N, C, D, H, W] tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.movedim(1, -1)).movedim(-1, 1)


class MultiHeadRMSNorm(nn.Module):
    """Per-head L2 normalisation rescaled by sqrt(head_dim) and a learned gain (spec §3.3).

    `x / max(|x|, 1e-12) * gamma * sqrt(D)` over the last dim of [..., H, D]; fp32 maths.
    """

    def __init__(self, head_dim: int, heads: int):
        super().__init__()
        self.scale = head_dim ** 0.5
        self.gamma = nn.Parameter(torch.ones(heads, head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm_heads(x, self.gamma, self.scale)


def rms_norm_heads(x: torch.Tensor, gamma: torch.Tensor, scale: float) -> torch.Tensor:
    """MultiHeadRMSNorm's maths: ``x / max(|x|, 1e-12) * gamma * scale`` over the last dim, in fp32."""
    dt = _fp32_or_wider(x)
    return (F.normalize(x.to(dt), dim=-1) * gamma.to(dt) * scale).to(x.dtype)
