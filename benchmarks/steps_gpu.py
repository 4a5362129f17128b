"""Each sampler step's time, both flows, per execution mode, in one process: the comparison that survives a
noisy host (whole-chain totals of one configuration moved between 0.87 and 1.26 s across device starts).

    python benchmarks/steps_gpu.py [--configs eager,graphs,compiled] [--runs 2] [--voxels 20000]
    ATTN_BACKEND=sdpa SPARSE_ATTN_BACKEND=torch_varlen python benchmarks/steps_gpu.py   # FlashAttention-2 only

The full-size random-weight pipeline of pipeline_gpu.py, fp16, models resident, batched CFG; 12 + 12 steps,
CFG 7.5 / 3, interval [0.5, 1], rescale 3 (10 guided steps at batch 2, then 2 at batch 1); stage 2 on the fixed
~20 000-voxel shell. Configurations: "eager" (no CUDA graphs, no compile), "graphs" (the resident preset's
CUDA-graph replay), "compiled" (MemoryPolicy.compile). Each runs once to warm up, then `--runs` times; a step's
time is taken at the progress callback after a synchronise (so it includes the sampler's own work).
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

from networks_gpu import shell_structure  # noqa: E402
from pipeline_gpu import build_pipeline  # noqa: E402

CONFIGS = {"eager": (False, False), "graphs": (True, False), "compiled": (False, True)}


def one_run(pipe, image, coords, ss: dict, slat: dict) -> dict:
    marks = []

    def progress(stage, i, n):
        torch.cuda.synchronize()
        marks.append((stage, time.perf_counter()))
    with torch.no_grad():
        cond = pipe.get_cond(image)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        try:
            pipe.sample_sparse_structure(cond, 1, ss, torch.Generator().manual_seed(1), progress=progress)
        except ValueError:
            pass                      # random weights may give no voxel: stage 2 uses the fixed structure
        torch.cuda.synchronize()
        t1 = time.perf_counter()
        pipe.sample_slat(cond, coords, slat, torch.Generator().manual_seed(1), progress=progress)
        torch.cuda.synchronize()
        t2 = time.perf_counter()
    steps, prev = {}, {"sparse_structure": t0, "slat": t1}
    for stage, t in marks:
        steps.setdefault(stage, []).append(round((t - prev[stage]) * 1000, 1))
        prev[stage] = t
    return {"sparse_structure_ms": round((t1 - t0) * 1000, 1), "slat_ms": round((t2 - t1) * 1000, 1),
            "steps_ms": steps}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", default="eager,graphs,compiled")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--voxels", type=int, default=20000)
    ap.add_argument("--out", default="steps_gpu.json")
    args = ap.parse_args()
    names = [c.strip() for c in args.configs.split(",")]
    unknown = set(names) - set(CONFIGS)
    if unknown:
        ap.error(f"unknown config(s) {sorted(unknown)}; known: {list(CONFIGS)}")
    pipe = build_pipeline().to("cuda")
    coords = shell_structure(args.voxels).coords
    image = torch.rand(1, 3, 518, 518, generator=torch.Generator().manual_seed(0))
    ss = {"steps": 12, "cfg_strength": 7.5, "cfg_interval": [0.5, 1.0], "rescale_t": 3.0}
    slat = {"steps": 12, "cfg_strength": 3.0, "cfg_interval": [0.5, 1.0], "rescale_t": 3.0}
    from trellis.core import backends
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
              "attention": {"dense": backends.get("dense"), "varlen": backends.get("varlen")}, "configs": {}}
    for name in names:
        graphs, compiled = CONFIGS[name]
        pipe.set_memory_policy(precision="fp16", offload="none", cfg_batch=True, cuda_graphs=graphs, compile=compiled)
        one_run(pipe, image, coords, ss, slat)                       # warm-up (compiles, when compiled)
        runs = [one_run(pipe, image, coords, ss, slat) for _ in range(args.runs)]
        report["configs"][name] = runs
        for i, r in enumerate(runs):
            print(f"{name} run {i + 1}: stage 1 {r['sparse_structure_ms']:.0f} ms, stage 2 {r['slat_ms']:.0f} ms")
            for stage, v in r["steps_ms"].items():
                print(f"   {stage}: {v}")
        sys.stdout.flush()
    Path(args.out).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
