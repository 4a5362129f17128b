"""Which sparse-conv kernel makes the SLat flow's forward faster, Triton or NVRTC: interleaved A/B in one process.

    python benchmarks/conv_path_ab_gpu.py [--rounds 10] [--per-round 5] [--out conv_path_ab_gpu.json]

The full-size SLat flow (random weights, fp16 torso) on a ~20 000-voxel shell, its neighbour maps cached as in
the sampler's steps (one structure per job); each round runs ``--per-round`` forwards with
``TRELLIS_FAST_PATHS=triton`` then as many with ``=nvrtc`` (the only other kernels of an eager forward, the
blocks' norms, are NVRTC-only, so ``=triton`` puts them on their PyTorch twins: the third path,
``=on`` + the conv forced to NVRTC first, isolates the conv). Reported: median wall seconds per forward (synced)
and median GPU seconds (CUDA events) per path, and the per-round medians.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from statistics import median_high as median
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from networks_gpu import build, inputs, shell_structure  # noqa: E402
from trellis import fastpaths  # noqa: E402
from trellis.core import backends  # noqa: E402


def timed(fn):
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    t0 = time.perf_counter()
    start.record()
    fn()
    end.record()
    end.synchronize()
    return time.perf_counter() - t0, start.elapsed_time(end) / 1e3


@torch.no_grad()
def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--per-round", type=int, default=5)
    ap.add_argument("--voxels", type=int, default=20000)
    ap.add_argument("--out", default="conv_path_ab_gpu.json")
    args = ap.parse_args()
    backends.set_backend("sparse_conv", "torch")
    model = build("slat_flow_model", torch.device("cuda"))
    model.set_torso_dtype(torch.float16)
    structure = shell_structure(args.voxels)
    x, t, cond = inputs("slat_flow_model", structure, torch.device("cuda"))
    order = list(fastpaths.KERNELS["sparse_conv3d"])
    nvrtc_first = tuple(sorted(order, key=lambda k: k.backend != "nvrtc"))

    def use(path):
        if path == "on, conv NVRTC first":
            os.environ[fastpaths.ENV_VAR] = "on"
            fastpaths.KERNELS["sparse_conv3d"] = nvrtc_first
        else:
            os.environ[fastpaths.ENV_VAR] = path
            fastpaths.KERNELS["sparse_conv3d"] = tuple(order)

    paths = ["triton", "nvrtc", "on", "on, conv NVRTC first"]
    for p in paths:                                  # warm-up: compiles, neighbour maps
        use(p)
        model(x, t, cond)
    walls = {p: [] for p in paths}
    gpus = {p: [] for p in paths}
    rounds = []
    for _ in range(args.rounds):
        row = {}
        for p in paths:
            use(p)
            w, g = zip(*(timed(lambda: model(x, t, cond)) for _ in range(args.per_round)))
            walls[p] += w
            gpus[p] += g
            row[p] = round(median(w), 5)
        rounds.append(row)
        print(json.dumps(row), flush=True)
    use("on")
    info = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M"),
            "voxels": int(structure.coords.shape[0]), "rounds": rounds,
            "median_wall_s": {p: round(median(v), 5) for p, v in walls.items()},
            "median_gpu_s": {p: round(median(v), 5) for p, v in gpus.items()},
            "disabled": dict(fastpaths._disabled)}
    Path(args.out).write_text(json.dumps(info, indent=1))
    print(json.dumps({k: info[k] for k in ("median_wall_s", "median_gpu_s", "disabled")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
