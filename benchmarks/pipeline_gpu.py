"""The whole image -> {Gaussians, mesh, radiance field} chain at full size on a GPU, per memory preset.

    python benchmarks/pipeline_gpu.py [--steps 12] [--voxels 20000] [--out pipeline_gpu.json]
                                      [--presets "fp16 eager,fp16 compiled"] [--repeats 3]

Random weights (shapes decide time and memory), the demo's sampler settings (12 + 12 steps, CFG 7.5 / 3.0,
interval [0.5, 1], rescale 3), and stage 2 fed a fixed ~20 000-voxel structure so that runs compare.
Each preset runs once to warm up (for the compiled presets this compiles the flows' blocks: its time is
reported), then ``--repeats`` times timed; the table lists the median run's seconds and peak allocated /
reserved memory per stage (from the pipeline's own stage tracker), its end-to-end total and the spread.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from networks_gpu import KEYS, MANIFESTS, shell_structure  # noqa: E402
import trellis.models as models  # noqa: E402
from trellis.models.dinov2 import DINOV2_VITL14_REG_ARGS  # noqa: E402
from trellis.models.image_conditioner import ImageConditioner  # noqa: E402
from trellis.pipelines import TrellisImageTo3DPipeline  # noqa: E402
from trellis.pipelines.memory import StageTracker  # noqa: E402
from trellis.pipelines.samplers import FlowEulerGuidanceIntervalSampler  # noqa: E402

# name, precision, offload, batched CFG, CUDA graphs, compiled flow blocks (the low-VRAM preset is what
# pick_preset gives < 6 GB: offload, CFG "auto" = batched per stage where it fits once the flow is loaded; the
# "sequential CFG" rows force the conditional and unconditional passes apart, what "auto" does when memory is short;
# "compiled" = MemoryPolicy.compile, the flows' blocks through torch.compile; "fp16 resident" = what pick_preset
# gives a big card: eager blocks, the sparse-structure flow's CUDA graphs kept from run to run)
PRESETS = [("low-VRAM", "fp16", "model", "auto", False, False),
           ("low-VRAM compiled", "fp16", "model", "auto", False, True),
           ("low-VRAM fp16+offload", "fp16", "model", False, False, False),
           ("fp16+offload", "fp16", "model", True, True, False),
           ("fp16", "fp16", "none", True, True, False), ("fp16 eager", "fp16", "none", True, False, False),
           ("fp16 resident", "fp16", "none", True, "auto", False),
           ("fp16 compiled", "fp16", "none", True, False, True),
           ("low-VRAM sequential CFG compiled", "fp16", "model", False, False, True),
           ("fp32", "fp32", "none", True, True, False)]


def build_pipeline() -> TrellisImageTo3DPipeline:
    torch.manual_seed(0)
    nets = {}
    for key in KEYS:
        config = json.loads(json.loads((MANIFESTS / f"{key}.json").read_text())["ckpt_json_text"])
        nets[key] = models.from_config(config)
    cond_model = ImageConditioner.from_config(DINOV2_VITL14_REG_ARGS)
    repo = json.loads((MANIFESTS / "_hf_repo_files.json").read_text())["files"]
    norm = json.loads(repo["pipeline.json"]["text"])["args"]["slat_normalization"]
    return TrellisImageTo3DPipeline(nets, FlowEulerGuidanceIntervalSampler(1e-5), FlowEulerGuidanceIntervalSampler(1e-5),
                                    norm, cond_model)


def sample_and_decode(pipe, image, coords, ss: dict, slat: dict, formats, tracker: StageTracker):
    """Condition, stage 1 (timed; its result is not used), stage 2 on the fixed structure `coords`, decoders;
    each stage timed by `tracker`. Returns (latent, decoded outputs)."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        with tracker.stage("condition"):
            cond = pipe.get_cond(image)
        with tracker.stage("sparse_structure"):
            try:
                pipe.sample_sparse_structure(cond, 1, ss, gen)
            except ValueError:
                pass                      # random weights may give no voxel: stage 2 uses the fixed structure
        with tracker.stage("slat"):
            latent = pipe.sample_slat(cond, coords, slat, gen)
        return latent, pipe.decode_slat(latent, formats, tracker=tracker)


def one_run(pipe, image, coords, args) -> tuple[float, list[dict], torch.Tensor]:
    ss = {"steps": args.steps, "cfg_strength": 7.5, "cfg_interval": [0.5, 1.0], "rescale_t": 3.0}
    slat = {"steps": args.steps, "cfg_strength": 3.0, "cfg_interval": [0.5, 1.0], "rescale_t": 3.0}
    tracker = StageTracker(pipe.device)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    latent, _ = sample_and_decode(pipe, image, coords, ss, slat, ("gaussian", "radiance_field", "mesh"), tracker)
    torch.cuda.synchronize()
    return time.perf_counter() - t0, tracker.as_dicts(), latent.feats.float()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--voxels", type=int, default=20000)
    ap.add_argument("--out", default="pipeline_gpu.json")
    ap.add_argument("--commit", default=None, help="commit id to record (default: provenance.source_commit())")
    ap.add_argument("--presets", default=None, help="comma-separated preset names (default: all)")
    ap.add_argument("--repeats", type=int, default=1, help="timed runs per preset after the warm-up (median shown)")
    ap.add_argument("--vary", type=int, default=0,
                    help="drop this many more voxels from the structure at every run (the warm-up included), so each "
                         "run brings new shapes as each job does in the app (caches per shape then count)")
    ap.add_argument("--limit-gib", type=float, default=None,
                    help="cap this process's GPU memory first (set_memory_limit): what a card of that size allows")
    args = ap.parse_args()
    if args.commit is None:
        from provenance import source_commit

        args.commit = source_commit()
    if args.limit_gib:
        from trellis.core.device import set_memory_limit
        set_memory_limit("cuda", int(args.limit_gib * 2 ** 30))
    pipe = build_pipeline()
    if args.limit_gib:
        pipe.set_memory_policy(offload="model")     # under a cap the models wait in host memory from the start
    pipe = pipe.to("cuda")
    coords = shell_structure(args.voxels).coords
    rounds = [0]

    def structure() -> torch.Tensor:
        """The fixed structure, or with --vary one with fewer voxels at every run of the process (new shapes)."""
        if not args.vary:
            return coords
        rounds[0] += 1
        return coords[args.vary * rounds[0]:]
    image = torch.rand(1, 3, 518, 518, generator=torch.Generator().manual_seed(0))
    info = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "commit": args.commit,
            "limit_gib": args.limit_gib, "vary": args.vary,
            "date": time.strftime("%Y-%m-%d"), "voxels": int(coords.shape[0]), "steps": args.steps, "presets": {}}
    latents = {}
    wanted = [n.strip() for n in args.presets.split(",")] if args.presets else [p[0] for p in PRESETS]
    unknown = set(wanted) - {p[0] for p in PRESETS}
    if unknown:
        ap.error(f"unknown preset(s) {sorted(unknown)}; known: {[p[0] for p in PRESETS]}")
    if "fp16 eager" not in wanted:
        wanted.append("fp16 eager")                             # the reference for the latent differences
    for name, precision, offload, cfg_batch, graphs, compiled in (p for p in PRESETS if p[0] in wanted):
        pipe.set_memory_policy(precision=precision, offload=offload, cfg_batch=cfg_batch, cuda_graphs=graphs,
                               compile=compiled)
        torch.cuda.empty_cache()
        t0 = time.perf_counter()
        one_run(pipe, image, structure(), args)                # warm-up (compiles, when compiled)
        warmup_s = time.perf_counter() - t0
        runs = [one_run(pipe, image, structure(), args) for _ in range(args.repeats)]
        runs.sort(key=lambda r: r[0])
        total, stages, latents[name] = runs[len(runs) // 2]     # the median run
        info["presets"][name] = {"total_seconds": total, "stages": stages, "warmup_seconds": warmup_s,
                                 "all_totals": [r[0] for r in runs],
                                 "peak_allocated_GiB": max(s["peak_allocated_bytes"] for s in stages) / 2 ** 30,
                                 "peak_reserved_GiB": max(s["peak_reserved_bytes"] for s in stages) / 2 ** 30}
        info["presets"][name]["cfg_batch_per_stage"] = dict(pipe.last_cfg_batch)
        print(json.dumps({name: info["presets"][name]}), flush=True)
    ref = latents["fp16 eager"]
    if not args.vary:                 # (with --vary every run has its own structure: nothing to compare)
        info["slat_rel_rms_vs_fp16_eager"] = {
            n: float((v - ref).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt()) for n, v in latents.items()}
        print(json.dumps(info["slat_rel_rms_vs_fp16_eager"]))
    Path(args.out).write_text(json.dumps(info, indent=1))
    print(markdown(info))
    return 0


def markdown(info: dict) -> str:
    names = list(info["presets"])
    stages = [s["stage"] for s in info["presets"][names[0]]["stages"]]
    head = "| stage | " + " | ".join(f"{n}: s | {n}: peak alloc GiB" for n in names) + " |"
    lines = [f"{info['device']}, torch {info['torch']}, commit {info['commit']}, {info['date']}; "
             f"{info['steps']}+{info['steps']} steps, stage 2 on {info['voxels']} voxels", "", head,
             "|---|" + "---|---|" * len(names)]
    for i, stage in enumerate(stages):
        cells = []
        for n in names:
            s = info["presets"][n]["stages"][i]
            cells += [f"{s['seconds']:.3f}", f"{s['peak_allocated_bytes'] / 2 ** 30:.2f}"]
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    lines.append("| **total** | " + " | ".join(f"**{info['presets'][n]['total_seconds']:.3f}** | "
                                             f"**{info['presets'][n]['peak_allocated_GiB']:.2f}**" for n in names) + " |")
    if any(len(info["presets"][n].get("all_totals", [])) > 1 for n in names):
        lines.append("| total, all runs | " + " | ".join(
            ", ".join(f"{t:.3f}" for t in info["presets"][n].get("all_totals", [])) + " | " for n in names) + "")
    lines.append("| warm-up run (compiles) | " + " | ".join(
        f"{info['presets'][n].get('warmup_seconds', float('nan')):.1f} | " for n in names) + "")
    if "slat_rel_rms_vs_fp16_eager" in info:
        lines += ["", "Structured latent after stage 2, relative RMS difference to the fp16 eager run: " + ", ".join(
            f"{n} {v:.1e}" for n, v in info["slat_rel_rms_vs_fp16_eager"].items())]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
