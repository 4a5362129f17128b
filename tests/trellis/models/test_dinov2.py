"""DINOv2 image conditioner: checkpoint layout, equivalence with transformers, token assembly, I/O."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from trellis.models.dinov2 import DinoVisionTransformer, dinov2_vitl14_reg
from trellis.models.image_conditioner import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageConditioner,
    convert_transformers_dinov2_with_registers,
    load_dinov2_state_dict,
    load_image_conditioner,
    save_image_conditioner,
)

from tests.helpers.repo import DATA
MANIFEST = DATA / "state_dict" / "image_cond_model.json"

TINY = dict(img_size=28, patch_size=14, embed_dim=32, depth=2, num_heads=2, mlp_ratio=4,
            init_values=1.0, num_register_tokens=3, norm_eps=1e-6)


def randomize_(module: torch.nn.Module, std: float = 0.1, seed: int = 0) -> None:
    """Overwrite every parameter (incl. layer scales, registers, norms) with random values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g) * std
            # Keep norm weights / layer scales around 1 so activations stay well scaled.
            p.copy_(1 + noise if name.endswith(("norm1.weight", "norm2.weight", "norm.weight",
                                                 "layernorm.weight")) else noise)


def tiny_conditioner(seed: int = 0) -> ImageConditioner:
    model = ImageConditioner.from_config(TINY).eval()
    randomize_(model, std=0.2, seed=seed)
    return model


# --- checkpoint layout -------------------------------------------------------------------------


def test_full_model_matches_hub_manifest():
    manifest = json.loads(MANIFEST.read_text())
    expected = {t["key"]: (tuple(t["shape"]), t["dtype"]) for t in manifest["tensors"]}
    with torch.device("meta"):
        vit = dinov2_vitl14_reg()
        from_args = ImageConditioner.from_config(manifest["args"]).vit
    for model in (vit, from_args):
        sd = model.state_dict()
        assert set(sd) == set(expected)
        for key, t in sd.items():
            assert (tuple(t.shape), str(t.dtype).removeprefix("torch.")) == expected[key], key
    assert len(sd) == manifest["num_tensors"]
    assert sum(t.numel() for t in sd.values()) == manifest["total_numel"]


def test_unsupported_config_rejected():
    with pytest.raises(ValueError, match="ffn_layer"):
        ImageConditioner.from_config({**TINY, "ffn_layer": "swiglufused"})
    with pytest.raises(ValueError, match="emb_dim"):
        ImageConditioner.from_config({**TINY, "emb_dim": 8})


# --- equivalence with an independent implementation (Hugging Face transformers) -----------------


def _hf_tiny_model():
    transformers = pytest.importorskip("transformers")
    config = transformers.Dinov2WithRegistersConfig(
        image_size=56, patch_size=14, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        mlp_ratio=4, num_register_tokens=4, layerscale_value=1.0, layer_norm_eps=1e-6,
        hidden_act="gelu", qkv_bias=True, attn_implementation="eager",
    )
    hf = transformers.Dinov2WithRegistersModel(config).eval()
    randomize_(hf, std=0.1, seed=1)
    ours = ImageConditioner.from_config(dict(
        img_size=56, patch_size=14, embed_dim=64, depth=2, num_heads=4, mlp_ratio=4,
        init_values=1.0, num_register_tokens=4, norm_eps=1e-6)).eval()
    return hf, ours


def test_matches_transformers_dinov2_with_registers():
    hf, ours = _hf_tiny_model()
    load_dinov2_state_dict(ours, convert_transformers_dinov2_with_registers(hf.state_dict()))

    images = torch.rand(2, 3, 56, 56, generator=torch.Generator().manual_seed(2))
    pixels = (images - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        out = hf(pixel_values=pixels, output_hidden_states=True)
        hf_prenorm = out.hidden_states[-1]
        # hidden_states[-1] really is pre-norm: the model's last_hidden_state is its layernorm.
        assert torch.allclose(hf.layernorm(hf_prenorm), out.last_hidden_state, atol=1e-6)
        assert not torch.allclose(hf_prenorm, out.last_hidden_state, atol=1e-2)
        # 56/14 = 4x4 patches == pos-embed grid, so transformers does not interpolate.
        assert hf_prenorm.shape == (2, 1 + 4 + 16, 64)

        prenorm = ours.vit.forward_prenorm(pixels)
        cond = ours(images)
    assert prenorm.abs().max() > 1  # non-trivial activations
    assert torch.allclose(prenorm, hf_prenorm, atol=1e-5, rtol=0)
    assert torch.allclose(ours.vit.norm(prenorm), out.last_hidden_state, atol=1e-5, rtol=0)
    assert torch.allclose(cond, F.layer_norm(hf_prenorm, (64,), eps=1e-5), atol=1e-5, rtol=0)


def test_converter_accepts_transformers_4x_names():
    # transformers 4.x (layout of the published HF checkpoints) spelled attention weights
    # differently from 5.x; both must convert to the same tensors.
    hf, _ = _hf_tiny_model()
    new = hf.state_dict()
    legacy_names = {"attention.q_proj": "attention.attention.query", "attention.k_proj": "attention.attention.key",
                    "attention.v_proj": "attention.attention.value", "attention.o_proj": "attention.output.dense"}
    legacy = {}
    for key, value in new.items():
        for a, b in legacy_names.items():
            key = key.replace(a, b)
        legacy[key] = value
    a, b = convert_transformers_dinov2_with_registers(new), convert_transformers_dinov2_with_registers(legacy)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="classifier.weight"):
        convert_transformers_dinov2_with_registers({**new, "classifier.weight": torch.zeros(1)})


# --- token assembly by hand ----------------------------------------------------------------------


def test_token_assembly_by_hand():
    vit = tiny_conditioner().vit
    with torch.no_grad():
        for block in vit.blocks:  # zero layer scales -> every block is the identity
            block.ls1.gamma.zero_()
            block.ls2.gamma.zero_()
    B, p, C, g = 2, 14, 32, 2
    x = torch.randn(B, 3, 28, 28)
    # Patch embedding as an explicit matmul over row-major p x p patches (channel, row, col order).
    patches = x.reshape(B, 3, g, p, g, p).permute(0, 2, 4, 1, 3, 5).reshape(B, g * g, 3 * p * p)
    w = vit.patch_embed.proj.weight.reshape(C, -1)
    patch_tokens = patches @ w.T + vit.patch_embed.proj.bias
    pos = vit.pos_embed[0]
    expected = torch.cat([
        (vit.cls_token[0, 0] + pos[0]).expand(B, 1, C),
        vit.register_tokens.expand(B, -1, -1),
        patch_tokens + pos[1:],
    ], dim=1)
    with torch.no_grad():
        got = vit.forward_prenorm(x)
    assert got.shape == (B, 1 + 3 + 4, C)
    assert torch.allclose(got, expected, atol=1e-5)


def test_wrong_image_size_raises():
    vit = DinoVisionTransformer(**TINY)
    with pytest.raises(ValueError, match="grid"):
        vit.forward_prenorm(torch.zeros(1, 3, 42, 42))
    with pytest.raises(ValueError, match="grid"):
        vit.forward_prenorm(torch.zeros(1, 3, 28, 30))


# --- ImageConditioner ------------------------------------------------------------------------------


def test_conditioner_output_normalised_and_fp32():
    model = tiny_conditioner()
    images = torch.rand(2, 3, 28, 28)
    with torch.no_grad():
        cond = model(images)
        # Same thing written out: ImageNet normalisation, pre-norm tokens, affine-free LN.
        mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        tokens = model.vit.forward_prenorm((images - mean) / std)
        mu = tokens.mean(-1, keepdim=True)
        var = tokens.var(-1, unbiased=False, keepdim=True)
        by_hand = (tokens - mu) / torch.sqrt(var + 1e-5)
        cond_half_input = model(images.half())
    assert cond.shape == (2, 1 + 3 + 4, 32) and cond.dtype == torch.float32
    assert torch.allclose(cond, by_hand, atol=1e-5)
    assert torch.allclose(cond.mean(-1), torch.zeros(2, 8), atol=1e-5)
    assert torch.allclose(cond.var(-1, unbiased=False), torch.ones(2, 8), atol=1e-3)
    assert cond_half_input.dtype == torch.float32  # math stays in fp32
    assert torch.allclose(cond_half_input, model(images.half().float()), atol=0)


def test_save_load_round_trip(tmp_path):
    model = tiny_conditioner(seed=3)
    prefix = tmp_path / "image_cond_model"
    save_image_conditioner(model, prefix)
    meta = json.loads(Path(f"{prefix}.json").read_text())
    assert meta["name"] == "DINOv2" and meta["args"]["num_register_tokens"] == 3
    loaded = load_image_conditioner(prefix)
    images = torch.rand(2, 3, 28, 28)
    with torch.no_grad():
        assert torch.equal(model(images), loaded(images))


def test_strict_loading_names_bad_keys(tmp_path):
    from safetensors.torch import load_file, save_file

    prefix = tmp_path / "m"
    save_image_conditioner(tiny_conditioner(), prefix)
    sd = load_file(f"{prefix}.safetensors")
    del sd["blocks.1.ls2.gamma"]
    save_file(sd, f"{prefix}.safetensors")
    with pytest.raises(ValueError, match=r"missing keys \['blocks\.1\.ls2\.gamma'\]"):
        load_image_conditioner(prefix)

    sd = dict(tiny_conditioner().vit.state_dict(), extra=torch.zeros(1))
    with pytest.raises(ValueError, match=r"unexpected keys \['extra'\]"):
        load_dinov2_state_dict(tiny_conditioner(), sd)
