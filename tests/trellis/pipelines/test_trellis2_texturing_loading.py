"""Loading the texturing pipeline (TRELLIS2_TEXTURING_FACTS.md §2, §12.1): texturing_pipeline.json and the variants
its reassembly warns of (the image pipeline's pipeline.json alone; no name, missing sampler / normalisations,
low_vram, one flow; an encoder JSON with the older `resolution` argument), and the shape encoder loaded strictly
(a missing or an extra tensor fails, naming it)."""
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from trellis.models.trellis2.sc_vae_encoder import FlexiDualGridVaeEncoder
from trellis.pipelines.trellis2_texturing import Trellis2TexturingPipeline
from trellis.pipelines.trellis2_texturing_config import ENCODER_STEM, load_shape_encoder, read_texturing_config

SHARED = ("microsoft", "facebook")


def variant(src: str, dest: Path, texturing: dict | None, keep_pipeline: bool = True, encoder=None) -> str:
    """A copy of the tiny folder made of links, with its own config files (and encoder files when given)."""
    dest.mkdir()
    for name in SHARED:
        os.symlink(os.path.join(src, name), dest / name, target_is_directory=True)
    (dest / "ckpts").mkdir()
    for f in os.listdir(os.path.join(src, "ckpts")):
        if encoder is None or not f.startswith(Path(ENCODER_STEM).name):
            os.symlink(os.path.join(src, "ckpts", f), dest / "ckpts" / f)
    if encoder is not None:
        config, state = encoder
        prefix = dest / ENCODER_STEM
        prefix.with_suffix(".json").write_text(json.dumps(config))
        save_file(state, str(prefix) + ".safetensors")
    if keep_pipeline:
        shutil.copy(os.path.join(src, "pipeline.json"), dest / "pipeline.json")
    if texturing is not None:
        (dest / "texturing_pipeline.json").write_text(json.dumps(texturing))
    return str(dest)


def tiny_texturing(src: str) -> dict:
    return json.loads(Path(src, "texturing_pipeline.json").read_text())


def tiny_encoder(src: str):
    prefix = os.path.join(src, *ENCODER_STEM.split("/"))
    return json.loads(Path(prefix + ".json").read_text()), load_file(prefix + ".safetensors")


def test_the_tiny_folder_loads_with_its_four_networks(tiny_trellis2_dir):
    pipe = Trellis2TexturingPipeline.from_pretrained(tiny_trellis2_dir)
    assert set(pipe.models) == {"shape_slat_encoder", "tex_slat_decoder", "tex_slat_flow_model_512",
                                "tex_slat_flow_model_1024"}
    assert isinstance(pipe.models["shape_slat_encoder"], FlexiDualGridVaeEncoder)
    assert pipe.tex_slat_sampler_params["steps"] == 12 and pipe.tex_slat_sampler_params["guidance_interval"] == [0.6, 0.9]


def test_the_image_pipeline_folder_alone_loads(tiny_trellis2_dir, tmp_path):
    path = variant(tiny_trellis2_dir, tmp_path / "image_only", None)
    args, used = read_texturing_config(path)
    assert used.endswith("pipeline.json") and args["models"]["shape_slat_encoder"] == ENCODER_STEM
    pipe = Trellis2TexturingPipeline.from_pretrained(path)
    assert "sparse_structure_flow_model" not in pipe.models and "shape_slat_encoder" in pipe.models


def test_a_sparse_texturing_json_takes_the_rest_from_pipeline_json(tiny_trellis2_dir, tmp_path):
    full = tiny_texturing(tiny_trellis2_dir)
    sparse = {"args": {"models": {k: v for k, v in full["args"]["models"].items() if k != "tex_slat_flow_model_512"},
                       "low_vram": True}}
    path = variant(tiny_trellis2_dir, tmp_path / "sparse", sparse)
    args, used = read_texturing_config(path)
    assert used.endswith("texturing_pipeline.json")
    assert args["tex_slat_normalization"] == full["args"]["tex_slat_normalization"]
    assert args["tex_slat_sampler"] == full["args"]["tex_slat_sampler"]
    assert args["models"]["tex_slat_flow_model_512"] == full["args"]["models"]["tex_slat_flow_model_512"]


def test_one_flow_no_name_and_low_vram_load_and_the_missing_flow_is_named(tiny_trellis2_dir, tmp_path):
    full = tiny_texturing(tiny_trellis2_dir)
    del full["name"], full["args"]["models"]["tex_slat_flow_model_512"]
    full["args"]["low_vram"] = False
    path = variant(tiny_trellis2_dir, tmp_path / "one_flow", full, keep_pipeline=False)
    pipe = Trellis2TexturingPipeline.from_pretrained(path)
    assert "tex_slat_flow_model_512" not in pipe.models
    with pytest.raises(ValueError, match="tex_slat_flow_model_512"):
        pipe.run((torch.rand(3, 3), torch.tensor([[0, 1, 2]])), None, resolution=512)


def test_a_texturing_json_without_a_decoder_or_pipeline_json_is_refused(tiny_trellis2_dir, tmp_path):
    full = tiny_texturing(tiny_trellis2_dir)
    del full["args"]["models"]["tex_slat_decoder"]
    path = variant(tiny_trellis2_dir, tmp_path / "no_decoder", full, keep_pipeline=False)
    with pytest.raises(ValueError, match="tex_slat_decoder"):
        read_texturing_config(path)


def test_an_encoder_json_with_resolution_loads(tiny_trellis2_dir, tmp_path):
    config, state = tiny_encoder(tiny_trellis2_dir)
    config["args"]["resolution"] = 1024
    path = variant(tiny_trellis2_dir, tmp_path / "old_encoder", tiny_texturing(tiny_trellis2_dir),
                   encoder=(config, state))
    encoder = load_shape_encoder(path, ENCODER_STEM)
    assert torch.equal(encoder.state_dict()["input_layer.weight"], state["input_layer.weight"].float())


@pytest.mark.parametrize("damage", ["missing", "extra"])
def test_the_encoder_loads_strictly(tiny_trellis2_dir, tmp_path, damage):
    config, state = tiny_encoder(tiny_trellis2_dir)
    state = dict(state)
    if damage == "missing":
        del state["to_latent.bias"]
    else:
        state["blocks.9.0.conv.weight"] = torch.zeros(2, dtype=torch.float16)
    path = variant(tiny_trellis2_dir, tmp_path / damage, tiny_texturing(tiny_trellis2_dir), encoder=(config, state))
    with pytest.raises((ValueError, KeyError, RuntimeError), match="to_latent.bias|blocks.9.0.conv.weight"):
        Trellis2TexturingPipeline.from_pretrained(path)
