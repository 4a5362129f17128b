"""TRELLIS.2's DINOv3 conditioner (TRELLIS2_FACTS §5.2) on a random-weight DINOv3ViTModel of the published layout
(patch 16, 4 registers, RoPE) at a small width, offline."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from trellis.models.dinov3 import DINOV3_VITL16, Dinov3Conditioner, dinov3_config, load_dinov3
from trellis.models.image_conditioner import IMAGENET_MEAN, IMAGENET_STD

SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


@pytest.fixture(scope="module")
def backbone_folder(tmp_path_factory):
    from transformers import DINOv3ViTModel

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("dinov3_small")
    model = DINOv3ViTModel(dinov3_config(**SMALL))
    with torch.no_grad():            # a trained-looking final norm, so that "not used" is visible
        model.norm.weight.normal_(1.0, 0.5)
        model.norm.bias.normal_(0.0, 0.5)
    model.save_pretrained(folder)
    return str(folder)


def test_token_counts_and_the_affine_free_norm(backbone_folder):
    cond_model = load_dinov3(backbone_folder)
    assert cond_model.tokens(512) == 1029 and cond_model.tokens(1024) == 4101
    images = torch.rand(2, 3, 512, 512, generator=torch.Generator().manual_seed(0))
    cond = cond_model(images)
    assert cond.shape == (2, 1029, 32) and cond.dtype == torch.float32
    torch.testing.assert_close(cond.mean(-1), torch.zeros(2, 1029), atol=1e-5, rtol=0)
    var = cond.var(-1, unbiased=False)             # v / (v + eps) for a token of variance v before the norm
    assert var.max() <= 1 and var.min() > 0.9
    torch.testing.assert_close(var[:, 5:], torch.ones(2, 1024), atol=1e-3, rtol=0)      # the patch tokens
    assert cond_model.encode([Image.new("RGB", (40, 30), (200, 10, 10))], 1024).shape == (1, 4101, 32)


def test_features_are_the_last_layer_before_the_final_norm(backbone_folder):
    """An independent route through transformers: the unmodified model's hidden states, the last one normalised
    with F.layer_norm (eps 1e-5, no affine), on images resized and normalised by hand."""
    from transformers import DINOv3ViTModel

    reference = DINOv3ViTModel.from_pretrained(backbone_folder, local_files_only=True).eval()
    img = Image.fromarray(np.random.default_rng(1).integers(0, 255, (70, 90, 3), dtype=np.uint8))
    x = np.asarray(img.resize((512, 512), Image.LANCZOS), dtype=np.float32) / 255
    x = (x - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)
    with torch.no_grad():
        out = reference(pixel_values=torch.from_numpy(x).permute(2, 0, 1)[None], output_hidden_states=True)
    want = F.layer_norm(out.hidden_states[-1], (32,), eps=1e-5)
    got = load_dinov3(backbone_folder).encode([img], 512)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out.last_hidden_state, want, atol=1e-2)      # the trained norm differs


def test_published_layout_and_clear_errors(backbone_folder):
    cfg = dinov3_config()
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.intermediate_size) == \
        (1024, 24, 16, 4096)
    assert (cfg.patch_size, cfg.num_register_tokens, cfg.key_bias, cfg.rope_theta) == (16, 4, False, 100.0)
    assert DINOV3_VITL16["layer_norm_eps"] == 1e-5
    cond_model = load_dinov3(backbone_folder)
    with pytest.raises(ValueError, match="multiples of the patch size"):
        cond_model(torch.rand(1, 3, 500, 500))
    with pytest.raises(ValueError, match=r"\[B, 3, S, S\]"):
        cond_model(torch.rand(1, 4, 512, 512))
    with pytest.raises(TypeError, match="DINOv3ViTModel"):
        Dinov3Conditioner(torch.nn.Linear(2, 2))
    with pytest.raises(OSError):                     # a hub id that is not cached: no download without asking
        load_dinov3("no-such-owner/no-such-dinov3-model")
