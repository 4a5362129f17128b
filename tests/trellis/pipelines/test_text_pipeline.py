"""The text-to-3D pipeline and variants on the tiny random-weight text pipeline (CPU, offline).

The tiny pipeline is written the way `python -m trellis.tools.tiny_pipeline --text OUT` writes it: the
text repo (two flows, pipeline.json naming the decoders as "JeffreyXiang/TRELLIS-image-large/ckpts/..."
and the encoder as "openai/clip-vit-large-patch14"), a tiny TRELLIS-image-large and a tiny CLIP beside it.
"""
import json
import shutil
import warnings

import numpy as np
import pytest
import torch
import trimesh

import trellis.pipelines as pipelines
from trellis.modules.sparse import SparseTensor
from trellis.pipelines import (ModelNotFoundError, PromptTruncatedWarning, TrellisImageTo3DPipeline,
                               TrellisTextTo3DPipeline)
from trellis.tools import tiny_pipeline
from trellis.tools.tiny_text_pipeline import CLIP_DIR, IMAGE_DIR, TEXT_DIR

FAST = dict(sparse_structure_sampler_params={"steps": 3}, slat_sampler_params={"steps": 3})


@pytest.fixture(scope="module")
def models_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    assert tiny_pipeline.main(["--text", str(root)]) == 0
    return root


@pytest.fixture(scope="module")
def pipe(models_root):
    return TrellisTextTo3DPipeline.from_pretrained(str(models_root / TEXT_DIR))


def plate():
    """A thin plate: few voxels, so stage 2 and the decoders stay quick."""
    return trimesh.creation.box(extents=(1.0, 0.6, 0.08))


def spy_noise(pipe, monkeypatch):
    seen = {}
    for name in ("sparse_structure_sampler", "slat_sampler"):
        sampler = getattr(pipe, name)
        original = sampler.sample

        def spy(model, noise, *args, _name=name, _orig=original, **kwargs):
            seen[_name] = noise
            seen[_name + "_kwargs"] = kwargs
            return _orig(model, noise, *args, **kwargs)
        monkeypatch.setattr(sampler, "sample", spy)
    return seen


def test_the_published_layout_loads_with_decoders_from_the_image_repo(models_root, pipe):
    config = json.loads((models_root / TEXT_DIR / "pipeline.json").read_text())
    assert config["name"] == "TrellisTextTo3DPipeline"
    assert config["args"]["text_cond_model"] == "openai/clip-vit-large-patch14"
    assert config["args"]["models"]["slat_decoder_gs"].startswith("JeffreyXiang/TRELLIS-image-large/ckpts/")
    assert sorted(p.name for p in (models_root / TEXT_DIR / "ckpts").iterdir()) == [
        "slat_flow_txt_dit_tiny_fp16.json", "slat_flow_txt_dit_tiny_fp16.safetensors",
        "ss_flow_txt_dit_tiny_fp16.json", "ss_flow_txt_dit_tiny_fp16.safetensors"]
    # The decoders are the image pipeline's very weights.
    image = TrellisImageTo3DPipeline.from_pretrained(str(models_root / IMAGE_DIR))
    for key in ("sparse_structure_decoder", "slat_decoder_mesh"):
        a, b = pipe.models[key].state_dict(), image.models[key].state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert isinstance(pipelines.from_pretrained(str(models_root / TEXT_DIR)), TrellisTextTo3DPipeline)


def test_run_gives_gaussians_and_mesh_deterministically(pipe, monkeypatch):
    seen = spy_noise(pipe, monkeypatch)
    a = pipe.run("a red wooden chair", seed=7, formats=["gaussian", "mesh"], **FAST)
    assert set(a) == {"gaussian", "mesh"}
    assert len(a["gaussian"][0]) > 0 and a["mesh"][0].vertices.shape[1] == 3
    # RNG as the reference: one generator seeded once, stage-1 noise then one stage-2 row per voxel.
    g = torch.Generator().manual_seed(7)
    assert torch.equal(seen["sparse_structure_sampler"], torch.randn(1, 8, 8, 8, 8, generator=g))
    slat_noise = seen["slat_sampler"]
    assert torch.equal(slat_noise.feats, torch.randn(slat_noise.feats.shape[0], 8, generator=g))
    # The negative is the empty prompt's embedding; the cond is the prompt's.
    kwargs = seen["slat_sampler_kwargs"]
    assert torch.equal(kwargs["neg_cond"], pipe.text_cond_model([""]))
    assert torch.equal(kwargs["cond"], pipe.text_cond_model(["a red wooden chair"]))
    assert kwargs["cfg_strength"] == 7.5 and kwargs["steps"] == 3      # pipeline.json params, caller's steps
    b = pipe.run("a red wooden chair", seed=7, formats=["gaussian"], **FAST)
    assert torch.equal(a["gaussian"][0]._xyz, b["gaussian"][0]._xyz)
    assert torch.equal(a["gaussian"][0]._features_dc, b["gaussian"][0]._features_dc)
    c = pipe.run("a red wooden chair", seed=8, formats=["gaussian"], **FAST)
    d = pipe.run("a blue glass bottle", seed=7, formats=["gaussian"], **FAST)
    for other in (c, d):
        x, y = other["gaussian"][0]._features_dc, a["gaussian"][0]._features_dc
        assert x.shape != y.shape or not torch.equal(x, y)
    assert [s["stage"] for s in pipe.last_stats][:3] == ["condition", "sparse_structure", "slat"]


def test_text_encoding_pads_truncates_and_batches(pipe):
    tok = pipe.text_cond_model.tokenizer
    vocab = tok.tokenizer.get_vocab()
    bos, eos = vocab["<|startoftext|>"], vocab["<|endoftext|>"]
    ids = tok(["a red chair", "", "word " * 200])
    assert ids.input_ids.shape == (3, 77) and ids.truncated == [False, False, True]
    first = ids.input_ids[0].tolist()
    n = first.index(eos)
    assert first[0] == bos and n > 1 and first[n:] == [eos] * (77 - n)        # pad token = <|endoftext|>
    assert ids.input_ids[1].tolist() == [bos] + [eos] * 76                     # the null prompt
    assert ids.input_ids[2, 0] == bos and ids.input_ids[2, -1] == eos and eos not in ids.input_ids[2, 1:-1]
    assert tok(["A  Red\tCHAIR"]).input_ids.equal(tok(["a red chair"]).input_ids)  # CLIP lower-cases, squeezes spaces
    batch = pipe.encode_text(["a red chair", "a blue vase"])
    assert batch.shape == (2, 77, 32) and batch.dtype == torch.float32
    torch.testing.assert_close(batch[1:], pipe.encode_text(["a blue vase"]), rtol=0, atol=1e-6)
    with pytest.warns(PromptTruncatedWarning, match="77 tokens"):
        pipe.encode_text(["word " * 200])
    with pytest.raises(ValueError, match="prompt is empty"):
        pipe.run("   ", **FAST)


def test_tokenizer_and_text_tower_equal_transformers(models_root, pipe):
    """The same files through transformers' CLIPTokenizer and CLIPTextModel (what the reference runs)."""
    transformers = pytest.importorskip("transformers")
    folder = str(models_root / CLIP_DIR)
    prompts = ["a red wooden chair", "", "isn't it a ROBOT's head?  3 pigs!", "word " * 200]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref_tok = transformers.AutoTokenizer.from_pretrained(folder)
        ref_model = transformers.CLIPTextModel.from_pretrained(folder).eval()
    ref_ids = ref_tok(prompts, max_length=77, padding="max_length", truncation=True, return_tensors="pt").input_ids
    ours = pipe.text_cond_model.tokenizer(prompts).input_ids
    assert torch.equal(ours, ref_ids)
    with torch.no_grad():
        expected = ref_model(input_ids=ref_ids).last_hidden_state
    torch.testing.assert_close(pipe.encode_text(prompts[:3]), expected[:3], rtol=1e-5, atol=1e-5)


def test_tokenizer_without_tokenizer_json_is_built_from_vocab_and_merges(models_root, tmp_path):
    from trellis.models.clip_tokenizer import ClipTokenizer

    folder = tmp_path / "clip"
    shutil.copytree(models_root / CLIP_DIR, folder)
    full = ClipTokenizer.from_folder(str(folder))
    (folder / "tokenizer.json").unlink()
    rebuilt = ClipTokenizer.from_folder(str(folder))
    prompts = ["a red wooden chair", "isn't it a ROBOT's head?", "word " * 100]
    assert torch.equal(full(prompts).input_ids, rebuilt(prompts).input_ids)
    for name in ("vocab.json", "merges.txt"):
        (folder / name).unlink()
    with pytest.raises(FileNotFoundError, match="no CLIP tokenizer"):
        ClipTokenizer.from_folder(str(folder))


def test_other_repos_come_from_the_model_cache(models_root, tmp_path, monkeypatch):
    """A text pipeline alone in its folder finds TRELLIS-image-large and CLIP in $TRELLIS_MODEL_DIR (named as
    the app's cache names another repo, <owner>--<name>), or in the folders the caller passes."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    alone = tmp_path / "downloads" / "TRELLIS-text-tiny"
    shutil.copytree(models_root / TEXT_DIR, alone)
    monkeypatch.delenv("TRELLIS_MODEL_DIR", raising=False)
    with pytest.raises(ModelNotFoundError, match="JeffreyXiang/TRELLIS-image-large/ckpts/.*could not be "
                                                 "downloaded.*HF_HUB_OFFLINE.*TRELLIS_MODEL_DIR"):
        TrellisTextTo3DPipeline.from_pretrained(str(alone))
    cache = tmp_path / "cache"
    shutil.copytree(models_root / IMAGE_DIR, cache / "microsoft--TRELLIS-image-large")     # a mirror's copy
    with pytest.raises(ModelNotFoundError, match="openai/clip-vit-large-patch14.*could not be downloaded"):
        TrellisTextTo3DPipeline.from_pretrained(str(alone), search_dirs=[cache])
    shutil.copytree(models_root / CLIP_DIR, cache / "openai--clip-vit-large-patch14")
    monkeypatch.setenv("TRELLIS_MODEL_DIR", str(cache))
    p = TrellisTextTo3DPipeline.from_pretrained(str(alone))
    out = p.run("a red wooden chair", seed=7, formats=["gaussian"], **FAST)
    assert len(out["gaussian"][0]) > 0


def test_the_text_encoder_comes_from_the_hugging_face_cache(models_root, tmp_path, monkeypatch):
    """A CLIP snapshot in the hub cache's own layout is used with the hub switched off."""
    from huggingface_hub import constants

    hub = tmp_path / "hub"
    repo = hub / "models--openai--clip-vit-large-patch14"
    commit = "0" * 40
    shutil.copytree(models_root / CLIP_DIR, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    alone = tmp_path / "text"
    shutil.copytree(models_root / TEXT_DIR, alone)
    monkeypatch.delenv("TRELLIS_MODEL_DIR", raising=False)
    p = TrellisTextTo3DPipeline.from_pretrained(str(alone), search_dirs=[models_root])   # decoders only there
    assert p.encode_text(["a red chair"]).shape == (1, 77, 32)


def test_precision_switch_keeps_the_text_tower_in_fp32(models_root):
    p = TrellisTextTo3DPipeline.from_pretrained(str(models_root / TEXT_DIR))
    ref = p.encode_text(["a red chair"])
    p.set_memory_policy(precision="fp16")
    assert p.models["slat_flow_model"].blocks[0].mlp.mlp[0].weight.dtype == torch.float16
    assert p.text_cond_model.tower.final_layer_norm.weight.dtype == torch.float32
    assert torch.equal(p.encode_text(["a red chair"]), ref)
    out = p.run("a red chair", seed=1, formats=["gaussian"], **FAST)
    assert torch.isfinite(out["gaussian"][0]._xyz).all()


def test_run_variant_keeps_the_given_voxels(pipe, monkeypatch, tmp_path):
    mesh = plate()
    voxels = pipe.voxelize(mesh)
    reso = pipe.models["slat_flow_model"].resolution
    assert voxels.max() < reso and len(voxels) > 0
    seen = spy_noise(pipe, monkeypatch)
    out = pipe.run_variant(mesh, "a wooden board", num_samples=2, seed=5, formats=["gaussian"],
                           slat_sampler_params={"steps": 2})
    assert "sparse_structure_sampler" not in seen                       # stage 1 skipped
    coords = seen["slat_sampler"].coords
    assert torch.equal(coords[:, 0], torch.arange(2, dtype=torch.int32).repeat_interleave(len(voxels)))
    assert torch.equal(coords[: len(voxels), 1:], voxels) and torch.equal(coords[len(voxels):, 1:], voxels)
    assert torch.equal(seen["slat_sampler"].feats, torch.randn(2 * len(voxels), 8,
                                                               generator=torch.Generator().manual_seed(5)))
    gs = pipe.models["slat_decoder_gs"].rep_config["num_gaussians"]
    assert len(out["gaussian"]) == 2 and all(len(g) == gs * len(voxels) for g in out["gaussian"])
    path = tmp_path / "plate.glb"
    mesh.export(path)
    again = pipe.run_variant(str(path), "a wooden board", num_samples=2, seed=5, formats=["gaussian"],
                             slat_sampler_params={"steps": 2}, up="z")     # written z up, unlike glTF's y
    assert torch.equal(again["gaussian"][1]._xyz, out["gaussian"][1]._xyz)
    (tmp_path / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0")
    with pytest.raises(ValueError, match="not a 3-D model file"):
        pipe.run_variant(str(tmp_path / "photo.jpg"), "x")


def test_image_pipeline_run_variant_keeps_the_given_voxels(models_root, monkeypatch):
    from PIL import Image

    image_pipe = TrellisImageTo3DPipeline.from_pretrained(str(models_root / IMAGE_DIR))
    mesh = plate()
    voxels = image_pipe.voxelize(mesh)
    seen = spy_noise(image_pipe, monkeypatch)
    img = Image.fromarray(np.full((518, 518, 3), 120, np.uint8))
    out = image_pipe.run_variant(mesh, img, seed=3, preprocess_image=False, formats=["gaussian", "mesh"],
                                 slat_sampler_params={"steps": 2})
    assert "sparse_structure_sampler" not in seen
    assert torch.equal(seen["slat_sampler"].coords[:, 1:], voxels)
    assert out["mesh"][0].vertices.shape[0] > 0 and len(out["gaussian"][0]) > 0
    assert isinstance(seen["slat_sampler"], SparseTensor)
