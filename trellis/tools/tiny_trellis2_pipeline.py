"""Write a random-weight TRELLIS.2 pipeline folder in the official layout: tiny (CPU tests) or full size (GPU
benchmarks: the published shapes, which decide time and memory).

    python -m trellis.tools.tiny_pipeline --trellis2 OUT_DIR [--seed N] [--full-size]

OUT_DIR gets `pipeline.json` (the official content, TRELLIS2_FACTS §2.2), `texturing_pipeline.json` (the texturing
pipeline's, TRELLIS2_TEXTURING_FACTS §2.2) and the nine `ckpts/<stem>.json` +
`.safetensors` under their official stems with the official tensor names, in the files' dtypes (DiTs all bf16,
SC-VAEs all fp16, §17). What the official pipeline.json finds in other repos is written inside OUT_DIR under the
repo's path, which the loader tries first (`<dir>/<path>`), so nothing is downloaded:
    OUT_DIR/microsoft/TRELLIS-image-large/ckpts/ss_dec_conv3d_16l8_fp16.*   the v1 sparse-structure decoder
    OUT_DIR/facebook/dinov3-vitl16-pretrain-lvd1689m/                       DINOv3 (config.json + model.safetensors)

Random weights are steered so that a run stays small and finite: the flows' output heads are scaled down (their
samples stay near the unit-Gaussian noise), the structure decoder's bias is set for a target occupancy of its
64^3 grid, and each C2S level's subdivision logits are near-constant, + for the children it keeps and - for the
rest. Full size keeps 4 of 8 (a sheet) at every level: x256 voxels over four levels, like a surface. Tiny keeps
child 0 at the first three levels and a 2x2 sheet at the last: x4 voxels, and one dual-grid quad per sheet
whose edge flag is set, so the meshes have faces.
"""
from __future__ import annotations

import json
import os

import torch

from .tiny_pipeline import calibrate_occupancy, randomise, save_state

# TRELLIS2_FACTS §2.2 / §2.3.
SHAPE_MEAN = [0.781296, 0.018091, -0.495192, -0.558457, 1.06053, 0.093252, 1.518149, -0.933218, -0.732996, 2.604095,
              -0.118341, -2.143904, 0.495076, -2.179512, -2.130751, -0.996944, 0.261421, -2.217463, 1.260067,
              -0.150213, 3.790713, 1.481266, -1.046058, -1.523667, -0.059621, 2.22078, 1.621212, 0.87723, 0.567247,
              -3.175944, -3.186688, 1.578665]
SHAPE_STD = [5.972266, 4.706852, 5.44501, 5.209927, 5.32022, 4.547237, 5.020802, 5.444004, 5.226681, 5.683095,
             4.831436, 5.286469, 5.652043, 5.367606, 5.525084, 4.730578, 4.805265, 5.124013, 5.530808, 5.619001,
             5.10393, 5.41767, 5.269677, 5.547194, 5.634698, 5.235274, 6.110351, 5.511298, 6.237273, 4.879207,
             5.347008, 5.405691]
TEX_MEAN = [3.501659, 2.212398, 2.226094, 0.251093, -0.026248, -0.687364, 0.439898, -0.928075, 0.029398, -0.339596,
            -0.869527, 1.038479, -0.972385, 0.126042, -1.129303, 0.455149, -1.209521, 2.069067, 0.544735, 2.569128,
            -0.323407, 2.293, -1.925608, -1.217717, 1.213905, 0.971588, -0.023631, 0.10675, 2.021786, 0.250524,
            -0.662387, -0.768862]
TEX_STD = [2.665652, 2.743913, 2.765121, 2.595319, 3.037293, 2.291316, 2.144656, 2.911822, 2.969419, 2.501689,
           2.154811, 3.163343, 2.621215, 2.381943, 3.186697, 3.021588, 2.295916, 3.234985, 3.233086, 2.26014,
           2.874801, 2.810596, 3.29272, 2.674999, 2.680878, 2.372054, 2.451546, 2.353556, 2.995195, 2.379849,
           2.786195, 2.77519]

V1_REPO = "microsoft/TRELLIS-image-large"
SS_DECODER_STEM = "ckpts/ss_dec_conv3d_16l8_fp16"
DINOV3_REPO = "facebook/dinov3-vitl16-pretrain-lvd1689m"


def sampler(strength, rescale, interval, rescale_t) -> dict:
    return {"name": "FlowEulerGuidanceIntervalSampler", "args": {"sigma_min": 1e-5},
            "params": {"steps": 12, "guidance_strength": strength, "guidance_rescale": rescale,
                       "guidance_interval": interval, "rescale_t": rescale_t}}


SAMPLERS = {"sparse_structure_sampler": sampler(7.5, 0.7, [0.6, 1.0], 5.0),
            "shape_slat_sampler": sampler(7.5, 0.5, [0.6, 1.0], 3.0),
            "tex_slat_sampler": sampler(1.0, 0.0, [0.6, 0.9], 3.0)}

CONV_NEXT, C2S, S2C = "SparseConvNeXtBlock3d", "SparseResBlockC2S3d", "SparseResBlockS2C3d"


def configs(full_size: bool) -> dict:
    """pipeline key (or the encoders' stems) -> (ckpt stem, class name, args, file dtype): the published args at
    full size (§2.4), the same features at toy widths otherwise."""
    if full_size:
        dit = dict(model_channels=1536, cond_channels=1024, num_blocks=30, num_heads=12, mlp_ratio=5.3334)
        vae = dict(model_channels=[1024, 512, 256, 128, 64], num_blocks=[4, 16, 8, 4, 0])
        enc = dict(model_channels=[64, 128, 256, 512, 1024], num_blocks=[0, 4, 8, 16, 4])
        ss_dec = dict(num_res_blocks=2, num_res_blocks_middle=2, channels=[512, 128, 32])
    else:
        dit = dict(model_channels=64, cond_channels=32, num_blocks=2, num_heads=2, mlp_ratio=2)
        vae = dict(model_channels=[64, 32, 16, 8, 8], num_blocks=[1, 1, 1, 1, 0])
        enc = dict(model_channels=[8, 16, 32, 64, 128], num_blocks=[0, 1, 1, 1, 1])
        ss_dec = dict(num_res_blocks=1, num_res_blocks_middle=1, channels=[16, 8, 4])
    dit.update(pe_mode="rope", share_mod=True, initialization="scaled", qk_rms_norm=True, qk_rms_norm_cross=True,
               dtype="bfloat16")
    levels = dict(latent_channels=32, block_type=[CONV_NEXT] * 5, block_args=[{}] * 5, use_fp16=True)
    dec = dict(**vae, **levels, up_block_type=[C2S] * 4)
    enc = dict(**enc, **levels, down_block_type=[S2C] * 4)

    def flow(res, cin):
        return dict(resolution=res, in_channels=cin, out_channels=8 if cin == 8 else 32, **dit)

    bf16, fp16 = torch.bfloat16, torch.float16
    return {
        "sparse_structure_flow_model": ("ckpts/ss_flow_img_dit_1_3B_64_bf16", "SparseStructureFlowModel",
                                        flow(16, 8), bf16),
        "sparse_structure_decoder": (f"{V1_REPO}/{SS_DECODER_STEM}", "SparseStructureDecoder",
                                     dict(out_channels=1, latent_channels=8, use_fp16=True, **ss_dec), None),
        "shape_slat_flow_model_512": ("ckpts/slat_flow_img2shape_dit_1_3B_512_bf16", "SLatFlowModel",
                                      flow(32, 32), bf16),
        "shape_slat_flow_model_1024": ("ckpts/slat_flow_img2shape_dit_1_3B_1024_bf16", "SLatFlowModel",
                                       flow(64, 32), bf16),
        "shape_slat_decoder": ("ckpts/shape_dec_next_dc_f16c32_fp16", "FlexiDualGridVaeDecoder",
                               dict(resolution=256, **dec), fp16),
        "tex_slat_flow_model_512": ("ckpts/slat_flow_imgshape2tex_dit_1_3B_512_bf16", "SLatFlowModel",
                                    flow(32, 64), bf16),
        "tex_slat_flow_model_1024": ("ckpts/slat_flow_imgshape2tex_dit_1_3B_1024_bf16", "SLatFlowModel",
                                     flow(64, 64), bf16),
        "tex_slat_decoder": ("ckpts/tex_dec_next_dc_f16c32_fp16", "SparseUnetVaeDecoder",
                             dict(out_channels=6, **dec, pred_subdiv=False), fp16),
        "shape_slat_encoder": ("ckpts/shape_enc_next_dc_f16c32_fp16", "FlexiDualGridVaeEncoder", dict(enc), fp16),
        "tex_slat_encoder": ("ckpts/tex_enc_next_dc_f16c32_fp16", "SparseUnetVaeEncoder",
                             dict(in_channels=6, **enc), fp16),
    }


ENCODERS = ("shape_slat_encoder", "tex_slat_encoder")     # in the repo, not in pipeline.json's models
FLOW_HEAD_SCALE = 1e-2
SUBDIV_WEIGHT_SCALE = 1e-3
TINY_CHILDREN = ((0,), (0,), (0,), (0, 1, 2, 3))       # per C2S level
FULL_CHILDREN = ((0, 1, 2, 3),) * 4


@torch.no_grad()
def steer(key: str, state: dict, children) -> None:
    """The steering of the module docstring, on the state dict by the official tensor names (`children`: the kept
    children k of each C2S level)."""
    if "flow_model" in key:
        for name in ("out_layer.weight", "out_layer.bias"):
            state[name] = state[name] * FLOW_HEAD_SCALE
    for name in [k for k in state if k.endswith(".to_subdiv.weight")]:
        level = int(name.split(".")[1])               # blocks.<level>.<n_level>.to_subdiv.weight
        state[name] = state[name] * SUBDIV_WEIGHT_SCALE
        sign = torch.full((8,), -1.0)
        sign[list(children[level])] = 1.0
        state[name.replace(".weight", ".bias")] = sign


def calibrate_structure_decoder(decoder, gen: torch.Generator, occupancy: float, batch: int, device="cpu") -> None:
    """`calibrate_occupancy` in fp32 (a CPU's fp16 3-D convolutions are very slow), on `device`."""
    dtype = decoder.dtype
    decoder.set_torso_dtype(torch.float32)
    decoder.to(device)
    calibrate_occupancy(decoder, gen, (8, 16, 16, 16), target=occupancy, batch=batch, device=device)
    decoder.to("cpu")
    decoder.set_torso_dtype(dtype)


def file_tensor(t: torch.Tensor, dtype) -> torch.Tensor:
    """`t` in the file's dtype (None: as built), no value turned to zero by the cast."""
    out = t.detach().to(dtype) if dtype is not None else t.detach()
    if out.is_floating_point() and t.is_floating_point():
        out[(out == 0) & (t != 0)] = torch.finfo(out.dtype).tiny
    return out.contiguous()


def write_dinov3(folder: str, gen: torch.Generator, full_size: bool) -> str:
    """A random-weight DINOv3ViTModel (config.json + model.safetensors): the published layout, tiny widths unless
    full size."""
    from transformers import DINOv3ViTModel

    from ..models.dinov3 import dinov3_config

    small = {} if full_size else dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                      intermediate_size=64)
    model = DINOv3ViTModel(dinov3_config(**small))
    randomise(model, gen)
    model.save_pretrained(folder)
    return folder


def write_trellis2_pipeline(out_dir: str, seed: int = 0, full_size: bool = False, occupancy: float | None = None,
                            children=None) -> str:
    """Write the folder (see the module docstring); returns `out_dir`. `occupancy` (fraction of the 64^3 grid) and
    `children` (per C2S level) default to 0.002 / TINY_CHILDREN tiny and 0.02 / FULL_CHILDREN at full size."""
    from ..models import from_config

    occupancy = (0.02 if full_size else 0.002) if occupancy is None else occupancy
    children = (FULL_CHILDREN if full_size else TINY_CHILDREN) if children is None else children
    gen = torch.Generator().manual_seed(seed)
    os.makedirs(os.path.join(out_dir, "ckpts"), exist_ok=True)
    models = {}
    for key, (stem, name, args, dtype) in configs(full_size).items():
        config = {"name": name, "args": args}
        model = from_config(config, init=False)      # every parameter is drawn next
        randomise(model, gen)
        if key == "sparse_structure_decoder":
            # Full size on a GPU when there is one (minutes of CPU otherwise); the tiny one on the CPU everywhere.
            device = "cuda" if full_size and torch.cuda.is_available() else "cpu"
            calibrate_structure_decoder(model, gen, occupancy, batch=1 if full_size else 2, device=device)
        state = {k: v for k, v in model.state_dict().items() if k not in getattr(model, "computed_buffers", ())}
        steer(key, state, children)
        prefix = os.path.join(out_dir, *stem.split("/"))
        os.makedirs(os.path.dirname(prefix), exist_ok=True)
        save_state({k: file_tensor(v, dtype) for k, v in state.items()}, config, prefix)
        del model, state
        if key not in ENCODERS:
            models[key] = stem
    write_dinov3(os.path.join(out_dir, *DINOV3_REPO.split("/")), gen, full_size)
    pipeline = {"name": "Trellis2ImageTo3DPipeline", "args": {
        "models": models,
        **SAMPLERS,
        "shape_slat_normalization": {"mean": SHAPE_MEAN, "std": SHAPE_STD},
        "tex_slat_normalization": {"mean": TEX_MEAN, "std": TEX_STD},
        "image_cond_model": {"name": "DinoV3FeatureExtractor", "args": {"model_name": DINOV3_REPO}},
        "rembg_model": {"name": "BiRefNet", "args": {"model_name": "briaai/RMBG-2.0"}},
        "default_pipeline_type": "1024_cascade",
    }}
    with open(os.path.join(out_dir, "pipeline.json"), "w", encoding="utf-8") as f:
        json.dump(pipeline, f, indent=4)
    write_texturing_config(out_dir, pipeline["args"])
    return out_dir


def write_texturing_config(out_dir: str, image_args: dict) -> str:
    """texturing_pipeline.json beside pipeline.json (TRELLIS2_TEXTURING_FACTS §2.2): the shape encoder, the
    texture decoder and flows, the texture sampler, both normalisations, the conditioner."""
    models = {key: image_args["models"][key] for key in
              ("tex_slat_decoder", "tex_slat_flow_model_512", "tex_slat_flow_model_1024")}
    config = {"name": "Trellis2TexturingPipeline", "args": {
        "models": {"shape_slat_encoder": configs(False)["shape_slat_encoder"][0], **models},
        **{key: image_args[key] for key in ("tex_slat_sampler", "shape_slat_normalization",
                                           "tex_slat_normalization", "image_cond_model", "rembg_model")},
    }}
    path = os.path.join(out_dir, "texturing_pipeline.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(config, f, indent=4)
    return path
