"""Where the time goes: torch.profiler tables for one network forward at full size (random weights).

    python benchmarks/profile_gpu.py [--model slat_flow_model] [--voxels 20000] [--rows 25]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from networks_gpu import build, inputs, shell_structure  # noqa: E402
from trellis.modules.sparse import SparseTensor  # noqa: E402


@torch.no_grad()
def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="slat_flow_model")
    ap.add_argument("--voxels", type=int, default=20000)
    ap.add_argument("--rows", type=int, default=25)
    ap.add_argument("--reuse-structure", action="store_true", help="keep cached maps between calls (as in sampling)")
    args = ap.parse_args()
    model = build(args.model, "cuda")
    s = shell_structure(args.voxels)
    x = inputs(args.model, s, "cuda")

    def run():
        xs = x if args.reuse_structure else tuple(SparseTensor(a.feats, a.coords) if isinstance(a, SparseTensor) else a
                                                  for a in x)
        return model(*xs)
    for _ in range(2):
        run()
    torch.cuda.synchronize()
    acts = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=acts) as prof:
        run()
        torch.cuda.synchronize()
    print(f"== {args.model}, reuse_structure={args.reuse_structure}: by CUDA time")
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=args.rows))
    print(f"== {args.model}: by CPU time")
    print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=args.rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
