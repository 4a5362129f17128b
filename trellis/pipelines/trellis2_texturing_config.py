"""What the texturing pipeline loads (TRELLIS2_TEXTURING_FACTS.md §2): `texturing_pipeline.json`, or the image
pipeline's `pipeline.json` of the same folder, whose texture flows, texture decoder, texture sampler and
normalisations are the very ones texturing uses, plus the shape encoder at its published stem.

The published texturing_pipeline.json was reassembled, not read, so the reader tolerates its variants: no or
another `name`, one texture flow of the two, a missing sampler or normalisation (taken from pipeline.json beside
it, else the facts' defaults for the sampler), `low_vram` and `rembg_model` (ignored: our memory policy decides and
backgrounds are removed with rembg), and a shape encoder JSON with the `resolution` argument an older revision
carried (dropped: the class takes none).
"""
from __future__ import annotations

import os
from typing import Callable, Optional

import torch

from ..models import from_pretrained as model_from_pretrained
from ..models import load_on, read_config_json
from . import samplers
from .model_sources import load_model
from .trellis2_loading import LATENT_CHANNELS

__all__ = ["TEXTURING_CONFIG", "ENCODER_STEM", "FLOW_KEYS", "DEFAULT_TEX_SAMPLER", "read_texturing_config",
           "load_texturing_parts", "load_shape_encoder"]

TEXTURING_CONFIG = "texturing_pipeline.json"
ENCODER_STEM = "ckpts/shape_enc_next_dc_f16c32_fp16"
FLOW_KEYS = ("tex_slat_flow_model_512", "tex_slat_flow_model_1024")
DEFAULT_TEX_SAMPLER = {"name": "FlowEulerGuidanceIntervalSampler", "args": {"sigma_min": 1e-5},
                       "params": {"steps": 12, "guidance_strength": 1.0, "guidance_rescale": 0.0,
                                  "guidance_interval": [0.6, 0.9], "rescale_t": 3.0}}
# Constructor arguments an encoder JSON may carry that the class does not take.
IGNORED_ENCODER_ARGS = ("resolution",)


def _read(path: str, name: str) -> Optional[dict]:
    file = os.path.join(path, name)
    if not os.path.isfile(file):
        return None
    config = read_config_json(file)
    if not isinstance(config, dict) or not isinstance(config.get("args"), dict):
        raise ValueError(f"{file}: expected {{'name': ..., 'args': {{...}}}}")
    return config


def read_texturing_config(path: str, config_file: str | None = None) -> tuple[dict, str]:
    """(the `args` texturing uses, the file they came from): ``config_file`` if given, else
    texturing_pipeline.json, else pipeline.json (its texture parts and the encoder's published stem); the
    missing sampler / normalisations of a texturing_pipeline.json filled from pipeline.json beside it."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path} is not a folder: download TRELLIS.2 (microsoft/TRELLIS.2-4B) first")
    names = [config_file] if config_file else [TEXTURING_CONFIG, "pipeline.json"]
    found = next(((n, c) for n in names if (c := _read(path, n)) is not None), None)
    if found is None:
        raise FileNotFoundError(f"{path} has no {' or '.join(names)}: is this a TRELLIS.2 folder?")
    name, config = found
    args = dict(config["args"])
    image = _read(path, "pipeline.json") if name != "pipeline.json" else None
    image_args = image["args"] if image is not None else {}
    models = dict(args.get("models") or {})
    models.setdefault("shape_slat_encoder", ENCODER_STEM)
    for key in ("tex_slat_decoder", *FLOW_KEYS):
        if key not in models and key in (image_args.get("models") or {}):
            models[key] = image_args["models"][key]
    args["models"] = models
    for key in ("tex_slat_sampler", "shape_slat_normalization", "tex_slat_normalization", "image_cond_model"):
        if not isinstance(args.get(key), dict) and isinstance(image_args.get(key), dict):
            args[key] = image_args[key]
    if not isinstance(args.get("tex_slat_sampler"), dict):
        args["tex_slat_sampler"] = DEFAULT_TEX_SAMPLER
    _validate(os.path.join(path, name), args)
    return args, os.path.join(path, name)


def _validate(file: str, args: dict) -> None:
    models = args["models"]
    missing = [k for k in ("tex_slat_decoder",) if k not in models]
    if not any(k in models for k in FLOW_KEYS):
        missing.append(" or ".join(FLOW_KEYS))
    missing += [k for k in ("shape_slat_normalization", "tex_slat_normalization", "image_cond_model")
                if not isinstance(args.get(k), dict)]
    if missing:
        raise ValueError(f"{file} lacks {', '.join(missing)} (and no pipeline.json beside it has them)")
    for key in ("shape_slat_normalization", "tex_slat_normalization"):
        for part in ("mean", "std"):
            values = args[key].get(part)
            if not isinstance(values, list) or len(values) != LATENT_CHANNELS:
                raise ValueError(f"{file}: {key}.{part} must be {LATENT_CHANNELS} numbers")
    if not hasattr(samplers, str(args["tex_slat_sampler"].get("name"))):
        raise ValueError(f"{file}: tex_slat_sampler names an unknown sampler {args['tex_slat_sampler'].get('name')!r}")


def load_shape_encoder(root: str, stem: str, dirs=(), device=None) -> torch.nn.Module:
    """The shape SC-VAE encoder, loaded strictly (every key of the file, none missing); a JSON's ``resolution``
    argument (an older published revision) is dropped."""
    prefix = os.path.join(root, *stem.split("/"))
    if not os.path.isfile(prefix + ".json"):
        return load_model(root, stem, dirs, device)
    config = read_config_json(prefix + ".json")
    extra = [k for k in IGNORED_ENCODER_ARGS if k in config.get("args", {})]
    if not extra:
        return model_from_pretrained(prefix, device=device)
    args = {k: v for k, v in config["args"].items() if k not in extra}
    return load_on({"name": config["name"], "args": args}, prefix + ".safetensors", device)


def load_texturing_parts(path: str, args: dict, dirs=(), device=None,
                         on_model: Optional[Callable[[str, torch.nn.Module], None]] = None) -> dict:
    """The texturing pipeline's constructor arguments (without the conditioner) from ``args``."""
    models = {}
    for key, stem in args["models"].items():
        if key == "shape_slat_encoder":
            models[key] = load_shape_encoder(path, stem, dirs, device)
        elif key in ("tex_slat_decoder", *FLOW_KEYS):
            models[key] = load_model(path, stem, dirs, device)
        else:
            continue                           # networks texturing does not use (the image pipeline's others)
        if on_model is not None:
            on_model(key, models[key])
    entry = args["tex_slat_sampler"]
    sampler = getattr(samplers, entry["name"])(**entry.get("args", {}))
    return dict(models=models, tex_slat_sampler=sampler, tex_slat_sampler_params=dict(entry.get("params", {})),
                shape_slat_normalization=args["shape_slat_normalization"],
                tex_slat_normalization=args["tex_slat_normalization"])
