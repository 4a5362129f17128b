"""Where the PyTorch compositing twin spends its time on the GPU (one 512² frame of the 640 k blob).

    python benchmarks/gaussian_twin_profile.py [--res 512] [--budgets 20,21,22,23]

Prints, per work budget, ms/frame, the number of groups and of evaluated candidate pairs, then a
torch.profiler table (CUDA time) of one frame at the default budget.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import gaussian_render_gpu as bench  # noqa: E402
import trellis.renderers.gaussian_render as gr  # noqa: E402
from trellis.renderers.cameras import orbit_cameras  # noqa: E402
from trellis.representations.gaussian import SH_C0  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--res", type=int, default=512)
    ap.add_argument("--n", type=int, default=640_000)
    ap.add_argument("--budgets", default="20,21,22,23")
    args = ap.parse_args()
    g = bench.scene(args.n, 0)
    ext, intr = orbit_cameras([0.3], [0.2], radius=2.0, fov=40.0, device="cuda")
    res = args.res
    p = gr.project(g.get_xyz, g.get_scaling, g.get_rotation, g.get_opacity.reshape(-1), ext[0], intr[0], res, res,
                   0.8, 1.6, False, 0.1, True)
    cols = (SH_C0 * g.get_features.reshape(-1, 3)[p["idx"]] + 0.5).clamp(min=0)
    bg = torch.zeros(3, device="cuda")
    stats = []
    orig = gr._composite_group

    def counted(pos, cnt, total, *a):
        stats.append(total)
        return orig(pos, cnt, total, *a)
    for b in [1 << int(x) for x in args.budgets.split(",")]:
        gr._composite_group = orig
        gr.composite_torch(p, cols, res, res, bg, work_budget=b)
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(5):
            gr.composite_torch(p, cols, res, res, bg, work_budget=b)
        torch.cuda.synchronize()
        ms = (time.perf_counter() - t) / 5 * 1e3
        stats.clear()
        gr._composite_group = counted
        gr.composite_torch(p, cols, res, res, bg, work_budget=b)
        print(f"budget 2^{b.bit_length() - 1}: {ms:.1f} ms, groups {len(stats)}, candidates {sum(stats) / 1e6:.1f} M",
              flush=True)
    gr._composite_group = orig
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        gr.composite_torch(p, cols, res, res, bg)
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=25))
    return 0


if __name__ == "__main__":
    sys.exit(main())
