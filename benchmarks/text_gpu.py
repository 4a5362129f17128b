"""Prompt -> Gaussians + mesh (+ GLB) with the full-size TRELLIS-text-xlarge pipeline on a GPU, and the 4 GiB proof.

    python benchmarks/text_gpu.py [--presets resident,low-vram] [--runs 2] [--out text_gpu.json] [--md FILE]
    python benchmarks/text_gpu.py --limits 4            # low-VRAM job in a fresh process per cap (GiB list)
    python benchmarks/text_gpu.py --build-only          # just write (or check) the cached pipeline folders
    python benchmarks/text_gpu.py --tiny --device cpu   # the same code path on the tiny text pipeline (CPU test)

The pipeline is written once, offline, in the published layout, under $TRELLIS_BENCH_CACHE (default
/tmp/trellis_text_bench) and reused by later runs:

    <cache>/TRELLIS-text-xlarge/      pipeline.json + ckpts/ss_flow_txt_dit_XL_16l8_fp16.{json,safetensors},
                                      ckpts/slat_flow_txt_dit_XL_64l8p2_fp16.{json,safetensors}
    <cache>/TRELLIS-image-large/      ckpts/ the four decoders the text pipeline.json names as
                                      "JeffreyXiang/TRELLIS-image-large/ckpts/<stem>"
    <cache>/clip-vit-large-patch14/   the CLIP ViT-L/14 text tower at full size (config.json + model.safetensors),
                                      and a BPE tokenizer trained locally (its merges are not CLIP's: this is a
                                      speed benchmark; the tower's vocabulary is CLIP's 49 408 rows)

Random weights, real configs: the two XL flows from tests/data/state_dict_text (built on the meta device,
materialised straight in their checkpoint dtypes, checked key for key against the manifests), the
decoders from tests/data/state_dict (as the image benchmarks), CLIP's published text config. Loaded by
`TrellisTextTo3DPipeline.from_pretrained` exactly as the app loads a downloaded model.

The job is `pipeline.run(prompt)` (formats gaussian + mesh) with the app's sampler settings (the preset's
steps and guidance, pipeline.json's interval and rescale), then `to_glb` at the preset's export settings.
Random weights give an arbitrary stage-1 result, so the sparse-structure decoder's logits are shifted by a
forward hook to mark `--voxels` voxels occupied (20 000): by default the image benchmarks' fixed structure, a
spherical shell (a surface, ~5 k tokens after the flow's 2x downsampling, as a trained stage 1 gives);
`--structure scattered` the decoder's top-scoring voxels, scattered over the grid (nearly one token per voxel:
attention 16x the cost; what this benchmark measured before the option existed); 0 = leave them as they come. Per stage: seconds and peak allocated / reserved GiB (the
pipeline's own StageTracker; the stage-1 step is split into the flow and the decoder by hooks on the
decoder). One warm-up run per preset, then `--runs` timed runs (medians in the table), then one
`run_variant` (a new look from the prompt on a trimesh capsule, voxelised at 64^3) unless --no-variant.

Presets: "resident" = fp16 torsos, every model on the GPU, batched CFG (what `pick_preset` chooses on a
big GPU); "low-vram" = the app's low-vram preset (fp16, each model on the GPU only while it runs, from
pinned host memory), CFG resolved as e2e_gpu.py does (sequential below 6 GiB free). Steps, guidance and
export settings are the app's balanced ones (the low-vram preset only changes the memory policy).

``--limit-gib X`` calls `trellis.pipelines.memory.set_memory_limit` (torch's per-process memory fraction)
before anything is allocated; ``--limits`` runs the low-VRAM job in one fresh process per cap and reports
which completed (generation, and the GLB export separately) and their times.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

GiB = 2 ** 30
BUILD_VERSION = 1
TEXT_DIR, IMAGE_DIR, CLIP_DIR = "TRELLIS-text-xlarge", "TRELLIS-image-large", "clip-vit-large-patch14"
IMAGE_REPO, CLIP_REPO = "JeffreyXiang/TRELLIS-image-large", "openai/clip-vit-large-patch14"
TEXT_MANIFESTS = ROOT / "tests" / "data" / "state_dict_text"
TEXT_FLOWS = {"sparse_structure_flow_model": "text_ss_flow_txt_dit_XL_16l8_fp16.json",
              "slat_flow_model": "text_slat_flow_txt_dit_XL_64l8p2_fp16.json"}
DECODERS = ("sparse_structure_decoder", "slat_decoder_gs", "slat_decoder_rf", "slat_decoder_mesh")
# openai/clip-vit-large-patch14's text_config (text facts §3: 12 layers, width 768, 77 tokens).
CLIP_L14_TEXT = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                     num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5)
PROMPT = "a red wooden chair with four legs and a high back"
STAGE_LABELS = {"condition": "text encoding (CLIP)", "stage1_flow": "stage-1 flow",
                "decode_ss": "sparse-structure decoder", "slat": "stage-2 flow",
                "decode_gaussian": "Gaussian decoder", "decode_mesh": "mesh decoder", "to_glb": "to_glb (GLB export)",
                "voxelize": "voxelise the mesh (64³)"}


def default_cache() -> Path:
    return Path(os.environ.get("TRELLIS_BENCH_CACHE") or Path(tempfile.gettempdir()) / "trellis_text_bench")


# ---------------------------------------------------------------------------------------------- building
def build_on_meta(config: dict, gen: torch.Generator):
    """A flow built on the meta device, materialised on the CPU in its own dtypes (fp16 torso), random
    weights; buffers (positional tables) copied from a one-block twin built normally."""
    from trellis.models import from_config
    from trellis.tools.tiny_pipeline import randomise

    with torch.device("meta"):
        model = from_config(config)
    model = model.to_empty(device="cpu")
    twin = dict(from_config({**config, "args": {**config["args"], "num_blocks": 1}}).named_buffers())
    with torch.no_grad():
        for name, buf in model.named_buffers():
            src = twin.get(name)
            if src is None or src.shape != buf.shape:
                raise RuntimeError(f"cannot materialise buffer {name} of {config['name']}")
            buf.copy_(src)
    randomise(model, gen)
    return model


def check_manifest(model, manifest: dict) -> None:
    """Keys, shapes and dtypes of the state dict as the reference's (the manifest's tensor list)."""
    state = model.state_dict()
    want = {t["key"]: (tuple(t["shape"]), t["dtype"]) for t in manifest["tensors"]}
    have = {k: (tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in state.items()}
    if want != have:
        diff = sorted(set(want.items()) ^ set(have.items()))[:6]
        raise RuntimeError(f"{manifest['checkpoint_stem']}: state dict differs from its manifest: {diff}")


def write_full_clip(folder: Path, gen: torch.Generator) -> None:
    """The tokenizer files as the tiny pipeline makes them (trained here), then CLIP-L/14's text tower."""
    from safetensors.torch import save_file

    from trellis.models.clip_text import PREFIX, ClipTextTransformer
    from trellis.tools.tiny_pipeline import randomise
    from trellis.tools.tiny_text_pipeline import write_tiny_clip

    write_tiny_clip(str(folder), gen)
    config = json.loads((folder / "config.json").read_text())
    ids = {k: config["text_config"][k] for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    tower = ClipTextTransformer(**CLIP_L14_TEXT)
    randomise(tower, gen)
    config = {"model_type": "clip", "architectures": ["CLIPModel"], "projection_dim": 768,
              "text_config": {**CLIP_L14_TEXT, **ids}}
    state = {PREFIX + k: v.contiguous() for k, v in tower.state_dict().items()}
    state["text_projection.weight"] = torch.randn(768, 768, generator=gen)   # beside the tower, as published
    save_file(state, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(config, indent=2))


def build_full(cache: Path, rebuild: bool = False) -> Path:
    """Write the three folders (once); returns the text pipeline's folder."""
    from networks_gpu import MANIFESTS
    from trellis.models import from_config
    from trellis.tools.tiny_pipeline import calibrate_occupancy, randomise, save_model

    text_dir, image_dir, clip_dir = cache / TEXT_DIR, cache / IMAGE_DIR, cache / CLIP_DIR
    marker = cache / "build.json"
    if not rebuild and marker.exists() and json.loads(marker.read_text()).get("version") == BUILD_VERSION:
        print(f"using the cached pipeline in {cache}", flush=True)
        return text_dir
    t0 = time.perf_counter()
    marker.unlink(missing_ok=True)
    for d in (text_dir / "ckpts", image_dir / "ckpts", clip_dir):
        d.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    image_pipeline = json.loads(json.loads((MANIFESTS / "_hf_repo_files.json").read_text())["files"]
                                ["pipeline.json"]["text"])
    models = {}
    for key in DECODERS:
        config = json.loads(json.loads((MANIFESTS / f"{key}.json").read_text())["ckpt_json_text"])
        model = from_config(config)
        randomise(model, gen)
        if key == "sparse_structure_decoder":       # about 8 % of the grid for unit-Gaussian latents
            model.set_torso_dtype(torch.float32)     # fp16 3-D convolutions crawl on a CPU; same weights
            calibrate_occupancy(model, gen, (config["args"]["latent_channels"], 16, 16, 16))
            model.set_torso_dtype(torch.float16 if config["args"].get("use_fp16") else torch.float32)
        stem = image_pipeline["args"]["models"][key]
        save_model(model, config, str(image_dir / stem))
        models[key] = f"{IMAGE_REPO}/{stem}"
        del model
        print(f"  wrote {IMAGE_DIR}/{stem}", flush=True)
    for key, name in TEXT_FLOWS.items():
        manifest = json.loads((TEXT_MANIFESTS / name).read_text())
        config = json.loads(manifest["ckpt_json_text_assumed"])
        model = build_on_meta(config, gen)
        check_manifest(model, manifest)
        save_model(model, config, str(text_dir / manifest["checkpoint_stem"]))
        models[key] = manifest["checkpoint_stem"]
        del model
        print(f"  wrote {TEXT_DIR}/{manifest['checkpoint_stem']} ({manifest['total_numel'] / 1e6:.1f} M parameters)",
              flush=True)
    write_full_clip(clip_dir, gen)
    print(f"  wrote {CLIP_DIR}", flush=True)
    samplers = {k: image_pipeline["args"][k] for k in ("sparse_structure_sampler", "slat_sampler")}
    for s in samplers.values():
        s["params"] = {**s["params"], "cfg_strength": 7.5}
    pipeline = {"name": "TrellisTextTo3DPipeline", "args": {
        "models": models, **samplers, "slat_normalization": image_pipeline["args"]["slat_normalization"],
        "text_cond_model": CLIP_REPO}}
    (text_dir / "pipeline.json").write_text(json.dumps(pipeline, indent=4))
    marker.write_text(json.dumps({"version": BUILD_VERSION, "seconds": round(time.perf_counter() - t0, 1)}))
    print(f"built the full-size text pipeline in {time.perf_counter() - t0:.0f} s", flush=True)
    return text_dir


def build_tiny(cache: Path, rebuild: bool = False) -> Path:
    """The tiny text pipeline (python -m trellis.tools.tiny_pipeline --text), cached the same way."""
    from trellis.tools.tiny_text_pipeline import TEXT_DIR as TINY_TEXT_DIR, write_tiny_text_pipeline

    out = cache / "tiny"
    marker = out / "build.json"
    if not rebuild and marker.exists():
        return out / TINY_TEXT_DIR
    text_dir = write_tiny_text_pipeline(str(out))
    marker.write_text(json.dumps({"version": BUILD_VERSION}))
    return Path(text_dir)


# ---------------------------------------------------------------------------------------------- measuring
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peaks(device: torch.device):
    if device.type != "cuda":
        return None, None
    return torch.cuda.max_memory_allocated(device), torch.cuda.max_memory_reserved(device)


def reset_peaks(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def row(stage: str, seconds: float, alloc, reserved) -> dict:
    gib = (lambda b: None if b is None else round(b / GiB, 3))
    return {"stage": stage, "seconds": round(seconds, 3), "peak_allocated_GiB": gib(alloc),
            "peak_reserved_GiB": gib(reserved)}


class DecoderProbe:
    """Forward hooks on the sparse-structure decoder: its own seconds and peaks (the flow's peak up to it
    is kept aside), and optionally exactly `keep` occupied voxels per sample (None: 8 % of the grid)."""

    def __init__(self, module, device: torch.device, keep: int | None, structure: str = "scattered"):
        self.device, self.keep, self.structure = device, keep, structure
        self.flow_peaks = self.dec_peaks = (None, None)
        self.seconds = 0.0
        self.voxels = None
        module.register_forward_pre_hook(self.pre)
        module.register_forward_hook(self.post)

    def pre(self, module, inputs):
        sync(self.device)
        self.flow_peaks = peaks(self.device)
        reset_peaks(self.device)
        self.t0 = time.perf_counter()

    def post(self, module, inputs, out):
        if self.keep and self.structure == "shell":
            # The image benchmarks' fixed surface (networks_gpu.shell_structure): occupied where the shell is.
            from networks_gpu import shell_structure

            xyz = shell_structure(self.keep, res=out.shape[-1], device=out.device).coords[:, 1:].long()
            occupied = torch.zeros(out.shape[-3:], dtype=torch.bool, device=out.device)
            occupied[xyz[:, 0], xyz[:, 1], xyz[:, 2]] = True
            out = torch.where(occupied, 1.0, -1.0).expand_as(out).to(out.dtype)
        elif self.keep != 0:
            flat = out.flatten(1).float()
            k = min(self.keep if self.keep is not None else int(0.08 * flat.shape[1]), flat.shape[1] - 1)
            top = flat.topk(k + 1, dim=1).values
            thr = (top[:, -2] + top[:, -1]) / 2
            out = out.float() - thr.view(-1, *[1] * (out.dim() - 1))
        self.voxels = int((out > 0).sum())
        sync(self.device)
        self.seconds = time.perf_counter() - self.t0
        self.dec_peaks = peaks(self.device)
        return out


def resolve_preset(name: str, device: torch.device, tiny: bool) -> dict:
    """Memory policy + sampler + export settings of a preset, resolved as e2e_gpu.py does."""
    from e2e_gpu import preset_settings
    from trellis.pipelines.memory import pick_preset

    cfg = preset_settings("balanced" if name == "resident" else name)
    pol = pick_preset(device)
    if name == "resident":
        precision, offload, cfg_batch = ("fp16" if device.type == "cuda" else "fp32"), "none", True
    else:
        precision = pol.precision if cfg["precision"] == "auto" else cfg["precision"]
        offload = pol.offload if cfg["offload"] == "auto" else cfg["offload"]
        cfg_batch = pol.cfg_batch if offload == pol.offload else offload == "none"
    if tiny:        # a CPU-sized export: the code path, not the numbers
        cfg.update(texture_size=256, nviews=8, render_resolution=256)
    return {"precision": precision, "offload": offload, "cfg_batch": cfg_batch,
            **{k: v for k, v in cfg.items() if k not in ("precision", "offload")}}


def stage_rows(stats: list, probe: DecoderProbe | None) -> list:
    rows = []
    for s in stats:
        if s["stage"] == "sparse_structure" and probe is not None:
            rows.append(row("stage1_flow", s["seconds"] - probe.seconds, *probe.flow_peaks))
            rows.append(row("decode_ss", probe.seconds, *probe.dec_peaks))
        else:
            rows.append(row(s["stage"], s["seconds"], s["peak_allocated_bytes"], s["peak_reserved_bytes"]))
    return rows


def one_job(pipe, probe, cfg: dict, args, device) -> dict:
    """prompt -> Gaussians + mesh, then the GLB; per-stage rows."""
    from trellis.utils import postprocessing_utils

    ss = {"steps": cfg["ss_steps"], "cfg_strength": cfg["ss_cfg"]}
    slat = {"steps": cfg["slat_steps"], "cfg_strength": cfg["slat_cfg"]}
    sync(device)
    t0 = time.perf_counter()
    out = pipe.run(args.prompt, seed=args.seed, sparse_structure_sampler_params=ss, slat_sampler_params=slat,
                   formats=["gaussian", "mesh"])
    sync(device)
    gen_s = time.perf_counter() - t0
    rows = stage_rows(pipe.last_stats, probe)
    result = {"generate_seconds": round(gen_s, 3), "voxels": probe.voxels, "stages": rows,
              "mesh_faces": int(out["mesh"][0].faces.shape[0]), "gaussians": int(out["gaussian"][0].get_xyz.shape[0])}
    if not args.no_glb:
        if device.type == "cuda":
            torch.cuda.empty_cache()
        reset_peaks(device)
        t1 = time.perf_counter()
        try:
            glb = postprocessing_utils.to_glb(
                out["gaussian"][0], out["mesh"][0], simplify=cfg["simplify"], fill_holes=cfg["fill_holes"],
                texture_size=cfg["texture_size"], bake_mode=cfg["bake_mode"], nviews=cfg["nviews"],
                render_resolution=cfg["render_resolution"], verbose=False)
            sync(device)
            rows.append(row("to_glb", time.perf_counter() - t1, *peaks(device)))
            info = getattr(glb, "export_info", {}) or {}
            result.update(glb_faces=info.get("faces"), to_glb_parts=info.get("seconds"))
        except torch.OutOfMemoryError as err:
            result["glb_error"] = f"out of memory: {str(err).splitlines()[0][:200]}"
    del out
    result["total_seconds"] = round(sum(r["seconds"] for r in rows), 3)
    mem = [r["peak_allocated_GiB"] for r in rows if r["peak_allocated_GiB"] is not None]
    res = [r["peak_reserved_GiB"] for r in rows if r["peak_reserved_GiB"] is not None]
    result["peak_allocated_GiB"] = max(mem) if mem else None
    result["peak_reserved_GiB"] = max(res) if res else None
    return result


def variant_job(pipe, cfg: dict, args, device) -> dict:
    """A new look from the prompt for a capsule (stage 2 + decoders on its 64^3 surface voxels)."""
    import trimesh

    mesh = trimesh.creation.capsule(height=1.0, radius=0.35, count=[48, 48])
    t0 = time.perf_counter()
    voxels = pipe.voxelize(mesh)
    vox_s = time.perf_counter() - t0
    slat = {"steps": cfg["slat_steps"], "cfg_strength": cfg["slat_cfg"]}
    sync(device)
    t0 = time.perf_counter()
    out = pipe.run_variant(mesh, args.prompt, seed=args.seed, slat_sampler_params=slat, formats=["gaussian", "mesh"])
    sync(device)
    total = time.perf_counter() - t0
    rows = [row("voxelize", vox_s, None, None)] + stage_rows(pipe.last_stats, None)
    del out
    mem = [r["peak_allocated_GiB"] for r in rows if r["peak_allocated_GiB"] is not None]
    return {"voxels": int(voxels.shape[0]), "run_variant_seconds": round(total, 3), "stages": rows,
            "peak_allocated_GiB": max(mem) if mem else None}


def summarise(runs: list) -> list:
    """Per stage: the median seconds over the runs, the largest peaks."""
    out = []
    for i, r in enumerate(runs[0]["stages"]):
        col = [run["stages"][i] for run in runs if i < len(run["stages"])]
        mx = (lambda key: None if col[0][key] is None else max(c[key] for c in col))
        out.append({"stage": r["stage"], "seconds": round(statistics.median(c["seconds"] for c in col), 3),
                    "peak_allocated_GiB": mx("peak_allocated_GiB"), "peak_reserved_GiB": mx("peak_reserved_GiB")})
    return out


def load_pipeline(args, device: torch.device):
    from trellis.pipelines import TrellisTextTo3DPipeline

    cache = Path(args.cache)
    text_dir = build_tiny(cache, args.rebuild) if args.tiny else build_full(cache, args.rebuild)
    t0 = time.perf_counter()
    pipe = TrellisTextTo3DPipeline.from_pretrained(str(text_dir), search_dirs=[str(text_dir.parent)])
    load_s = time.perf_counter() - t0
    if device.type == "cuda":       # offloaded first, so a capped GPU never holds everything at once
        pipe.set_memory_policy(precision="fp16", offload="model", cfg_batch=False, cuda_graphs=False)
    t0 = time.perf_counter()
    pipe.to(device)
    return pipe, {"load_seconds": round(load_s, 2), "to_device_seconds": round(time.perf_counter() - t0, 2),
                  "folder": str(text_dir)}


def run_presets(args) -> dict:
    device = torch.device(args.device)
    if args.limit_gib:
        if device.type == "cuda":
            from trellis.pipelines.memory import free_device_memory, set_memory_limit

            set_memory_limit(device, int(args.limit_gib * GiB))
            print(f"cap {args.limit_gib} GiB: free_device_memory sees {free_device_memory(device) / GiB:.2f} GiB",
                  flush=True)
        else:
            print(f"--limit-gib {args.limit_gib} ignored on {device} (no CUDA memory to cap)", flush=True)
    pipe, load = load_pipeline(args, device)
    keep = args.voxels if args.voxels is not None else (None if args.tiny else 20000)
    probe = DecoderProbe(pipe.models["sparse_structure_decoder"], device, keep, args.structure)
    info = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch": torch.__version__, "commit": args.commit, "date": time.strftime("%Y-%m-%d"),
            "pipeline": "tiny text pipeline" if args.tiny else "TRELLIS-text-xlarge (full size, random weights)",
            "prompt": args.prompt, "target_voxels": keep if keep is not None else "8 % of the grid", "structure": args.structure, "limit_gib": args.limit_gib, **load, "presets": {}}
    for name in args.presets.split(","):
        cfg = resolve_preset(name, device, args.tiny)
        if args.steps:
            cfg.update(ss_steps=args.steps, slat_steps=args.steps)
        pipe.set_memory_policy(precision=cfg["precision"], offload=cfg["offload"], cfg_batch=cfg["cfg_batch"],
                               cuda_graphs=False)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        t0 = time.perf_counter()
        one_job(pipe, probe, cfg, args, device)                     # warm-up
        print(f"{name}: warm-up {time.perf_counter() - t0:.1f} s", flush=True)
        runs = []
        for _ in range(args.runs):
            if device.type == "cuda":
                torch.cuda.empty_cache()
            runs.append(one_job(pipe, probe, cfg, args, device))
            print(json.dumps({name: runs[-1]}), flush=True)
        entry = {"resolved": cfg, "runs": runs, "median_stages": summarise(runs),
                 "total_seconds_median": round(statistics.median(r["total_seconds"] for r in runs), 3),
                 "generate_seconds_median": round(statistics.median(r["generate_seconds"] for r in runs), 3),
                 "peak_allocated_GiB": runs[0]["peak_allocated_GiB"] and max(r["peak_allocated_GiB"] for r in runs),
                 "peak_reserved_GiB": runs[0]["peak_reserved_GiB"] and max(r["peak_reserved_GiB"] for r in runs)}
        if not args.no_variant:
            if device.type == "cuda":
                torch.cuda.empty_cache()
            entry["variant"] = variant_job(pipe, cfg, args, device)
            print(json.dumps({f"{name} run_variant": entry["variant"]}), flush=True)
        info["presets"][name] = entry
    return info


def proof(args) -> dict:
    """The low-VRAM job in a fresh process per cap."""
    results = []
    for limit in [float(x) for x in args.limits.split(",")]:
        out = Path(tempfile.gettempdir()) / f"text_gpu_limit_{limit}.json"
        out.unlink(missing_ok=True)
        cmd = [sys.executable, __file__, "--limit-gib", str(limit), "--presets", "low-vram", "--runs", "1",
               "--device", args.device, "--cache", str(args.cache), "--out", str(out), "--seed", str(args.seed),
               "--prompt", args.prompt, "--commit", args.commit]
        cmd += (["--voxels", str(args.voxels)] if args.voxels is not None else []) + ["--structure", args.structure] + \
               (["--steps", str(args.steps)] if args.steps else []) + \
               [flag for flag, on in (("--tiny", args.tiny), ("--no-glb", args.no_glb),
                                      ("--no-variant", args.no_variant)) if on]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        ok = proc.returncode == 0 and out.exists()
        r = {"limit_gib": limit, "completed": ok, "wall_seconds": round(time.perf_counter() - t0, 1)}
        if ok:
            entry = json.loads(out.read_text())["presets"]["low-vram"]
            run = entry["runs"][0]
            r.update(resolved={k: entry["resolved"][k] for k in ("precision", "offload", "cfg_batch")},
                     generate_seconds=run["generate_seconds"], total_seconds=run["total_seconds"],
                     glb_ok=("glb_error" not in run) if not args.no_glb else None, glb_error=run.get("glb_error"),
                     voxels=run["voxels"], stages=run["stages"], peak_allocated_GiB=run["peak_allocated_GiB"],
                     peak_reserved_GiB=run["peak_reserved_GiB"])
            if "variant" in entry:
                r["variant_seconds"] = entry["variant"]["run_variant_seconds"]
        else:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-4:]
            r["error"] = " | ".join(tail)[-600:]
        results.append(r)
        print(json.dumps(r), flush=True)
    done = [r["limit_gib"] for r in results if r["completed"]]
    return {"limits": results, "smallest_completed_gib": min(done) if done else None}


# ---------------------------------------------------------------------------------------------- report
def fmt_mem(r: dict) -> str:
    if r["peak_allocated_GiB"] is None:
        return "—"
    return f"{r['peak_allocated_GiB']:.2f} / {r['peak_reserved_GiB']:.2f}"


def markdown(info: dict) -> str:
    if "limits" in info:
        lines = ["| cap | completed | prompt → Gaussians + mesh s | + GLB s | run_variant s | peak alloc / reserved GiB |",
                 "|---|---|---|---|---|---|"]
        for r in info["limits"]:
            if r["completed"]:
                glb = "—" if r["glb_ok"] is None else (f"{r['total_seconds']:.2f}" if r["glb_ok"] else "failed (OOM)")
                var = f"{r['variant_seconds']:.2f}" if r.get("variant_seconds") is not None else "—"
                mem = "—" if r["peak_allocated_GiB"] is None else \
                    f"{r['peak_allocated_GiB']:.2f} / {r['peak_reserved_GiB']:.2f}"
                lines.append(f"| {r['limit_gib']:g} GiB | yes | {r['generate_seconds']:.2f} | {glb} | {var} | {mem} |")
            else:
                lines.append(f"| {r['limit_gib']:g} GiB | no | — | — | — | — |")
        return "\n".join(lines + ["", f"smallest cap that completed: {info['smallest_completed_gib']} GiB"])
    presets = info["presets"]
    names = list(presets)
    first = presets[names[0]]
    lines = [f"{info['device']}, torch {info['torch']}, commit {info['commit']}, {info['date']}; {info['pipeline']}; "
             f"stage 2 on {first['runs'][0]['voxels']} voxels; load {info['load_seconds']} s"
             + (f"; cap {info['limit_gib']} GiB" if info["limit_gib"] else ""), "",
             "| stage | " + " | ".join(f"{n}: s | peak alloc / reserved GiB" for n in names) + " |",
             "|---|" + "---|---|" * len(names)]
    for i, r in enumerate(first["median_stages"]):
        cells = []
        for n in names:
            st = presets[n]["median_stages"]
            cells.append(f"{st[i]['seconds']:.3f} | {fmt_mem(st[i])}" if i < len(st) else "— | —")
        lines.append(f"| {STAGE_LABELS.get(r['stage'], r['stage'])} | " + " | ".join(cells) + " |")
    lines.append("| **prompt → Gaussians + mesh** | " + " | ".join(
        f"**{presets[n]['generate_seconds_median']:.2f}** | " for n in names) + " |")
    if any(r["stage"] == "to_glb" for r in first["median_stages"]):
        lines.append("| **prompt → GLB** | " + " | ".join(
            f"**{presets[n]['total_seconds_median']:.2f}** | **{fmt_mem(presets[n])}**" for n in names) + " |")
    if all("variant" in presets[n] for n in names):
        v0 = presets[names[0]]["variant"]
        lines += ["", f"run_variant (new look from the prompt on a capsule, {v0['voxels']} voxels):", "",
                  "| stage | " + " | ".join(f"{n}: s | peak alloc / reserved GiB" for n in names) + " |",
                  "|---|" + "---|---|" * len(names)]
        for i, r in enumerate(v0["stages"]):
            lines.append(f"| {STAGE_LABELS.get(r['stage'], r['stage'])} | " + " | ".join(
                f"{presets[n]['variant']['stages'][i]['seconds']:.3f} | {fmt_mem(presets[n]['variant']['stages'][i])}"
                for n in names) + " |")
        lines.append("| **run_variant** | " + " | ".join(
            f"**{presets[n]['variant']['run_variant_seconds']:.2f}** | " for n in names) + " |")
    lines += ["", f"medians of {len(first['runs'])} warm run(s); settings: " + "; ".join(
        f"{n}: " + ", ".join(f"{k} {v}" for k, v in presets[n]["resolved"].items()) for n in names)]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--presets", default="resident,low-vram", help="resident, low-vram (or an app preset name)")
    ap.add_argument("--runs", type=int, default=2, help="timed runs per preset after one warm-up")
    ap.add_argument("--steps", type=int, default=None, help="sampling steps of both stages (default: the preset's)")
    ap.add_argument("--voxels", type=int, default=None,
                    help="occupied voxels after stage 1 (default 20000; 8%% of the grid with --tiny; 0: as decoded)")
    ap.add_argument("--structure", default="shell", choices=("shell", "scattered"),
                    help="stage 2's --voxels: the image benchmarks' spherical shell (a surface, as a trained stage 1 "
                         "makes) or the top-scoring voxels of the random decoder (scattered over the grid)")
    ap.add_argument("--prompt", default=PROMPT)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--limit-gib", type=float, default=None)
    ap.add_argument("--limits", default=None, help="comma-separated GiB caps: the low-VRAM job in a fresh process each")
    ap.add_argument("--no-glb", action="store_true", help="skip the to_glb export")
    ap.add_argument("--no-variant", action="store_true", help="skip the run_variant timing")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="the tiny text pipeline (a CPU check of the code path)")
    ap.add_argument("--cache", default=str(default_cache()), help="where the built pipeline folders are kept")
    ap.add_argument("--rebuild", action="store_true")
    ap.add_argument("--build-only", action="store_true", help="build (or find) the folders, load them, stop")
    ap.add_argument("--out", default="text_gpu.json")
    ap.add_argument("--md", default=None, help="also write the markdown table here")
    ap.add_argument("--commit", default=None, help="commit id to record (default: provenance.source_commit())")
    args = ap.parse_args()
    if args.commit is None:
        from provenance import source_commit

        args.commit = source_commit()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")           # everything is local; never ask the hub
    if args.build_only:
        pipe, load = load_pipeline(args, torch.device("cpu"))
        n = {k: sum(p.numel() for p in m.parameters()) for k, m in pipe._all_models().items()}
        print(json.dumps({**load, "parameters_M": {k: round(v / 1e6, 1) for k, v in n.items()}}, indent=1))
        return 0
    if not args.tiny or args.device != "cpu":
        from trellis import fastpaths

        print("renderers:", fastpaths.describe(args.device), flush=True)
    info = proof(args) if args.limits else run_presets(args)
    Path(args.out).write_text(json.dumps(info, indent=1))
    table = markdown(info)
    print(table)
    if args.md:
        Path(args.md).write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
