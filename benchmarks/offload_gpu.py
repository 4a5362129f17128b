"""Where the low-VRAM (offloading) chain spends its time, run by run (issue 14 §3).

    python benchmarks/offload_gpu.py [--runs 6] [--compile] [--limit-gib 4]

The chain of ``pipeline_gpu.py`` (random weights, 12 + 12 steps, stage 2 on the fixed 20 032-voxel structure, all
three decoders) with the models offloaded (``offload="model"``), once with CFG "auto" (each flow stage batches its
conditional and unconditional passes where they fit, ``pipeline.last_cfg_batch``) and once with sequential CFG. Each
run prints, in order (not sorted): the total and each stage's seconds, the seconds spent uploading weights
(``HostWeights.to_device``), pointing them back home (``to_host``) and releasing the cache
(``release_device_memory``), each timed between two synchronisations, the allocator's device allocations and frees
during the run, and its peak. One warm-up run per setting first.
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

import pipeline_gpu as pg  # noqa: E402
from networks_gpu import shell_structure  # noqa: E402
import trellis.pipelines.base as base  # noqa: E402
import trellis.pipelines.memory as memory  # noqa: E402

SPENT: dict = {}


def timed(name: str, fn):
    def wrapper(*args, **kwargs):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            torch.cuda.synchronize()
            SPENT[name] = SPENT.get(name, 0.0) + time.perf_counter() - t0
    return wrapper


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=6)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--compile", action="store_true", help="the flows' blocks through torch.compile")
    ap.add_argument("--limit-gib", type=float, default=None, help="cap this process's GPU memory first")
    ap.add_argument("--out", default="offload_gpu.json")
    args = ap.parse_args()
    if args.limit_gib:
        from trellis.core.device import set_memory_limit
        set_memory_limit("cuda", int(args.limit_gib * 2 ** 30))
    memory.HostWeights.to_device = timed("upload", memory.HostWeights.to_device)
    memory.HostWeights.to_host = timed("to_host", memory.HostWeights.to_host)
    base.release_device_memory = timed("release", base.release_device_memory)
    pipe = pg.build_pipeline()
    pipe.set_memory_policy(precision="fp16", offload="model", cuda_graphs=False, compile=args.compile)
    pipe = pipe.to("cuda")
    coords = shell_structure(20000).coords
    image = torch.rand(1, 3, 518, 518, generator=torch.Generator().manual_seed(0))
    out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
           "compile": args.compile, "limit_gib": args.limit_gib, "settings": {}}
    for label, cfg in (("CFG auto", "auto"), ("sequential CFG", False)):
        pipe.set_memory_policy(cfg_batch=cfg)
        torch.cuda.empty_cache()
        pg.one_run(pipe, image, coords, args)                   # warm-up
        rows = []
        for i in range(args.runs):
            SPENT.clear()
            before = torch.cuda.memory_stats()
            total, stages, _ = pg.one_run(pipe, image, coords, args)
            after = torch.cuda.memory_stats()
            row = {"run": i + 1, "total_s": round(total, 3),
                   "stages_s": {s["stage"]: round(s["seconds"], 3) for s in stages},
                   "offload_s": {k: round(v, 3) for k, v in SPENT.items()},
                   "device_allocs": after.get("num_device_alloc", 0) - before.get("num_device_alloc", 0),
                   "device_frees": after.get("num_device_free", 0) - before.get("num_device_free", 0),
                   "peak_alloc_GiB": round(max(s["peak_allocated_bytes"] for s in stages) / 2 ** 30, 2),
                   "cfg_batch": dict(pipe.last_cfg_batch)}
            rows.append(row)
            print(label, json.dumps(row), flush=True)
        out["settings"][label] = rows
    Path(args.out).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
