"""Image conditioner: RGB images -> DINOv2 pre-norm tokens -> affine-free LayerNorm (spec §9, §11.2).

Also holds the weight-loading helpers for the three layouts we meet:
the official torch.hub ``.pth`` (our key names), the Hugging Face transformers port
(``Dinov2WithRegistersModel``), and our own ``prefix.json`` + ``prefix.safetensors`` pair.
No network access here: callers pass local files.
"""

import json
import re

import torch
import torch.nn as nn
import torch.nn.functional as F

from .dinov2 import DINOV2_VITL14_REG_ARGS, DinoVisionTransformer

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def images_to_tensor(images, size: int) -> torch.Tensor:
    """PIL images -> [B, 3, size, size] float32 RGB in [0, 1], each resized with Lanczos (both families' way)."""
    import numpy as np
    from PIL import Image

    arrays = [np.asarray(img.convert("RGB").resize((size, size), Image.LANCZOS), dtype=np.float32) / 255
              for img in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)


def imagenet_normalise(images: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] in [0, 1] -> ImageNet-normalised, in the images' dtype."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images - mean) / std

# ViT constructor arguments accepted in a config dict.
_VIT_ARGS = set(DINOV2_VITL14_REG_ARGS) | {"qkv_bias"}
# Hub-only config entries that do not change the inference graph we build.
_IGNORED_ARGS = {"arch", "ffn_layer", "block_chunks", "interpolate_antialias", "interpolate_offset"}


class ImageConditioner(nn.Module):
    def __init__(self, vit: DinoVisionTransformer):
        super().__init__()
        self.vit = vit
        # Non-persistent: the state dict stays exactly the ViT's checkpoint layout under `vit.`.
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_config(cls, args: dict) -> "ImageConditioner":
        args = dict(args)
        ffn = args.get("ffn_layer", "mlp")
        if ffn != "mlp":
            raise ValueError(f"only ffn_layer='mlp' is supported, got {ffn!r}")
        unknown = set(args) - _VIT_ARGS - _IGNORED_ARGS
        if unknown:
            raise ValueError(f"unknown DINOv2 config entries: {sorted(unknown)}")
        return cls(DinoVisionTransformer(**{k: v for k, v in args.items() if k in _VIT_ARGS}))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, H, W] RGB in [0, 1] -> cond [B, 1 + R + P, C] (fp32 for an fp32 model)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape [B, 3, H, W], got {tuple(images.shape)}")
        # Do the math in the parameters' dtype (fp32) whatever the caller hands us.
        x = images.to(self.vit.cls_token.dtype)
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        tokens = self.vit.forward_prenorm(x)
        return F.layer_norm(tokens, tokens.shape[-1:], eps=1e-5)


def _vit_of(model: nn.Module) -> DinoVisionTransformer:
    return model.vit if isinstance(model, ImageConditioner) else model


def load_dinov2_state_dict(model: nn.Module, state_dict: dict) -> None:
    """Strictly load a state dict in the official hub key layout into the ViT of `model`."""
    vit = _vit_of(model)
    expected, given = set(vit.state_dict()), set(state_dict)
    missing, unexpected = sorted(expected - given), sorted(given - expected)
    if missing or unexpected:
        raise ValueError(f"DINOv2 state dict mismatch: missing keys {missing}, unexpected keys {unexpected}")
    vit.load_state_dict(state_dict, strict=True)


# --- Hugging Face transformers port -> our names --------------------------------------------

_HF_TOP = {
    "embeddings.cls_token": "cls_token",
    "embeddings.mask_token": "mask_token",
    "embeddings.register_tokens": "register_tokens",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
}
# Per-layer module names; both the transformers 4.x and 5.x spellings are accepted.
_HF_LAYER = {
    "norm1": "norm1",
    "norm2": "norm2",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
    "layer_scale1": "ls1",
    "layer_scale2": "ls2",
    "attention.output.dense": "attn.proj",  # 4.x
    "attention.o_proj": "attn.proj",  # 5.x
}
# Separate q/k/v projections -> slot in our fused [q | k | v] qkv tensor.
_HF_QKV = {
    "attention.attention.query": 0, "attention.attention.key": 1, "attention.attention.value": 2,  # 4.x
    "attention.q_proj": 0, "attention.k_proj": 1, "attention.v_proj": 2,  # 5.x
}
_HF_LAYER_KEY = re.compile(r"encoder\.layer\.(\d+)\.(.+)\.(weight|bias|lambda1)")


def convert_transformers_dinov2_with_registers(state_dict: dict) -> dict:
    """Rename a `Dinov2WithRegistersModel` state dict to the hub layout, fusing q, k, v."""
    out, qkv_parts, bad = {}, {}, []
    for key, value in state_dict.items():
        # Task models (e.g. image classification) nest the backbone under this prefix.
        key = key.removeprefix("dinov2_with_registers.")
        if key in _HF_TOP:
            out[_HF_TOP[key]] = value
            continue
        m = _HF_LAYER_KEY.fullmatch(key)
        if m is None:
            bad.append(key)
            continue
        i, module, param = m.groups()
        param = "gamma" if param == "lambda1" else param
        if module in _HF_QKV:
            qkv_parts.setdefault((i, param), [None] * 3)[_HF_QKV[module]] = value
        elif module in _HF_LAYER:
            out[f"blocks.{i}.{_HF_LAYER[module]}.{param}"] = value
        else:
            bad.append(key)
    if bad:
        raise ValueError(f"unrecognised transformers DINOv2 keys: {sorted(bad)}")
    for (i, param), parts in qkv_parts.items():
        if any(p is None for p in parts):
            raise ValueError(f"layer {i}: incomplete q/k/v {param} tensors")
        out[f"blocks.{i}.attn.qkv.{param}"] = torch.cat(parts, dim=0)
    return out


# --- Local format and official checkpoint -----------------------------------------------------


def save_image_conditioner(model: nn.Module, prefix) -> None:
    """Write `prefix.json` ({"name": "DINOv2", "args": ...}) and `prefix.safetensors` (fp32)."""
    from safetensors.torch import save_file

    vit = _vit_of(model)
    with open(f"{prefix}.json", "w") as f:
        json.dump({"name": "DINOv2", "args": vit.args}, f, indent=1)
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in vit.state_dict().items()}
    save_file(tensors, f"{prefix}.safetensors")


def load_image_conditioner(prefix, device=None) -> ImageConditioner:
    """Inverse of `save_image_conditioner` (strict: any key mismatch raises); on `device` (default the CPU), built
    and filled there (device_load)."""
    from . import check_readable, read_config_json, read_safetensors

    check_readable(f"{prefix}.json")
    config = read_config_json(f"{prefix}.json")
    if config.get("name") != "DINOv2":
        raise ValueError(f"{prefix}.json: expected name 'DINOv2', got {config.get('name')!r}")
    model = _built(config["args"], device)
    on_gpu = device is not None and torch.device(device).type == "cuda"
    if on_gpu:
        from .device_load import read_safetensors_to

        state = read_safetensors_to(f"{prefix}.safetensors", device)
    else:
        state = read_safetensors(f"{prefix}.safetensors")
    load_dinov2_state_dict(model, state)
    return model.eval()


def _built(args: dict, device) -> ImageConditioner:
    """An ImageConditioner whose every weight is loaded next: built on the CPU, or straight on `device`."""
    from . import skipped_init

    with skipped_init():
        if device is None:
            return ImageConditioner.from_config(args)
        from .device_load import build_on

        return build_on(lambda: ImageConditioner.from_config(args), device)


def load_official_dinov2(path, device=None) -> ImageConditioner:
    """ImageConditioner from the hub file `dinov2_vitl14_reg4_pretrain.pth` (local path), on `device` (default the
    CPU; another device: built there and filled from the file's memory map, without a whole copy in host memory)."""
    from . import WeightsFileError, check_readable

    check_readable(path)
    try:
        import zipfile

        mapped = device is not None and zipfile.is_zipfile(path)       # torch's own format maps; a legacy one cannot
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mapped)
    except Exception as err:           # truncated zip, not a checkpoint, ...
        raise WeightsFileError(path, f"the file is damaged or incomplete ({err})") from None
    model = _built(DINOV2_VITL14_REG_ARGS, device)
    load_dinov2_state_dict(model, state)
    return model.eval()
