"""The bake's fold of the views it prepares during the UV layout: one by one (``fold_view``) against in batches
(``fold_views``, as the bake does on a GPU), on the realistic nut's balanced mesh and its layout, 50 observation
views at 1024² (the app's settings).

    python benchmarks/fold_views_gpu.py [--views 50] [--runs 3]

Prints the seconds of each (median), a kernel profile of the one-by-one fold, and the largest difference of the
normal equations against one by one (a GPU's float atomics alone differ from run to run).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import realistic_objects as ro  # noqa: E402
from trellis.export.bake import least_squares  # noqa: E402
from trellis.tuning import tuned  # noqa: E402
from trellis.export.bake.observations import observation_cameras, render_observations, sharpening_scale  # noqa: E402
from trellis.export.cleanup import decimate  # noqa: E402
from trellis.export.uv.geometric import geometric_layout  # noqa: E402


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--views", type=int, default=50)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args(argv)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    res = 1024 if dev.type == "cuda" else 128
    arr = ro.build_arrays("nut", verbose=False)
    gauss = ro.make_gaussian({k[3:]: arr[k] for k in arr if k.startswith("gs_")}, dev)
    v, f = decimate.simplify_mesh(arr["vertices"], arr["faces"], 1 - 27396 / len(arr["faces"]))
    v, f = np.asarray(v), np.asarray(f)
    uv_v, uv_f, uv, _ = geometric_layout(v, f, 1024, 2)
    ext, intr = observation_cameras(args.views, device=dev)
    views = list(render_observations(gauss, ext, intr, res, gaussian_scale=sharpening_scale(gauss, res)))

    def prepared():
        acc = least_squares.TextureAccumulator(v, f, None, 1024, device=dev)
        out = [acc.prepare_view(c, m, ext[i], intr[i], depth=z) for i, (c, m, z) in enumerate(views)]
        acc.set_uvs(uv, uv_v, uv_f)
        sync()
        return acc, out

    def one_by_one():
        acc, out = prepared()
        t = time.perf_counter()
        for p in out:
            acc.fold_view(p)
        sync()
        return time.perf_counter() - t, acc

    def batched(pixels):
        least_squares.FOLD_BATCH_PIXELS = pixels
        acc, out = prepared()
        t = time.perf_counter()
        with tuned(fold_in_batches=True):
            acc.fold_views(out)
        sync()
        return time.perf_counter() - t, acc

    print("pixels per view:", [int(p["face"].numel()) for p in prepared()[1][:5]], "...")
    times, ref = [], None
    for _ in range(args.runs + 1):
        t, ref = one_by_one()
        times.append(t)
    print(f"one by one: {statistics.median(times[1:]):.4f} s")
    from torch.profiler import ProfilerActivity, profile
    acc, out = prepared()
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])) as prof:
        for p in out:
            acc.fold_view(p)
        sync()
    print(prof.key_averages().table(sort_by="cuda_time_total" if dev.type == "cuda" else "cpu_time_total",
                                    row_limit=8))
    per_view = max(int(p["face"].numel()) for p in out)
    for k in (5, 10, 25, args.views):
        times = []
        for _ in range(args.runs):
            t, acc = batched(k * per_view)
            times.append(t)
        diff = max(float((a - b).abs().max() / (b.abs().max() + 1e-30))
                   for a, b in ((acc.normal_eq, ref.normal_eq), (acc.rhs, ref.rhs), (acc.weight, ref.weight)))
        print(f"batches of up to {k} views: {statistics.median(times):.4f} s, largest difference {diff:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
