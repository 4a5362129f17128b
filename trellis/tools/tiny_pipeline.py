"""Write a tiny random-weight pipeline folder in the official layout.

    python -m trellis.tools.tiny_pipeline OUT_DIR [--seed N]
    python -m trellis.tools.tiny_pipeline --text OUT_DIR [--seed N]     (tiny_text_pipeline.py)
    python -m trellis.tools.tiny_pipeline --trellis2 OUT_DIR [--seed N] [--full-size]   (tiny_trellis2_pipeline.py)

OUT_DIR gets `pipeline.json`, `ckpts/<stem>.json` ({"name", "args"}) and `ckpts/<stem>.safetensors` for
the six networks, plus the image conditioner (a small DINOv2) as `ckpts/image_cond_dinov2_tiny.*`.
Every architecture feature of the real checkpoints is exercised (fp16 torsos, qk RMS norm, patch-2
down/up-sampling, shifted windows, the mesh decoder's subdivisions and colour head) at sizes that
run the whole pipeline on a CPU in seconds. Weights are random and none is zero; tests and the
offline demo use this instead of downloading anything.
"""
from __future__ import annotations

import argparse
import json
import math
import os

import torch

SLAT_MEAN = [-2.1687545776367188, -0.004347046371549368, -0.13352349400520325, -0.08418072760105133,
             -0.5271206498146057, 0.7238689064979553, -1.1414450407028198, 1.2039363384246826]
SLAT_STD = [2.377650737762451, 2.386378288269043, 2.124418020248413, 2.1748552322387695,
            2.663944721221924, 2.371192216873169, 2.6217446327209473, 2.684523105621338]

COND_CHANNELS = 32
DECODER_TRUNK = dict(resolution=16, model_channels=64, latent_channels=8, num_blocks=2, num_heads=4, mlp_ratio=2,
                     attn_mode="swin", window_size=8, use_fp16=True)

CONFIGS = {
    "sparse_structure_flow_model": ("ss_flow_img_dit_tiny_fp16", "SparseStructureFlowModel", dict(
        resolution=8, in_channels=8, out_channels=8, model_channels=64, cond_channels=COND_CHANNELS, num_blocks=2,
        num_heads=4, mlp_ratio=2, patch_size=1, pe_mode="ape", qk_rms_norm=True, use_fp16=True)),
    "sparse_structure_decoder": ("ss_dec_conv3d_tiny_fp16", "SparseStructureDecoder", dict(
        out_channels=1, latent_channels=8, num_res_blocks=1, num_res_blocks_middle=1, channels=[32, 16],
        use_fp16=True)),
    "slat_flow_model": ("slat_flow_img_dit_tiny_fp16", "SLatFlowModel", dict(
        resolution=16, in_channels=8, out_channels=8, model_channels=64, cond_channels=COND_CHANNELS, num_blocks=2,
        num_heads=4, mlp_ratio=2, patch_size=2, num_io_res_blocks=2, io_block_channels=[32], pe_mode="ape",
        qk_rms_norm=True, use_fp16=True)),
    "slat_decoder_gs": ("slat_dec_gs_swin8_tiny_fp16", "SLatGaussianDecoder", dict(
        **DECODER_TRUNK, representation_config={
            "lr": {"_xyz": 1.0, "_features_dc": 1.0, "_opacity": 1.0, "_scaling": 1.0, "_rotation": 0.1},
            "perturb_offset": True, "voxel_size": 1.5, "num_gaussians": 8, "2d_filter_kernel_size": 0.1,
            "3d_filter_kernel_size": 9e-4, "scaling_bias": 4e-3, "opacity_bias": 0.1,
            "scaling_activation": "softplus"})),
    "slat_decoder_rf": ("slat_dec_rf_swin8_tiny_fp16", "SLatRadianceFieldDecoder", dict(
        **DECODER_TRUNK, representation_config={"rank": 4, "dim": 4})),
    # GroupNorm(32) after the C/4 and C/8 channel cuts needs C >= 256.
    "slat_decoder_mesh": ("slat_dec_mesh_swin8_tiny_fp16", "SLatMeshDecoder", dict(
        **{**DECODER_TRUNK, "model_channels": 256, "mlp_ratio": 1}, representation_config={"use_color": True})),
}

IMAGE_COND_STEM = "image_cond_dinov2_tiny"
IMAGE_COND_ARGS = dict(img_size=518, patch_size=14, embed_dim=COND_CHANNELS, depth=2, num_heads=2, mlp_ratio=2,
                       init_values=1.0, num_register_tokens=4, norm_eps=1e-6)

SAMPLER = {"name": "FlowEulerGuidanceIntervalSampler", "args": {"sigma_min": 1e-5},
           "params": {"steps": 25, "cfg_strength": 5.0, "cfg_interval": [0.5, 1.0], "rescale_t": 3.0}}

# Fraction of the occupancy grid the stage-1 decoder marks occupied for unit-Gaussian latents: keeps
# the structure (and so the 4x-subdivided mesh stage) small enough for CPU tests.
TARGET_OCCUPANCY = 0.08


@torch.no_grad()
def randomise(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Non-zero random values with a sensible scale for every parameter (buffers are left as built)."""
    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "bias":
            val = 0.05 * torch.randn(p.shape, generator=gen)
        elif ".ls1." in name or ".ls2." in name:       # DINOv2 layer scales are small in practice
            val = 0.1 + 0.01 * torch.randn(p.shape, generator=gen)
        elif leaf == "gamma" or p.ndim == 1:           # norm gains, RMS gains
            val = 1.0 + 0.1 * torch.randn(p.shape, generator=gen)
        elif name.endswith(("token", "tokens", "pos_embed")):
            val = 0.02 * torch.randn(p.shape, generator=gen)
        else:                                          # Linear [out, in], convs [out, ...fan-in...]
            val = torch.randn(p.shape, generator=gen) / math.sqrt(p[0].numel())
        val = val.to(p.dtype)
        val[val == 0] = 1e-3                           # also catches fp16 underflow
        p.copy_(val)


@torch.no_grad()
def calibrate_occupancy(decoder, gen: torch.Generator, latent_shape, target: float = TARGET_OCCUPANCY,
                        batch: int = 4, device="cpu") -> None:
    """Shift the decoder's output bias so that about `target` of the voxels come out occupied (latents drawn on the
    CPU, decoded on `device`, where the decoder is)."""
    logits = decoder(torch.randn(batch, *latent_shape, generator=gen).to(device)).flatten()
    decoder.out_layer[2].bias -= torch.quantile(logits.float(), 1 - target)


def save_state(state: dict, config: dict, prefix: str) -> None:
    """`prefix`.json (the ckpt JSON {"name", "args"}) and `prefix`.safetensors (`state` as given)."""
    from safetensors.torch import save_file

    with open(prefix + ".json", "w", encoding="utf-8") as f:
        json.dump(config, f, indent=4)
    save_file({k: v.detach().contiguous() for k, v in state.items()}, prefix + ".safetensors")


def save_model(model, config: dict, prefix: str) -> None:
    save_state(model.state_dict(), config, prefix)


def write_tiny_pipeline(out_dir: str, seed: int = 0) -> str:
    from ..models import from_config
    from ..models.image_conditioner import ImageConditioner, save_image_conditioner

    gen = torch.Generator().manual_seed(seed)
    os.makedirs(os.path.join(out_dir, "ckpts"), exist_ok=True)
    models = {}
    for key, (stem, name, args) in CONFIGS.items():
        config = {"name": name, "args": args}
        model = from_config(config)
        randomise(model, gen)
        if key == "sparse_structure_decoder":
            flow = CONFIGS["sparse_structure_flow_model"][2]
            calibrate_occupancy(model, gen, (args["latent_channels"], *[flow["resolution"]] * 3))
        save_model(model, config, os.path.join(out_dir, "ckpts", stem))
        models[key] = f"ckpts/{stem}"

    cond = ImageConditioner.from_config(IMAGE_COND_ARGS)
    randomise(cond.vit, gen)
    save_image_conditioner(cond, os.path.join(out_dir, "ckpts", IMAGE_COND_STEM))

    pipeline = {"name": "TrellisImageTo3DPipeline", "args": {
        "models": models,
        "sparse_structure_sampler": SAMPLER,
        "slat_sampler": SAMPLER,
        "slat_normalization": {"mean": SLAT_MEAN, "std": SLAT_STD},
        "image_cond_model": f"ckpts/{IMAGE_COND_STEM}",
    }}
    with open(os.path.join(out_dir, "pipeline.json"), "w", encoding="utf-8") as f:
        json.dump(pipeline, f, indent=4)
    return out_dir


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trellis.tools.tiny_pipeline", description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", help="folder to write (created if missing)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")
    parser.add_argument("--text", action="store_true",
                        help="write a tiny TEXT pipeline (with the image-large decoders and a tiny CLIP beside it)")
    parser.add_argument("--trellis2", action="store_true",
                        help="write a TRELLIS.2 pipeline (its v1 structure decoder and DINOv3 inside the folder)")
    parser.add_argument("--full-size", action="store_true",
                        help="with --trellis2: the published sizes (about 17 GB of random weights) for GPU benchmarks")
    args = parser.parse_args(argv)
    if args.full_size and not args.trellis2:
        parser.error("--full-size applies to --trellis2 only")
    if args.trellis2:
        from .tiny_trellis2_pipeline import write_trellis2_pipeline

        size = "full-size" if args.full_size else "tiny"
        print(f"{size} TRELLIS.2 pipeline written to "
              f"{write_trellis2_pipeline(args.out_dir, args.seed, full_size=args.full_size)}")
        return 0
    if args.text:
        from .tiny_text_pipeline import write_tiny_text_pipeline

        print(f"tiny text pipeline written to {write_tiny_text_pipeline(args.out_dir, args.seed)}")
        return 0
    write_tiny_pipeline(args.out_dir, args.seed)
    print(f"tiny pipeline written to {args.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
