"""What TRELLIS.2's pipeline.json names, loaded (TRELLIS2_FACTS §2.2): its eight networks, its three samplers
and their parameters, the latent normalisations, the DINOv3 conditioner and the default pipeline type.

A model path is tried as `<pipeline dir>/<path>`, then as `<owner>/<repo>/<rest>` in another repo (the v1
sparse-structure decoder: local copies, the hub cache, then the hub; model_sources.load_model). The conditioner's
`model_name` (a hub id) likewise: `<dir>/<model_name>`, a local copy of that repo, the hub cache, and the hub
only when the caller allows it: the published DINOv3 weights are gated behind Meta's licence.
Entries the image pipeline does not use are ignored: `rembg_model` (we remove backgrounds with rembg's u2net,
never RMBG-2.0, whose licence is non-commercial), `low_vram` (our memory policy decides).
"""
from __future__ import annotations

import os
from typing import Callable, Optional

import torch

from . import samplers
from .model_sources import ModelNotFoundError, load_model, local_repo_folders, search_dirs, split_repo_path
from .trellis2_cascade import pipeline_type

__all__ = ["MODEL_KEYS", "SAMPLER_KEYS", "CONDITIONER_NAMES", "validate_args", "load_trellis2_parts",
           "load_conditioner", "conditioner_folder"]

# The networks image -> 3-D loads (the reference's model_names_to_load), the structure flow first.
MODEL_KEYS = ("sparse_structure_flow_model", "sparse_structure_decoder", "shape_slat_flow_model_512",
              "shape_slat_flow_model_1024", "shape_slat_decoder", "tex_slat_flow_model_512",
              "tex_slat_flow_model_1024", "tex_slat_decoder")
SAMPLER_KEYS = ("sparse_structure_sampler", "shape_slat_sampler", "tex_slat_sampler")
NORMALISATION_KEYS = ("shape_slat_normalization", "tex_slat_normalization")
CONDITIONER_NAMES = ("DinoV3FeatureExtractor",)
LATENT_CHANNELS = 32


def conditioner_folder(root: str, model_name: str, dirs=()) -> Optional[str]:
    """A local folder holding `model_name`'s config.json and model.safetensors, or None."""
    candidates = [os.path.join(root, *model_name.split("/")), model_name]
    if split_repo_path(model_name + "/x") is not None and model_name.count("/") == 1:
        candidates += local_repo_folders(model_name, search_dirs(root, dirs))
    for folder in candidates:
        if all(os.path.isfile(os.path.join(folder, f)) for f in ("config.json", "model.safetensors")):
            return folder
    return None


def load_conditioner(root: str, entry, dirs=(), device=None, download: bool = False):
    """The `image_cond_model` entry ({"name": "DinoV3FeatureExtractor", "args": {"model_name": ...}}) as a
    Dinov3Conditioner, on the CPU or `device`."""
    from ..models.dinov3 import load_dinov3

    if not isinstance(entry, dict) or entry.get("name") not in CONDITIONER_NAMES:
        raise ValueError(f"{root}/pipeline.json: image_cond_model must be {{'name': 'DinoV3FeatureExtractor', "
                         f"'args': {{'model_name': ...}}}}, got {entry!r}")
    name = entry.get("args", {}).get("model_name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{root}/pipeline.json: image_cond_model.args.model_name is missing")
    folder = conditioner_folder(root, name, dirs)
    if folder is not None:
        return load_dinov3(folder, device=device)
    try:
        return load_dinov3(name, local_files_only=True, device=device)
    except OSError as cached_err:
        if not download or name.count("/") != 1:
            raise ModelNotFoundError(
                f"the image conditioner {name} (named in {root}/pipeline.json) is not in {root}, in a local folder "
                f"of that repo, nor in the Hugging Face cache ({str(cached_err).splitlines()[0][:160]}). Its weights "
                f"are gated by Meta's DINOv3 licence: accept it on huggingface.co/{name}, log in (hf auth login) "
                f"and load the pipeline with download_conditioner=True, or put a copy (config.json, "
                f"model.safetensors) in a folder '{name.split('/')[-1]}' next to the pipeline folder.") from None
    try:
        return load_dinov3(name, local_files_only=False, device=device)
    except OSError as err:
        raise ModelNotFoundError(f"the image conditioner {name} could not be downloaded ({str(err)[:200]}); its "
                                 f"weights are gated: accept the DINOv3 licence on huggingface.co/{name} and log "
                                 f"in first.") from None


def validate_args(path: str, args: dict) -> None:
    """ValueError naming what a pipeline.json's `args` lacks or gets wrong, before anything is loaded."""
    models = args.get("models")
    missing = [key for key in MODEL_KEYS if not isinstance(models, dict) or key not in models]
    missing += [key for key in (*SAMPLER_KEYS, *NORMALISATION_KEYS) if not isinstance(args.get(key), dict)]
    if missing:
        raise ValueError(f"{path}: pipeline.json lacks {', '.join(missing)}")
    for key in NORMALISATION_KEYS:
        for part in ("mean", "std"):
            values = args[key].get(part)
            if not isinstance(values, list) or len(values) != LATENT_CHANNELS:
                raise ValueError(f"{path}: pipeline.json {key}.{part} must be {LATENT_CHANNELS} numbers")
    for key in SAMPLER_KEYS:
        if not hasattr(samplers, str(args[key].get("name"))):
            raise ValueError(f"{path}: pipeline.json {key} names an unknown sampler {args[key].get('name')!r}")
    pipeline_type(args.get("default_pipeline_type", "1024_cascade"))


def load_trellis2_parts(path: str, args: dict, dirs=(), device=None,
                        on_model: Optional[Callable[[str, torch.nn.Module], None]] = None) -> dict:
    """Networks, samplers, their parameters, normalisations and default type of a pipeline.json's `args`, as the
    pipeline constructor's keyword arguments; each network loaded on the CPU or built and filled on `device`."""
    validate_args(path, args)
    models = {}
    for key in MODEL_KEYS:
        models[key] = load_model(path, args["models"][key], dirs, device)
        if on_model is not None:
            on_model(key, models[key])
    made, params = {}, {}
    for key in SAMPLER_KEYS:
        entry = args[key]
        made[key] = getattr(samplers, entry["name"])(**entry.get("args", {}))
        params[key] = dict(entry.get("params", {}))
    return dict(models=models, samplers=made, sampler_params=params,
                shape_slat_normalization=args["shape_slat_normalization"],
                tex_slat_normalization=args["tex_slat_normalization"],
                default_pipeline_type=str(args.get("default_pipeline_type", "1024_cascade")))
