"""The CLIP text tower and the text conditioner of the text pipelines (text facts §3).

    cond = TextConditioner.from_folder(clip_folder)(["a red chair"])     # [1, 77, width]

A pre-LayerNorm causal transformer: token + learned position embeddings, `num_hidden_layers` blocks
(self-attention with a causal mask, MLP with CLIP's activation), final LayerNorm. The output is
`last_hidden_state` (after the final LayerNorm), every one of the 77 positions. The module's parameter
names are those of the Hugging Face checkpoints under `text_model.`, so the published
`openai/clip-vit-large-patch14` `model.safetensors` (both towers) loads as is: only the text tower's
tensors are read. The tower stays in fp32 (it runs once per job), as DINOv2 does in the image pipeline.
"""
from __future__ import annotations

import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from .clip_tokenizer import ClipTokenizer

PREFIX = "text_model."
# CLIPTextConfig's defaults, used for keys a config.json leaves out.
TEXT_CONFIG_DEFAULTS = dict(vocab_size=49408, hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                            num_attention_heads=8, max_position_embeddings=77, hidden_act="quick_gelu",
                            layer_norm_eps=1e-5)


def _activation(name: str):
    if name == "quick_gelu":
        return lambda x: x * torch.sigmoid(1.702 * x)
    if name == "gelu":
        return F.gelu
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return lambda x: F.gelu(x, approximate="tanh")
    raise ValueError(f"unsupported CLIP activation {name!r}")


class _Embeddings(nn.Module):
    def __init__(self, vocab_size: int, width: int, positions: int):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.position_embedding = nn.Embedding(positions, width)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.token_embedding(ids) + self.position_embedding.weight[: ids.shape[1]]


class _SelfAttention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(width, width) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape

        def split(t):
            return t.view(b, n, self.heads, c // self.heads).transpose(1, 2)
        out = F.scaled_dot_product_attention(split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x)),
                                             is_causal=True)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, c))


class _Mlp(nn.Module):
    def __init__(self, width: int, hidden: int, act: str):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(width, hidden), nn.Linear(hidden, width)
        self.act = _activation(act)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class _Layer(nn.Module):
    def __init__(self, width: int, heads: int, hidden: int, act: str, eps: float):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(width, eps=eps)
        self.self_attn = _SelfAttention(width, heads)
        self.layer_norm2 = nn.LayerNorm(width, eps=eps)
        self.mlp = _Mlp(width, hidden, act)

    def forward(self, x):
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class _Encoder(nn.Module):
    def __init__(self, layers: list):
        super().__init__()
        self.layers = nn.ModuleList(layers)


class ClipTextTransformer(nn.Module):
    def __init__(self, vocab_size: int, hidden_size: int, intermediate_size: int, num_hidden_layers: int,
                 num_attention_heads: int, max_position_embeddings: int = 77, hidden_act: str = "quick_gelu",
                 layer_norm_eps: float = 1e-5):
        super().__init__()
        self.config = dict(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
                           num_hidden_layers=num_hidden_layers, num_attention_heads=num_attention_heads,
                           max_position_embeddings=max_position_embeddings, hidden_act=hidden_act,
                           layer_norm_eps=layer_norm_eps)
        self.embeddings = _Embeddings(vocab_size, hidden_size, max_position_embeddings)
        self.encoder = _Encoder([_Layer(hidden_size, num_attention_heads, intermediate_size, hidden_act,
                                        layer_norm_eps) for _ in range(num_hidden_layers)])
        self.final_layer_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)

    @property
    def width(self) -> int:
        return self.config["hidden_size"]

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """int64 ids [B, L] -> last_hidden_state [B, L, width] (no attention mask: causal only)."""
        x = self.embeddings(input_ids)
        for layer in self.encoder.layers:
            x = layer(x)
        return self.final_layer_norm(x)


def read_text_config(folder: str) -> dict:
    """The text tower's config from a folder's config.json (a CLIPConfig's `text_config`, or a CLIPTextConfig)."""
    path = os.path.join(folder, "config.json")
    from ..core.inputfile import MAX_CONFIG_BYTES, read_json_file

    config = read_json_file(path, MAX_CONFIG_BYTES, what="a model's config")
    if not isinstance(config, dict):
        raise ValueError(f"{path} is not a model's config (not a JSON object)")
    config = config.get("text_config", config) or {}
    return {k: config.get(k, v) for k, v in TEXT_CONFIG_DEFAULTS.items()}


def load_text_tower(folder: str) -> ClipTextTransformer:
    """The text tower of a Hugging Face CLIP folder (config.json + model.safetensors), weights checked key
    for key and shape for shape."""
    from safetensors import safe_open

    from . import WeightsFileError, check_readable, safetensors_spans, skipped_init

    with skipped_init():                       # every weight is loaded below, strictly
        model = ClipTextTransformer(**read_text_config(folder))
    path = os.path.join(folder, "model.safetensors")
    check_readable(path)
    safetensors_spans(path)                    # a header far too long or damaged is refused before safetensors reads it
    expected = model.state_dict()
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            names = set(f.keys())
            missing = [k for k in expected if PREFIX + k not in names]
            if missing:
                raise ValueError(f"{path} is not a CLIP text model for this config.json: missing {missing[:6]}")
            state = {k: f.get_tensor(PREFIX + k) for k in expected}
    except (ValueError, OSError):
        raise
    except Exception as err:       # SafetensorError: truncated or corrupt
        raise WeightsFileError(path, f"the file is damaged or incomplete ({err})") from None
    for k, v in state.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise ValueError(f"{path}: tensor {PREFIX + k} has shape {tuple(v.shape)}, config.json expects "
                             f"{tuple(expected[k].shape)}")
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return model.eval()


class TextConditioner(nn.Module):
    """Prompts -> CLIP `last_hidden_state` [B, 77, width], tokenized offline from the folder's files."""

    def __init__(self, tower: ClipTextTransformer, tokenizer: ClipTokenizer):
        super().__init__()
        self.tower = tower
        self.tokenizer = tokenizer
        self.last_truncated: list = []

    @classmethod
    def from_folder(cls, folder: str) -> "TextConditioner":
        return cls(load_text_tower(folder), ClipTokenizer.from_folder(folder))

    def forward(self, prompts) -> torch.Tensor:
        tokens = self.tokenizer(prompts)
        self.last_truncated = tokens.truncated
        device = self.tower.final_layer_norm.weight.device
        return self.tower(tokens.input_ids.to(device))
