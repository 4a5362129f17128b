"""DINOv2 vision transformer with register tokens (the TRELLIS image conditioner trunk).

Module and parameter names are chosen so that ``state_dict()`` has exactly the keys of the
official torch.hub checkpoint ``dinov2_vitl14_reg4_pretrain.pth`` (spec §9), so that file loads
with ``strict=True`` and no renaming.
"""

import torch
import torch.nn as nn

from ..modules.attention import dense_attention

# Architecture of `dinov2_vitl14_reg` (spec §9 / manifest `args`), ViT arguments only.
DINOV2_VITL14_REG_ARGS = dict(
    img_size=518,
    patch_size=14,
    embed_dim=1024,
    depth=24,
    num_heads=16,
    mlp_ratio=4,
    init_values=1.0,
    num_register_tokens=4,
    norm_eps=1e-6,
)


class PatchEmbed(nn.Module):
    """Non-overlapping p x p patches -> linear embedding, tokens in row-major grid order."""

    def __init__(self, patch_size: int, embed_dim: int, in_chans: int = 3):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # [B, C, gh, gw] -> [B, gh*gw, C]
        return self.proj(x).flatten(2).transpose(1, 2)


class LayerScale(nn.Module):
    """Per-channel learned scale of a residual branch (key `gamma`)."""

    def __init__(self, dim: int, init_values: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_values)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Attention(nn.Module):
    """Multi-head self-attention with one fused qkv projection laid out as [q | k | v].

    Split and merge as in `trellis.modules.transformer`: tokens stay [B, N, heads, head_dim] and the
    softmax runs through the project's dense attention (scale 1/sqrt(head_dim), as DINOv2 uses).
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).unflatten(-1, (3, self.num_heads, self.head_dim)).unbind(-3)
        return self.proj(dense_attention(q, k, v).flatten(-2))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()  # exact (erf) GELU, not the tanh approximation
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x += ls1(attn(norm1(x))); x += ls2(mlp(norm2(x)))."""

    def __init__(self, dim, num_heads, mlp_ratio, init_values, norm_eps, qkv_bias):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.ls1 = LayerScale(dim, init_values)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, init_values)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DinoVisionTransformer(nn.Module):
    def __init__(
        self,
        img_size: int = 518,
        patch_size: int = 14,
        embed_dim: int = 1024,
        depth: int = 24,
        num_heads: int = 16,
        mlp_ratio: float = 4,
        init_values: float = 1.0,
        num_register_tokens: int = 4,
        norm_eps: float = 1e-6,
        qkv_bias: bool = True,
    ):
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
        # Kept so the model can be re-created from its own description (local save format).
        self.args = dict(
            img_size=img_size, patch_size=patch_size, embed_dim=embed_dim, depth=depth,
            num_heads=num_heads, mlp_ratio=mlp_ratio, init_values=init_values,
            num_register_tokens=num_register_tokens, norm_eps=norm_eps, qkv_bias=qkv_bias,
        )
        self.patch_size = patch_size
        self.grid_size = img_size // patch_size
        self.num_register_tokens = num_register_tokens

        # Registration order follows the checkpoint's state-dict order.
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid_size**2, embed_dim))
        if num_register_tokens > 0:
            self.register_tokens = nn.Parameter(torch.zeros(1, num_register_tokens, embed_dim))
        # Only used for masked-image training; present so the official checkpoint loads strictly.
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))
        self.patch_embed = PatchEmbed(patch_size, embed_dim)
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, init_values, norm_eps, qkv_bias) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)

        # Small random tokens so a freshly built (untrained) model is not degenerate.
        for p in (self.cls_token, self.pos_embed, getattr(self, "register_tokens", None)):
            if p is not None:
                nn.init.normal_(p, std=0.02)

    def prepare_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] -> [B, 1 + R + P, C]: cls, registers, patches (spec §9)."""
        B, _, H, W = x.shape
        p, g = self.patch_size, self.grid_size
        if H % p or W % p or (H // p, W // p) != (g, g):
            raise ValueError(
                f"input {H}x{W} gives a patch grid that differs from the position-embedding grid "
                f"{g}x{g} (expected {g * p}x{g * p} images; interpolation is not supported)"
            )
        x = torch.cat([self.cls_token.expand(B, -1, -1), self.patch_embed(x)], dim=1)
        x = x + self.pos_embed
        if self.num_register_tokens > 0:
            # Registers go right after cls and carry no position embedding.
            x = torch.cat([x[:, :1], self.register_tokens.expand(B, -1, -1), x[:, 1:]], dim=1)
        return x

    def forward_prenorm(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens after the last block, before the final norm (what TRELLIS consumes)."""
        x = self.prepare_tokens(x)
        for block in self.blocks:
            x = block(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.forward_prenorm(x))


def dinov2_vitl14_reg(**overrides) -> DinoVisionTransformer:
    """ViT-L/14 with 4 registers, the architecture of `dinov2_vitl14_reg` (no weights loaded)."""
    return DinoVisionTransformer(**{**DINOV2_VITL14_REG_ARGS, **overrides})
