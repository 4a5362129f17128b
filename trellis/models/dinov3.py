"""TRELLIS.2's image conditioner (TRELLIS2_FACTS §5.2): DINOv3 ViT-L/16 through transformers' `DINOv3ViTModel`.

Images resized to S x S (Lanczos; S = 512 or 1024, chosen per call), ImageNet-normalised, through all the
backbone's layers; the features are the last layer's output before the model's own (affine, trained) final
norm, normalised by an affine-free LayerNorm instead: [B, 1 CLS + 4 registers + (S/16)^2 patches, 1024].
The final norm is swapped for that LayerNorm, so whichever way transformers nests its layers (`model.layer`
or `model.model.layer`), the model's own last hidden state is the feature.

The published weights are gated on the Hugging Face hub (the DINOv3 licence): nothing here downloads unless the
caller says so (`local_files_only=False`).
"""
from __future__ import annotations

import torch
from torch import nn

from .image_conditioner import images_to_tensor, imagenet_normalise

__all__ = ["DINOV3_REPO", "DINOV3_VITL16", "FEATURE_EPS", "Dinov3Conditioner", "load_dinov3", "dinov3_config"]

DINOV3_REPO = "facebook/dinov3-vitl16-pretrain-lvd1689m"
# The published ViT-L/16 config's architecture entries (facts §5.2); `image_size` does not matter (RoPE, any S).
DINOV3_VITL16 = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                     hidden_act="gelu", use_gated_mlp=False, layerscale_value=1.0, layer_norm_eps=1e-5,
                     num_register_tokens=4, patch_size=16, rope_theta=100.0, query_bias=True, key_bias=False,
                     value_bias=True, proj_bias=True, mlp_bias=True, image_size=224, num_channels=3)
FEATURE_EPS = 1e-5          # the affine-free LayerNorm over the features


def dinov3_config(**overrides):
    """A `DINOv3ViTConfig` of the published architecture, entries replaced by `overrides` (tiny test models)."""
    from transformers import DINOv3ViTConfig

    return DINOv3ViTConfig(**{**DINOV3_VITL16, **overrides})


class Dinov3Conditioner(nn.Module):
    """images [B, 3, S, S] in [0, 1] -> cond [B, 1 + R + (S/p)^2, C] float32 (R registers, p the patch size)."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        if not hasattr(backbone, "norm") or not hasattr(backbone, "config"):
            raise TypeError(f"expected a transformers DINOv3ViTModel, got {type(backbone).__name__}")
        # Features are the input of the trained final norm, normalised without its affine.
        backbone.norm = nn.LayerNorm(backbone.config.hidden_size, eps=FEATURE_EPS, elementwise_affine=False)
        self.backbone = backbone.eval()

    @property
    def patch_size(self) -> int:
        return int(self.backbone.config.patch_size)

    @property
    def width(self) -> int:
        return int(self.backbone.config.hidden_size)

    def tokens(self, size: int) -> int:
        """Condition tokens for S = `size`: CLS + registers + patches (1029 at 512, 4101 at 1024 for ViT-L/16)."""
        return 1 + int(self.backbone.config.num_register_tokens) + (size // self.patch_size) ** 2

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape [B, 3, S, S], got {tuple(images.shape)}")
        if images.shape[2] % self.patch_size or images.shape[3] % self.patch_size:
            raise ValueError(f"image sides {tuple(images.shape[2:])} must be multiples of the patch size "
                             f"{self.patch_size}")
        dtype = self.backbone.embeddings.patch_embeddings.weight.dtype
        x = imagenet_normalise(images.to(torch.float32)).to(dtype)
        return self.backbone(pixel_values=x).last_hidden_state.float()

    @torch.no_grad()
    def encode(self, images, size: int) -> torch.Tensor:
        """PIL images (resized to size x size with Lanczos) or a [B, 3, size, size] tensor in [0, 1] -> cond."""
        if not isinstance(images, torch.Tensor):
            images = images_to_tensor(images, size)
        elif tuple(images.shape[2:]) != (size, size):
            raise ValueError(f"a tensor input must already be {size}x{size}, got {tuple(images.shape[2:])}")
        device = self.backbone.embeddings.patch_embeddings.weight.device
        return self(images.to(device))


def load_dinov3(name_or_path: str, local_files_only: bool = True, device=None) -> Dinov3Conditioner:
    """A conditioner from a local folder (config.json + model.safetensors) or a hub id (its cached copy; downloaded
    only with `local_files_only=False`), fp32 as the reference runs it, on the CPU or `device`."""
    from transformers import DINOv3ViTModel

    backbone = DINOv3ViTModel.from_pretrained(name_or_path, local_files_only=local_files_only, dtype=torch.float32)
    conditioner = Dinov3Conditioner(backbone)
    return conditioner if device is None else conditioner.to(device)
