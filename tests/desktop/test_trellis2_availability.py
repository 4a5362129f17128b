"""trellis/pipelines/trellis2_availability.py: one answer to "can TRELLIS.2 run here?", from the files where the
loader finds them, and when it cannot, one message saying why (missing files, DINOv3's licence not accepted, no
token) and what to do. The folders hold the published pipeline.json's entries as small real safetensors files (the
check reads headers, not weights; tests/installer/test_weights_trellis2.py loads a real tiny pipeline so laid out)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from desktop.families.trellis2_availability import (ACCESS_RECORD, DINOV3_PAGE, TOKENS_PAGE, TRELLIS2_FOLDER,
                                                     has_hf_token, trellis2_availability)

DINO_FOLDER = "dinov3-vitl16-pretrain-lvd1689m"
DECODER = "microsoft/TRELLIS-image-large/ckpts/ss_dec_conv3d_16l8_fp16"
OWN = ("ss_flow_img_dit_1_3B_64_bf16", "slat_flow_img2shape_dit_1_3B_512_bf16",
       "slat_flow_img2shape_dit_1_3B_1024_bf16", "shape_dec_next_dc_f16c32_fp16", "slat_flow_imgshape2tex_dit_1_3B_512_bf16",
       "slat_flow_imgshape2tex_dit_1_3B_1024_bf16", "tex_dec_next_dc_f16c32_fp16")


def network(prefix: Path) -> None:
    prefix.parent.mkdir(parents=True, exist_ok=True)
    prefix.with_name(prefix.name + ".json").write_text('{"name": "X", "args": {}}')
    save_file({"w": np.zeros((4, 4), np.float16)}, str(prefix.with_name(prefix.name + ".safetensors")))


def pipeline_folder(folder: Path, decoder_inside: bool = True) -> Path:
    """A TRELLIS.2 pipeline folder as the tiny one is laid out: its networks, and (`decoder_inside`) the borrowed v1
    decoder under its repo's path inside it."""
    models = {f"m{i}": f"ckpts/{stem}" for i, stem in enumerate(OWN)}
    models["sparse_structure_decoder"] = DECODER
    folder.mkdir(parents=True)
    (folder / "pipeline.json").write_text(json.dumps({"name": "Trellis2ImageTo3DPipeline", "args": {
        "models": models, "image_cond_model": {"name": "DinoV3FeatureExtractor",
                                               "args": {"model_name": "facebook/" + DINO_FOLDER}},
        "rembg_model": {"name": "BiRefNet", "args": {}}}}))
    for stem in OWN:
        network(folder / "ckpts" / stem)
    if decoder_inside:
        network(folder / DECODER)
    return folder


def dinov3(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text('{"model_type": "dinov3_vit"}')
    save_file({"w": np.zeros(8, np.float32)}, str(folder / "model.safetensors"))


def models_folder(tmp_path: Path, with_dinov3: bool = True) -> Path:
    """The installer's layout: models/TRELLIS.2-4B, models/TRELLIS-image-large (the borrowed decoder) and, with
    `with_dinov3`, models/dinov3-vitl16-pretrain-lvd1689m."""
    models = tmp_path / "models"
    pipeline_folder(models / TRELLIS2_FOLDER, decoder_inside=False)
    network(models / "TRELLIS-image-large" / "ckpts" / DECODER.rsplit("/", 1)[1])
    if with_dinov3:
        dinov3(models / DINO_FOLDER)
    return models


def no_token_env(tmp_path: Path, models: Path, **extra) -> dict:
    return {"TRELLIS_MODEL_DIR": str(models), "HF_HOME": str(tmp_path / "hf"), "XDG_CACHE_HOME": str(tmp_path / "xdg"),
            **extra}


def test_ready_in_its_own_folder_and_in_the_installers_layout(tmp_path):
    own = pipeline_folder(tmp_path / "own")
    dinov3(own / "facebook" / DINO_FOLDER)
    inside = trellis2_availability(str(own), environ=no_token_env(tmp_path, tmp_path / "none"))
    assert inside.available and inside.reason == "ready" and inside.message == ""
    assert inside.conditioner_dir == str(own / "facebook" / DINO_FOLDER)
    models = models_folder(tmp_path)
    laid_out = trellis2_availability(environ=no_token_env(tmp_path, models))       # the default folder
    assert laid_out.available and laid_out.model_dir == str(models / TRELLIS2_FOLDER)
    assert laid_out.conditioner_dir == str(models / DINO_FOLDER)


def test_the_three_reasons_each_with_what_to_do(tmp_path):
    models = models_folder(tmp_path, with_dinov3=False)
    env = no_token_env(tmp_path, models)

    no_token = trellis2_availability(environ=env)
    assert not no_token.available and no_token.reason == "no_token" and no_token.conditioner_dir is None
    text = no_token.message
    assert "no Hugging Face token was found" in text and "DINOv3 License" in text and DINOV3_PAGE in text
    assert TOKENS_PAGE in text and "--trellis2" in text and "HF_TOKEN" in text and "TRELLIS v1 works" in text

    record = models / DINO_FOLDER / ACCESS_RECORD               # the installer's note of the hub's answer
    record.parent.mkdir()
    record.write_text(json.dumps({"status": "not_accepted", "http_status": 403}))
    refused = trellis2_availability(environ=env)
    assert refused.reason == "dinov3_not_accepted" and "HTTP 403" in refused.message
    assert DINOV3_PAGE in refused.message and "accept it" in refused.message and "--trellis2" in refused.message
    record.write_text(json.dumps({"status": "token_refused", "http_status": 401}))
    assert "HTTP 401" in trellis2_availability(environ=env).message

    # A token at hand: what is missing is said by name, first DINOv3's files ...
    record.unlink()
    with_token = dict(env, HF_TOKEN="hf_x")
    missing = trellis2_availability(environ=with_token)
    assert missing.reason == "missing_weights" and "DINOv3" in missing.message and "--trellis2" in missing.message
    # ... then a cut-off network file (an interrupted copy) and a missing one ...
    dinov3(models / DINO_FOLDER)
    cut = models / TRELLIS2_FOLDER / "ckpts" / "tex_dec_next_dc_f16c32_fp16.safetensors"
    cut.write_bytes(cut.read_bytes()[:-10])
    (models / "TRELLIS-image-large" / "ckpts" / "ss_dec_conv3d_16l8_fp16.json").unlink()
    damaged = trellis2_availability(environ=env)                 # no token needed: DINOv3 is here
    assert damaged.reason == "missing_weights" and "ckpts/tex_dec_next_dc_f16c32_fp16.safetensors" in damaged.message
    assert f"{DECODER}.safetensors (from microsoft/TRELLIS-image-large)" in damaged.message
    # ... and an empty models folder: the pipeline itself.
    empty = trellis2_availability(environ=dict(with_token, TRELLIS_MODEL_DIR=str(tmp_path / "empty")))
    assert empty.reason == "missing_weights" and "pipeline.json" in empty.message


def test_a_token_is_found_where_huggingface_hub_keeps_it(tmp_path):
    env = {"HF_HOME": str(tmp_path / "app-hf"), "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    assert not has_hf_token(env)
    assert has_hf_token(dict(env, HF_TOKEN="hf_x")) and not has_hf_token(dict(env, HF_TOKEN="  "))
    login = tmp_path / "xdg" / "huggingface" / "token"       # the user's login, though the app points HF_HOME away
    login.parent.mkdir(parents=True)
    login.write_text("hf_y\n")
    assert has_hf_token(env)
    login.write_text("\n")
    assert not has_hf_token(env)
    custom = tmp_path / "tok"
    custom.write_text("hf_z")
    assert has_hf_token(dict(env, HF_TOKEN_PATH=os.fspath(custom)))
