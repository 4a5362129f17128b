"""Where ``face_visibility`` spends its time on a GPU (issue 13: the realistic nut's clean-up), on the mesh
``to_glb`` gives it: the realistic object's decoder-like mesh after the first decimation.

    python benchmarks/visibility_gpu.py [--shape nut] [--runs 3] [--out visibility.json]

Prints the seconds of each run (the reference's 1000 views at 1024², our default on a GPU), the rasterise calls
and their atlas size, and a torch.profiler table (top ops by CUDA time and by CPU time) of one more run.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import realistic_objects as ro  # noqa: E402
from trellis.export.cleanup import visibility  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="nut")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--simplify", type=float, default=0.975)
    ap.add_argument("--out", default="visibility.json")
    args = ap.parse_args(argv)
    v, f = ro.first_decimation(args.shape, args.simplify)
    dev = torch.device("cuda")
    vt, ft = torch.as_tensor(v, device=dev), torch.as_tensor(f, device=dev)
    info = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "shape": args.shape,
            "faces": int(len(f)), "pixel_budget": visibility.default_pixel_budget(dev)}
    visibility.face_visibility(vt, ft, device=dev)           # warm-up (kernels)
    torch.cuda.synchronize()
    secs = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        visibility.face_visibility(vt, ft, device=dev)
        torch.cuda.synchronize()
        secs.append(round(time.perf_counter() - t0, 4))
    info["seconds"] = secs
    info["median_s"] = statistics.median(secs)
    print(json.dumps(info), flush=True)
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        visibility.face_visibility(vt, ft, device=dev)
        torch.cuda.synchronize()
    ka = prof.key_averages()
    info["by_cuda"] = ka.table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=70)
    info["by_cpu"] = ka.table(sort_by="cpu_time_total", row_limit=25, max_name_column_width=70)
    print(info["by_cuda"])
    print(info["by_cpu"])
    Path(args.out).write_text(json.dumps(info, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
