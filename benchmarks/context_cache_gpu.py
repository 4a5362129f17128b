"""The flows' per-run context cache (modules.context_cache: the condition's cast and the 24 cross-attentions' keys
and values made once per run) on and off, interleaved in one process, so that the host's speed is the same for
both.

    python benchmarks/context_cache_gpu.py [--rounds 8] [--vary 40] [--out context_cache_gpu.json]

Full-size random-weight pipeline (pipeline_gpu.build_pipeline), fp16, flows resident, the demo's sampler settings
(12 + 12 steps, CFG 7.5 / 3.0, interval [0.5, 1], rescale 3), stage 2 on the ~20 000-voxel shell (fewer voxels by
--vary at every round: new shapes per job). Two presets: "eager" (no CUDA graph) and "resident" (the default: the
sparse-structure flow's graphs kept from job to job). Per round and preset: stage 1 and stage 2 with the cache on
and off (the order alternating from round to round), each synchronised and timed, and their outputs compared.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from networks_gpu import shell_structure  # noqa: E402
from pipeline_gpu import build_pipeline  # noqa: E402

SS = {"steps": 12, "cfg_strength": 7.5, "cfg_interval": [0.5, 1.0], "rescale_t": 3.0}
SLAT = {"steps": 12, "cfg_strength": 3.0, "cfg_interval": [0.5, 1.0], "rescale_t": 3.0}


def timed(fn):
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return time.perf_counter() - t0, out


def stage1(pipe, cond):
    """The sparse-structure flow's run (its latent: random weights may decode to no voxel at all)."""
    flow = pipe.models["sparse_structure_flow_model"]
    noise = torch.randn(1, flow.in_channels, *(flow.resolution,) * 3, generator=torch.Generator().manual_seed(1))
    return pipe._sample("sparse_structure", pipe.sparse_structure_sampler, "sparse_structure_flow_model",
                        pipe.sparse_structure_sampler_params, noise.cuda(), cond, SS, None, None)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--vary", type=int, default=40)
    ap.add_argument("--voxels", type=int, default=20000)
    ap.add_argument("--commit", default=None, help="commit id to record (default: provenance.source_commit())")
    ap.add_argument("--out", default="context_cache_gpu.json")
    args = ap.parse_args()
    if args.commit is None:
        from provenance import source_commit

        args.commit = source_commit()
    pipe = build_pipeline().to("cuda")
    coords = shell_structure(args.voxels).coords
    image = torch.rand(1, 3, 518, 518, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        cond = pipe.get_cond(image)
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "commit": args.commit,
              "date": time.strftime("%Y-%m-%d"), "voxels": int(coords.shape[0]), "vary": args.vary, "presets": {}}
    for preset, graphs in (("eager", False), ("resident", "structure")):
        pipe.set_memory_policy(precision="fp16", offload="none", cfg_batch=True, cuda_graphs=graphs)
        times = {(mode, stage): [] for mode in ("on", "off") for stage in ("sparse_structure", "slat")}
        equal = True
        for rnd in range(args.rounds + 1):                  # round 0 warms up (kept graphs captured, kernels built)
            structure = coords[args.vary * rnd:]
            outs = {}
            for mode in (("on", "off") if rnd % 2 == 0 else ("off", "on")):
                pipe._cache_context = lambda policy, on=(mode == "on"): on
                with torch.no_grad():
                    t1, z = timed(lambda: stage1(pipe, cond))
                    t2, slat = timed(lambda: pipe.sample_slat(cond, structure, SLAT, torch.Generator().manual_seed(2)))
                outs[mode] = (z, slat.feats)
                if rnd:
                    times[(mode, "sparse_structure")].append(t1)
                    times[(mode, "slat")].append(t2)
            equal = equal and all(torch.equal(a, b) for a, b in zip(outs["on"], outs["off"]))
        del pipe._cache_context
        row = {f"{mode} {stage}": {"median": statistics.median(v), "min": min(v), "max": max(v)}
               for (mode, stage), v in times.items()}
        row["bit_equal"] = equal
        result["presets"][preset] = row
        print(preset, json.dumps(row, indent=None))
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"{result['device']}, torch {result['torch']}, {result['date']}")
    for preset, row in result["presets"].items():
        for stage in ("sparse_structure", "slat"):
            on, off = row[f"on {stage}"], row[f"off {stage}"]
            print(f"| {preset} | {stage} | on {on['median']:.3f} ({on['min']:.3f}-{on['max']:.3f}) | "
                  f"off {off['median']:.3f} ({off['min']:.3f}-{off['max']:.3f}) | bit-equal {row['bit_equal']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
