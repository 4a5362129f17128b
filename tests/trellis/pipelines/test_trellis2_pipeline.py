"""The tiny TRELLIS.2 pipeline folder against the facts' layout (TRELLIS2_FACTS §2.2, §17), loading either family
through trellis.pipelines.from_pretrained, and a real run with the noise drawn in the order of §3.1."""
import json
import os
import re

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

import trellis.pipelines as pipelines
from tests.helpers.repo import DATA
from trellis.pipelines.samplers import FlowEulerGuidanceIntervalSampler

MANIFESTS = DATA / "state_dict_trellis2"
# TRELLIS2_FACTS §2.2, written out here (not taken from the writer).
OFFICIAL_MODELS = {
    "sparse_structure_flow_model": "ckpts/ss_flow_img_dit_1_3B_64_bf16",
    "sparse_structure_decoder": "microsoft/TRELLIS-image-large/ckpts/ss_dec_conv3d_16l8_fp16",
    "shape_slat_flow_model_512": "ckpts/slat_flow_img2shape_dit_1_3B_512_bf16",
    "shape_slat_flow_model_1024": "ckpts/slat_flow_img2shape_dit_1_3B_1024_bf16",
    "shape_slat_decoder": "ckpts/shape_dec_next_dc_f16c32_fp16",
    "tex_slat_flow_model_512": "ckpts/slat_flow_imgshape2tex_dit_1_3B_512_bf16",
    "tex_slat_flow_model_1024": "ckpts/slat_flow_imgshape2tex_dit_1_3B_1024_bf16",
    "tex_slat_decoder": "ckpts/tex_dec_next_dc_f16c32_fp16",
}
OFFICIAL_PARAMS = {
    "sparse_structure_sampler": {"steps": 12, "guidance_strength": 7.5, "guidance_rescale": 0.7,
                                 "guidance_interval": [0.6, 1.0], "rescale_t": 5.0},
    "shape_slat_sampler": {"steps": 12, "guidance_strength": 7.5, "guidance_rescale": 0.5,
                           "guidance_interval": [0.6, 1.0], "rescale_t": 3.0},
    "tex_slat_sampler": {"steps": 12, "guidance_strength": 1.0, "guidance_rescale": 0.0,
                         "guidance_interval": [0.6, 0.9], "rescale_t": 3.0},
}
ENCODERS = ("ckpts/shape_enc_next_dc_f16c32_fp16", "ckpts/tex_enc_next_dc_f16c32_fp16")


def file_tensors(prefix):
    with safe_open(prefix + ".safetensors", "pt") as f:
        return {k: f.get_slice(k).get_dtype() for k in f.keys()}


def pattern(key: str) -> str:
    """A tensor name with its block indices as N ("blocks.N.N.conv.weight")."""
    return re.sub(r"(?<=\.)\d+(?=\.)", "N", key)


def expected_keys(manifest: dict, args: dict) -> set:
    """The manifest's in-file names for the writer's smaller block counts: DiT blocks below num_blocks; an SC-VAE's
    ConvNeXt blocks j < n_i kept, its resampling block (at the published n_i) renumbered to the tiny n_i."""
    full = manifest["args"]
    out = set()
    for t in manifest["tensors"]:
        if not t["in_file"]:
            continue
        key, m = t["key"], re.match(r"blocks\.(\d+)\.(\d+)\.(.+)", t["key"])
        if "num_heads" in full:                                   # a DiT
            i = re.match(r"blocks\.(\d+)\.", key)
            if i is None or int(i.group(1)) < args["num_blocks"]:
                out.add(key)
        elif m is None:
            out.add(key)
        else:
            level, j, rest = int(m.group(1)), int(m.group(2)), m.group(3)
            if j == full["num_blocks"][level]:
                out.add(f"blocks.{level}.{args['num_blocks'][level]}.{rest}")
            elif j < args["num_blocks"][level]:
                out.add(key)
    return out


def test_the_tiny_folder_has_the_official_layout_names_and_file_dtypes(tiny_trellis2_dir):
    config = json.loads(open(os.path.join(tiny_trellis2_dir, "pipeline.json"), encoding="utf-8").read())
    assert config["name"] == "Trellis2ImageTo3DPipeline"
    args = config["args"]
    assert args["models"] == OFFICIAL_MODELS
    for key, params in OFFICIAL_PARAMS.items():
        assert args[key] == {"name": "FlowEulerGuidanceIntervalSampler", "args": {"sigma_min": 1e-5},
                             "params": params}
    assert args["image_cond_model"] == {"name": "DinoV3FeatureExtractor",
                                        "args": {"model_name": "facebook/dinov3-vitl16-pretrain-lvd1689m"}}
    assert args["default_pipeline_type"] == "1024_cascade"
    assert args["shape_slat_normalization"]["mean"][0] == 0.781296 and args["tex_slat_normalization"]["std"][-1] \
        == 2.77519
    for stem in [*OFFICIAL_MODELS.values(), *ENCODERS]:
        prefix = os.path.join(tiny_trellis2_dir, stem)
        manifest = json.loads((MANIFESTS / f"{os.path.basename(stem)}.json").read_text())
        ckpt = json.loads(open(prefix + ".json", encoding="utf-8").read())
        assert ckpt["name"] == manifest["class_name_in_ckpt_json"], stem
        assert set(ckpt["args"]) == set(manifest["args"]), stem            # the published config's entries
        dtypes = file_tensors(prefix)
        if not stem.startswith("microsoft/"):        # v1's decoder: its own manifest tests; names by pattern below
            assert set(dtypes) == expected_keys(manifest, ckpt["args"]), stem
        policy = {pattern(t["key"]): t["file_dtype"] for t in manifest["tensors"] if t["in_file"]}
        assert {k: policy[pattern(k)] for k in dtypes} == \
            {k: {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}[d] for k, d in dtypes.items()}, stem
    dino = json.loads(open(os.path.join(tiny_trellis2_dir, "facebook", "dinov3-vitl16-pretrain-lvd1689m",
                                        "config.json"), encoding="utf-8").read())
    assert (dino["model_type"], dino["patch_size"], dino["num_register_tokens"]) == ("dinov3_vit", 16, 4)


@pytest.fixture(scope="module")
def tiny_trellis2(tiny_trellis2_dir):
    """The tiny folder loaded through the family-dispatching loader (once for this module)."""
    return pipelines.from_pretrained(tiny_trellis2_dir)


def test_from_pretrained_loads_either_family(tiny_trellis2, tiny_trellis2_dir, tiny_pipeline_dir, tmp_path):
    pipe = tiny_trellis2
    assert type(pipe) is pipelines.Trellis2ImageTo3DPipeline
    assert set(pipe.models) == set(OFFICIAL_MODELS) and pipe.default_pipeline_type == "1024_cascade"
    modules = {k: type(m).__module__ for k, m in pipe.models.items()}
    assert modules.pop("sparse_structure_decoder") == "trellis.models.sparse_structure_vae"     # v1's, reused
    assert all(m.startswith("trellis.models.trellis2.") for m in modules.values()), modules
    for sampler, params in ((pipe.sparse_structure_sampler, pipe.sparse_structure_sampler_params),
                            (pipe.shape_slat_sampler, pipe.shape_slat_sampler_params),
                            (pipe.tex_slat_sampler, pipe.tex_slat_sampler_params)):
        assert isinstance(sampler, FlowEulerGuidanceIntervalSampler) and sampler.sigma_min == 1e-5
    assert pipe.tex_slat_sampler_params == OFFICIAL_PARAMS["tex_slat_sampler"]
    assert pipe.image_cond_model.tokens(512) == 1029 and pipe.image_cond_model.tokens(1024) == 4101
    cond = pipe.get_cond([Image.new("RGB", (64, 48), (30, 200, 90))], 512)
    assert cond["cond"].shape == (1, 1029, 32) and torch.count_nonzero(cond["neg_cond"]) == 0
    assert cond["neg_cond"].shape == cond["cond"].shape
    assert type(pipelines.from_pretrained(tiny_pipeline_dir)) is pipelines.TrellisImageTo3DPipeline

    # Errors name what is missing before anything is loaded; DINOv3 is never downloaded unasked.
    bad = tmp_path / "bad"
    bad.mkdir()
    config = json.loads(open(os.path.join(tiny_trellis2_dir, "pipeline.json"), encoding="utf-8").read())
    del config["args"]["models"]["tex_slat_decoder"]
    (bad / "pipeline.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="lacks tex_slat_decoder"):
        pipelines.from_pretrained(str(bad))
    config["args"]["models"]["tex_slat_decoder"] = OFFICIAL_MODELS["tex_slat_decoder"]
    config["args"]["image_cond_model"]["args"]["model_name"] = "nobody-here/no-such-dinov3"
    (bad / "pipeline.json").write_text(json.dumps(config))
    with pytest.raises(pipelines.ModelNotFoundError, match="gated by Meta's DINOv3 licence"):
        pipelines.from_pretrained(str(bad))


def test_a_cascade_run_draws_its_noise_on_the_cpu_in_stage_order(tiny_trellis2):
    """1024_cascade with one step per stage: the first input each flow sees is the next draw of one CPU generator
    seeded with the seed (structure, low-res shape, high-res shape, texture), and the run ends in textured meshes."""
    pipe = tiny_trellis2
    first_inputs = []

    def record(key):
        def hook(module, args, kwargs):
            x = args[0]
            feats = x.feats if hasattr(x, "feats") else x
            first_inputs.append((key, feats.clone(), kwargs.get("concat_cond")))
        return hook

    hooks = [pipe.models[key].register_forward_pre_hook(record(key), with_kwargs=True)
             for key in ("sparse_structure_flow_model", "shape_slat_flow_model_512", "shape_slat_flow_model_1024",
                         "tex_slat_flow_model_1024")]
    arr = np.zeros((96, 80, 4), np.uint8)
    arr[20:80, 15:65] = (200, 120, 40, 255)
    one = {"steps": 1}
    try:
        meshes, (shape, tex, res) = pipe.run(Image.fromarray(arr), seed=7, pipeline_type="1024_cascade",
                                             return_latent=True, sparse_structure_sampler_params=one,
                                             shape_slat_sampler_params=one, tex_slat_sampler_params=one)
    finally:
        for hook in hooks:
            hook.remove()
    assert [k for k, _, _ in first_inputs] == ["sparse_structure_flow_model", "shape_slat_flow_model_512",
                                               "shape_slat_flow_model_1024", "tex_slat_flow_model_1024"]
    gen = torch.Generator().manual_seed(7)
    for key, feats, concat in first_inputs:
        rows = feats.shape[0] // 2 if key != "tex_slat_flow_model_1024" else feats.shape[0]    # CFG pairs batched
        draw = torch.randn(1, 8, 16, 16, 16, generator=gen) if key.startswith("sparse") else \
            torch.randn(rows, 32, generator=gen)
        assert torch.equal(feats[:draw.shape[0]], draw), key
    assert first_inputs[-1][2] is not None and first_inputs[-1][2].feats.shape == (shape.feats.shape[0], 32)
    assert res == 1024 and int(shape.coords[:, 1:].max()) <= 63 and torch.equal(shape.coords, tex.coords)
    (mesh,) = meshes
    assert mesh.res == 1024 and mesh.faces.shape[0] > 0 and mesh.attrs.shape == (mesh.coords.shape[0], 6)
    assert torch.isfinite(mesh.vertices).all() and torch.isfinite(mesh.attrs).all()
    with pytest.raises(ValueError, match="unknown pipeline_type"):
        pipe.run(Image.fromarray(arr), pipeline_type="2048")


def test_the_full_size_writer_uses_the_published_configs():
    """--full-size writes each checkpoint with its published ckpt JSON (the facts' config), byte-for-byte in content."""
    from trellis.tools.tiny_pipeline import main
    from trellis.tools.tiny_trellis2_pipeline import configs

    for stem, name, args, _ in configs(full_size=True).values():
        published = json.loads((MANIFESTS / f"{os.path.basename(stem)}.json").read_text())
        assert (name, args) == (published["class_name_in_ckpt_json"], published["args"]), stem
    with pytest.raises(SystemExit):
        main(["unused", "--full-size"])                     # --full-size needs --trellis2


@pytest.mark.parametrize("kind, res, flows", [
    ("512", 512, ["shape_slat_flow_model_512", "tex_slat_flow_model_512"]),
    ("1024", 1024, ["shape_slat_flow_model_1024", "tex_slat_flow_model_1024"]),
    ("1536_cascade", 1536, ["shape_slat_flow_model_512", "shape_slat_flow_model_1024", "tex_slat_flow_model_1024"]),
])
def test_each_other_pipeline_type_runs_to_textured_meshes_on_its_grid(tiny_trellis2, kind, res, flows):
    """512, 1024 and 1536_cascade end to end on the tiny pipeline (1024_cascade: the test above): each runs the
    flows its type names, in order, and its mesh lies on that type's grid."""
    pipe = tiny_trellis2
    ran = []
    hooks = [m.register_forward_pre_hook(lambda module, args, key=key: ran.append(key))
             for key, m in pipe.models.items() if "slat_flow" in key]
    arr = np.zeros((96, 80, 4), np.uint8)
    arr[20:80, 15:65] = (90, 160, 220, 255)
    one = {"steps": 1}
    try:
        (mesh,) = pipe.run(Image.fromarray(arr), seed=3, pipeline_type=kind, sparse_structure_sampler_params=one,
                           shape_slat_sampler_params=one, tex_slat_sampler_params=one)
    finally:
        for hook in hooks:
            hook.remove()
    assert list(dict.fromkeys(ran)) == flows
    assert mesh.res == res and mesh.faces.shape[0] > 0 and mesh.attrs.shape == (mesh.coords.shape[0], 6)
    assert int(mesh.coords.max()) < res and torch.isfinite(mesh.vertices).all() and torch.isfinite(mesh.attrs).all()
