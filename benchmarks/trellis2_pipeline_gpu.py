"""TRELLIS.2's whole chain, image -> textured O-Voxel meshes (and optionally the PBR GLB), at full size with random
weights: seconds and peak allocated / reserved GPU memory per stage, per pipeline type and memory configuration.

    python benchmarks/trellis2_pipeline_gpu.py [--folder /tmp/trellis2_full] [--types 512,1024_cascade,1536_cascade]
        [--configs default/on,default/on/nocudnn,low-vram/on@6] [--runs 2] [--warmup 1] [--export 1024_cascade]
        [--attention-sweep] [--deadline-s 540] [--out trellis2_pipeline_gpu.json]
    python benchmarks/trellis2_pipeline_gpu.py --tiny           # the script's logic on the tiny folder (CPU is fine)

The folder is `python -m trellis.tools.tiny_pipeline --trellis2 DIR --full-size` (written here when DIR has no
pipeline.json, 17 GB; kept for the next call). Shapes, not values, decide time and memory.

A configuration is PRESET/FAST[/CUDNN][@GIB][:TYPE+TYPE]: PRESET "default" (precision and offload "auto": the
pipeline's own choice, RESIDENT_BUDGETS) or "low-vram" (fp16, each network on the GPU only for its stage: the app's
preset); FAST "on" / "off" (TRELLIS_FAST_PATHS: the PyTorch twins only); CUDNN "nocudnn" turns the attention's long-
sequence cuDNN rule off (trellis.tuning's TUNING.cudnn_min_tokens) or gives its threshold in tokens; @GIB holds the
process to a VRAM budget of that many GiB (core.device.set_memory_budget: torch's per-process memory fraction),
"auto" precision and offload then picked to fit it as the app does (memory.fit_budget); :TYPE+TYPE runs only those
types in it; a last part "8bit" runs it with 8-bit attention (e.g. default/on/8bit). `--preset`, `--fast-paths` and
`--vram-cap` build the list instead when `--configs` is not given.

The first configuration first runs `--warmup` runs of each type (the first job: Triton / NVRTC compiles, cuDNN
plans; every configuration with `--warmup-all`), then each configuration `--runs` runs per type, each with its own
seed (a new structure, as each job of the app brings: so the timed runs are second jobs). Every run's stages come
from the pipeline's own tracker (last_stats: preprocess, condition, sparse_structure, structure_decode,
shape_slat_lr, upsample, shape_slat_hr (or shape_slat), tex_slat, decode_shape, decode_texture, mesh), each with its
seconds and the peak allocated / reserved memory while it ran (weights held included); the run's own peaks over all
stages too. A run that fails (out of memory under a cap: the error names the stage and the budget) is recorded and
the next one starts. The JSON is rewritten after every run, and no new run starts past `--deadline-s`, so a command
cut off at its time limit still leaves its results.

`--attention-sweep`: the flows' attention shapes (CFG pair, 12 heads x 128, bf16) per sequence length, through
FlashAttention-2 (torch varlen) and cuDNN: the first call at a new length (cuDNN builds a plan) and the steady call,
and what a stage of 12 steps x 30 blocks would spend with each, to confirm TUNING.cudnn_min_tokens.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from trellis import fastpaths  # noqa: E402
from trellis.modules.attention import attention_precision  # noqa: E402
from trellis.core.device import memory_budget, peak_memory, set_memory_budget, start_peak_window  # noqa: E402
from trellis.pipelines import EmptyStructureError  # noqa: E402
from trellis.pipelines.memory import fit_budget  # noqa: E402
from trellis.pipelines.trellis2_image_to_3d import Trellis2ImageTo3DPipeline  # noqa: E402
from trellis.tuning import TUNING  # noqa: E402

GiB = 2 ** 30
TYPES = ("512", "1024", "1024_cascade", "1536_cascade")
PRESETS = ("default", "low-vram")


# ------------------------------------------------------------------------------------------- configurations
def parse_config(text: str) -> dict:
    """PRESET/FAST[/CUDNN][@GIB][:TYPE+TYPE] (module docstring) -> {"name", "preset", "fast", "cudnn_min",
    "cap_gib", "types" (None: --types)}."""
    head, _, only = text.strip().partition(":")
    spec, _, cap = head.partition("@")
    parts = spec.split("/")
    attention = "exact"
    if parts and parts[-1] == "8bit":
        attention, parts = "8bit", parts[:-1]
    if len(parts) not in (2, 3) or parts[0] not in PRESETS or parts[1] not in ("on", "off"):
        raise ValueError(f"configuration {text!r}: expected PRESET/FAST[/CUDNN][@GIB][:TYPE+TYPE], PRESET one of "
                         f"{', '.join(PRESETS)}, FAST on or off")
    types = [t for t in only.split("+") if t] or None
    if types and set(types) - set(TYPES):
        raise ValueError(f"configuration {text!r}: unknown types {sorted(set(types) - set(TYPES))}")
    cudnn = TUNING.cudnn_min_tokens
    if len(parts) == 3:
        cudnn = None if parts[2] == "nocudnn" else int(parts[2])
    return {"name": text.strip(), "preset": parts[0], "fast": parts[1] == "on", "cudnn_min": cudnn,
            "cap_gib": float(cap) if cap else None, "types": types, "attention": attention}


def apply_config(pipe, config: dict, device: torch.device) -> dict:
    """The configuration's fast paths, attention rule, VRAM budget and memory policy on `pipe`; returns the
    resolved policy as a dict."""
    fastpaths.set_enabled(None if config["fast"] else False)
    TUNING.cudnn_min_tokens = 1 << 62 if config["cudnn_min"] is None else config["cudnn_min"]
    precision, offload = ("auto", "auto") if config["preset"] == "default" else ("fp16", "model")
    cap = config["cap_gib"]
    if device.type == "cuda":
        set_memory_budget(device, None)
        if cap is not None and config["preset"] == "default":
            policy = fit_budget(device, int(cap * GiB), resident=pipe.RESIDENT_BUDGETS)
            precision, offload = policy.precision, policy.offload
    policy = pipe.set_memory_policy(precision=precision, offload=offload, cfg_batch="auto")
    if device.type == "cuda":
        torch.cuda.empty_cache()
        if cap is not None:
            set_memory_budget(device, int(cap * GiB))     # after the weights left: only the job counts
    return {"precision": policy.precision, "offload": policy.offload, "cfg_batch": policy.cfg_batch,
            "budget_bytes": memory_budget(device)}


# ------------------------------------------------------------------------------------------------- inputs
def ensure_folder(folder: str | None, tiny: bool) -> str:
    """A random-weight TRELLIS.2 folder: `folder` when it holds pipeline.json, else written there (the writer
    writes pipeline.json last, so a folder without it is an interrupted write and is written again)."""
    from trellis.tools.tiny_trellis2_pipeline import write_trellis2_pipeline

    if folder is None:
        folder = tempfile.mkdtemp(prefix="trellis2_tiny_") if tiny else "/tmp/trellis2_full"
    if os.path.isfile(os.path.join(folder, "pipeline.json")):
        print(f"reusing {folder}", flush=True)
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    t0 = time.perf_counter()
    write_trellis2_pipeline(folder, seed=0, full_size=not tiny)
    print(f"wrote {'the tiny' if tiny else 'the full-size'} folder {folder} in {time.perf_counter() - t0:.0f} s",
          flush=True)
    return folder


def object_image(size: int = 1024) -> Image.Image:
    """An object on black, square, as preprocessing leaves it (no background removal needed)."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    body = ((xx - 0.5) ** 2 / 0.09 + (yy - 0.55) ** 2 / 0.16) < 1
    rgb = np.zeros((size, size, 3), np.float32)
    rgb[body] = np.stack([0.2 + 0.6 * xx, 0.3 + 0.4 * yy, 0.5 + 0.3 * xx * yy], -1)[body]
    return Image.fromarray((rgb * 255).astype(np.uint8))


def load(folder: str, device: torch.device, first: dict) -> Trellis2ImageTo3DPipeline:
    """The pipeline, built straight on the GPU where the first configuration keeps it resident."""
    resident_first = first["preset"] == "default" and first["cap_gib"] is None
    t0 = time.perf_counter()
    pipe = Trellis2ImageTo3DPipeline.from_pretrained(folder, device=device if resident_first else None)
    if not resident_first:
        pipe.set_memory_policy(offload="model")       # from pinned host memory, never all on the GPU at once
        pipe.to(device)
    print(f"loaded in {time.perf_counter() - t0:.1f} s", flush=True)
    return pipe


# ---------------------------------------------------------------------------------------------------- runs
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def one_run(pipe, image, kind: str, seed: int, device: torch.device, attention: str = "exact") -> tuple[dict, list]:
    """One pipeline.run (its attention "exact" or "8bit"): its row (seconds, stages, peaks, sizes, or the error) and
    its meshes ([] on failure)."""
    if device.type == "cuda":
        start_peak_window(device)
    sync(device)
    t0 = time.perf_counter()
    row: dict = {"seed": seed}
    meshes = []
    try:
        with attention_precision(attention):
            meshes, (shape, _, res) = pipe.run(image, seed=seed, pipeline_type=kind, preprocess_image=False,
                                               return_latent=True)
        sync(device)
        row.update(seconds=time.perf_counter() - t0, res=res, latent_voxels=int(shape.coords.shape[0]),
                   fine_voxels=int(meshes[0].coords.shape[0]), faces=int(meshes[0].faces.shape[0]))
        del shape
    except (torch.OutOfMemoryError, EmptyStructureError) as err:
        row.update(seconds=time.perf_counter() - t0, error=f"{type(err).__name__}: {str(err)[:400]}")
    row["stages"] = pipe.last_stats
    row["chain_seconds"] = sum(s["seconds"] for s in pipe.last_stats if s["stage"] != "preprocess")
    peaks = peak_memory(device) if device.type == "cuda" else None
    if peaks:
        row["peak_allocated_GiB"] = peaks["peak_allocated"] / GiB
        row["peak_reserved_GiB"] = peaks["peak_reserved"] / GiB
    row["cfg_batch"] = dict(pipe.last_cfg_batch)
    row["lean"] = dict(pipe.last_lean)
    return row, meshes


def export_glb(mesh, faces: int, texture: int) -> dict:
    """ovoxel_to_glb of the run's mesh, timed (its own per-step seconds in "steps")."""
    from trellis.export.pbr import ovoxel_to_glb

    path = os.path.join(tempfile.gettempdir(), "trellis2_benchmark.glb")
    t0 = time.perf_counter()
    try:
        textured = ovoxel_to_glb(mesh, path, target_faces=faces, texture_size=texture)
    except Exception as err:           # recorded: the chain's numbers still count
        return {"error": f"{type(err).__name__}: {str(err)[:400]}", "seconds": time.perf_counter() - t0}
    return {"seconds": time.perf_counter() - t0, "steps": textured.info.get("seconds"),
            "prepare_steps": textured.info.get("prepare_seconds"),
            "faces": len(textured.faces), "bytes": os.path.getsize(path), "target_faces": faces,
            "texture_size": texture}


def stage_line(row: dict) -> str:
    def cell(s):
        mem = f" {s['peak_reserved_bytes'] / GiB:.1f}G" if s.get("peak_reserved_bytes") is not None else ""
        return f"{s['stage']} {s['seconds']:.2f}s{mem}"
    return " | ".join(cell(s) for s in row["stages"])


# ------------------------------------------------------------------------------------------ attention sweep
def attention_sweep(lengths, device: torch.device, heads: int = 12, dim: int = 128, calls: int = 20) -> list:
    """FlashAttention-2 (torch varlen) against cuDNN on the flows' CFG pair: per length the first call at that
    length (a plan for cuDNN), the steady call, and a stage's estimate (12 steps x 30 blocks of self-attention)."""
    from trellis.modules.attention import SeqLens, varlen_attention

    rows = []
    for i, length in enumerate(lengths):
        row = {"tokens": length}
        for name in ("torch_varlen", "cudnn"):
            n = length + i + (7 if name == "cudnn" else 0)      # a length neither kernel has seen
            g = torch.Generator(device=device).manual_seed(n)
            q, k, v = (torch.randn(2 * n, heads, dim, device=device, generator=g, dtype=torch.bfloat16)
                       for _ in range(3))
            lens = SeqLens([n, n], device)
            sync(device)
            t0 = time.perf_counter()
            varlen_attention(q, k, v, lens, lens, backend=name)
            sync(device)
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            for _ in range(calls):
                varlen_attention(q, k, v, lens, lens, backend=name)
            sync(device)
            steady = (time.perf_counter() - t0) / calls
            row[name] = {"first_ms": first * 1e3, "steady_ms": steady * 1e3,
                         "stage_s": first + steady * (12 * 30 - 1)}
            del q, k, v
        row["cudnn_faster_per_stage"] = row["cudnn"]["stage_s"] < row["torch_varlen"]["stage_s"]
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--folder", default=None, help="the random-weight folder to reuse or write "
                                                   "(default /tmp/trellis2_full; --tiny: a temporary one)")
    ap.add_argument("--tiny", action="store_true", help="the tiny folder: checks this script's logic (CPU is fine)")
    ap.add_argument("--types", default="512,1024_cascade,1536_cascade")
    ap.add_argument("--configs", default=None, help="comma-separated PRESET/FAST[/CUDNN][@GIB] (module docstring)")
    ap.add_argument("--preset", default="default", help="comma-separated, of: default, low-vram (without --configs)")
    ap.add_argument("--fast-paths", default="on", help="comma-separated, of: on, off (without --configs)")
    ap.add_argument("--vram-cap", type=float, default=None, help="GiB, for every configuration (without --configs)")
    ap.add_argument("--runs", type=int, default=2, help="timed runs per type and configuration")
    ap.add_argument("--warmup", type=int, default=1, help="untimed first runs per type (first configuration)")
    ap.add_argument("--warmup-all", action="store_true", help="the warm-up runs in every configuration")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--export", default="", help="comma-separated types whose last run is exported to a GLB "
                                                 "(first configuration only)")
    ap.add_argument("--export-faces", type=int, default=500_000)
    ap.add_argument("--export-texture", type=int, default=2048)
    ap.add_argument("--attention-sweep", action="store_true")
    ap.add_argument("--sweep-tokens", default="4096,8192,12288,16384,24576,32768,49152")
    ap.add_argument("--deadline-s", type=float, default=540.0, help="no new run starts after this many seconds")
    ap.add_argument("--out", default="trellis2_pipeline_gpu.json")
    ap.add_argument("--commit", default=None, help="commit id to record (default: provenance.source_commit())")
    args = ap.parse_args(argv)
    started = time.perf_counter()
    types = [t for t in args.types.split(",") if t]
    bad = sorted(set(types) - set(TYPES))
    if bad:
        ap.error(f"unknown types {bad}; known: {', '.join(TYPES)}")
    if args.configs:
        specs = [c for c in args.configs.split(",") if c]
    else:
        cap = f"@{args.vram_cap:g}" if args.vram_cap else ""
        specs = [f"{p}/{f}{cap}" for p in args.preset.split(",") for f in args.fast_paths.split(",")]
    try:
        configs = [parse_config(c) for c in specs]
    except ValueError as err:
        ap.error(str(err))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda" and not args.tiny:
        print("needs a CUDA GPU (or --tiny)", file=sys.stderr)
        return 2
    commit = args.commit
    if commit is None:
        from provenance import source_commit

        commit = source_commit()
    info = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "torch": torch.__version__,
            "python": platform.python_version(), "commit": commit, "date": time.strftime("%Y-%m-%d"),
            "tiny": args.tiny, "types": types, "runs": args.runs, "warmup": args.warmup,
            "cudnn_min_tokens": TUNING.cudnn_min_tokens, "configs": {}}
    print(json.dumps({k: v for k, v in info.items() if k != "configs"}), flush=True)
    out = Path(args.out)

    def save():
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(info, indent=1))
        os.replace(tmp, out)

    if args.attention_sweep and device.type == "cuda":
        info["attention_sweep"] = attention_sweep([int(t) for t in args.sweep_tokens.split(",") if t], device)
        save()
    folder = ensure_folder(args.folder, args.tiny)
    info["folder"] = folder
    pipe = load(folder, device, configs[0])
    image = object_image(256 if args.tiny else 1024)
    exports = {t for t in args.export.split(",") if t}
    seed = args.seed
    for ci, config in enumerate(configs):
        record = info["configs"][config["name"]] = {"policy": apply_config(pipe, config, device), "types": {}}
        record["conv_path"] = fastpaths.path_of("sparse_conv3d", device)
        print(f"== {config['name']}: {record['policy']}", flush=True)
        warmup = args.warmup if ci == 0 or args.warmup_all else 0
        for kind in config["types"] or types:
            rows = record["types"].setdefault(kind, {"warmup": [], "runs": []})
            meshes = []
            for i in range(warmup + args.runs):
                if time.perf_counter() - started > args.deadline_s:
                    rows["skipped"] = f"deadline of {args.deadline_s:g} s reached"
                    break
                meshes = []                    # the last run's meshes go before the next run
                row, meshes = one_run(pipe, image, kind, seed, device, config["attention"])
                seed += 1
                rows["warmup" if i < warmup else "runs"].append(row)
                failed = f" {row['error']}" if "error" in row else ""
                print(f"{config['name']} {kind} {'warm-up' if i < warmup else 'run'} {row['seconds']:.2f} s "
                      f"(chain {row['chain_seconds']:.2f} s), peak reserved "
                      f"{row.get('peak_reserved_GiB', float('nan')):.2f} GiB, lean {row['lean']}{failed}\n"
                      f"    {stage_line(row)}", flush=True)
                save()
            if ci == 0 and kind in exports and meshes and time.perf_counter() - started < args.deadline_s:
                rows["export"] = export_glb(meshes[0], args.export_faces, args.export_texture)
                print(f"{kind} export: {json.dumps(rows['export'])}", flush=True)
                save()
            del meshes
    fastpaths.set_enabled(None)
    if device.type == "cuda":
        set_memory_budget(device, None)
    info["total_seconds"] = time.perf_counter() - started
    save()
    print(f"wrote {out} ({info['total_seconds']:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
