"""GPU check and timing of Gaussian splatting: the Triton kernel vs its PyTorch twin (fast paths off).

    python benchmarks/gaussian_render_gpu.py [--n 640000] [--profile] [--frames 120] [--out results.json]

* equality: max abs difference of color/alpha/depth between the Triton kernel and ``composite_torch``
  (the twin: what a Windows user without Triton gets) for several random scenes and cameras at 512²,
  1024² and 300×500, plus the small brute-force scenes of tests/trellis/renderers/test_gaussian_render.py on CUDA for both;
* timing: ms/frame at 512² and 1024² for both, the twin at several work budgets, a 120-frame 512²
  turntable and 50 views at 1024² (the bake's observations) for both;
* ``--profile``: torch.profiler tables of one 512² frame of each path.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import trellis.renderers.gaussian_render as gr  # noqa: E402
from trellis import fastpaths  # noqa: E402
from trellis.renderers.cameras import orbit_cameras  # noqa: E402
from trellis.representations.gaussian import SH_C0, Gaussian  # noqa: E402

AABB = [-0.5, -0.5, -0.5, 1.0, 1.0, 1.0]


def scene(n, seed, device="cuda", kind="shell"):
    """Random Gaussians: a noisy shell of radius ~0.35 with some interior ones (object-like) or a cube."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    if kind == "shell":
        d = torch.nn.functional.normalize(torch.randn(n, 3, generator=gen), dim=-1)
        r = 0.35 + 0.03 * torch.randn(n, 1, generator=gen)
        r[: n // 5] *= torch.rand(n // 5, 1, generator=gen)
        xyz = d * r
    else:
        xyz = torch.rand(n, 3, generator=gen) - 0.5
    scales = torch.exp(torch.empty(n, 3).uniform_(math.log(0.002), math.log(0.02), generator=gen))
    rots = torch.nn.functional.normalize(torch.randn(n, 4, generator=gen), dim=-1)
    opac = torch.empty(n, 1).uniform_(0.02, 0.999, generator=gen)
    cols = torch.empty(n, 3).uniform_(-0.1, 1.1, generator=gen)
    g = Gaussian(AABB, mininum_kernel_size=0.0)
    g.from_xyz(xyz)
    g.from_scaling(scales)
    g.from_rotation(rots)
    g.from_opacity(opac)
    g.from_features(((cols - 0.5) / SH_C0).reshape(-1, 1, 3))
    return g.to(device)


MODES = {True: "triton", "nvrtc": "nvrtc", False: "off"}   # TRELLIS_FAST_PATHS per mode


def render(g, ext, intr, res, fast, **kw):
    """fast: True = the Triton kernel, "nvrtc" = the NVRTC kernel, False = the PyTorch twin."""
    old = os.environ.get(fastpaths.ENV_VAR)
    os.environ[fastpaths.ENV_VAR] = MODES[fast]
    try:
        return gr.render_gaussians(g, ext, intr, res, **kw)
    finally:
        if old is None:
            os.environ.pop(fastpaths.ENV_VAR, None)
        else:
            os.environ[fastpaths.ENV_VAR] = old


def maxdiff(a, b):
    return {k: (a[k] - b[k]).abs().max().item() for k in ("color", "alpha", "depth")}


def timeit(fn, reps):
    fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / reps * 1e3


def check_pixels(g, e, k, res, bgc, out_t, out_p, limit=6):
    """Where the paths differ by > 1e-4: both against a sequential float64 compositing of the same
    (float32) projected splats, per pixel over every Gaussian (no tiles)."""
    h, w = (res, res) if isinstance(res, int) else res
    proj = gr.project(g.get_xyz, g.get_scaling, g.get_rotation, g.get_opacity.reshape(-1), e, k, w, h,
                       0.8, 1.6, False, 0.1, True)
    cols = (SH_C0 * g.get_features.reshape(-1, 3)[proj["idx"]] + 0.5).clamp(min=0).double()
    u, v = proj["u"].double(), proj["v"].double()
    ca, cb, cc = proj["conic"].double().unbind(-1)
    logop = torch.log(proj["opacity"]).double()
    order = torch.argsort(proj["z"], stable=True)
    diff = (out_t["color"] - out_p["color"]).abs().amax(0)
    bg = np.asarray(bgc, dtype=np.float64)
    for r, c in (diff > 1e-4).nonzero().tolist()[:limit]:
        dx, dy = c + 0.5 - u[order], r + 0.5 - v[order]
        a = torch.exp(logop[order] - 0.5 * (ca[order] * dx * dx + cc[order] * dy * dy) - cb[order] * dx * dy)
        a = a.clamp(max=0.99)
        sel = (a >= 1 / 255).nonzero().squeeze(-1)
        al, co = a[sel].cpu().numpy(), cols[order][sel].cpu().numpy()
        t, acc = 1.0, np.zeros(3)
        for ai, ci in zip(al, co):
            tn = t * (1 - ai)
            if tn < 1e-4:
                break
            acc += ai * t * ci
            t = tn
        ref = acc + t * bg
        ep = np.abs(out_p["color"][:, r, c].double().cpu().numpy() - ref).max()
        et = np.abs(out_t["color"][:, r, c].double().cpu().numpy() - ref).max()
        print(f"    pixel ({r},{c}): |pytorch - f64 seq| {ep:.2e}  |triton - f64 seq| {et:.2e}  (T {t:.2e})")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=640_000)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--pixels", action="store_true", help="explain differing pixels with a float64 reference")
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args()
    dev = "cuda"
    res_json = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "n": args.n,
                "fast_paths": fastpaths.describe(dev)}
    print(res_json, flush=True)
    ext, intr = orbit_cameras([0.3, 2.0, 4.4], [0.2, -0.5, 0.9], radius=2.0, fov=40.0, device=dev)
    g = scene(args.n, 0)

    if args.profile:
        from torch.profiler import ProfilerActivity, profile
        for fast in (False, True):
            try:
                render(g, ext[0], intr[0], 512, fast)
                torch.cuda.synchronize()
                with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                    render(g, ext[0], intr[0], 512, fast)
                    torch.cuda.synchronize()
                print(f"\n=== profile, fast={fast}, one 512² frame, {args.n} Gaussians ===")
                print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=22))
                print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=12))
            except Exception:
                traceback.print_exc()

    print("\n=== equality: Triton kernel vs PyTorch twin (max abs difference) ===", flush=True)
    worst = {"color": 0.0, "alpha": 0.0, "depth": 0.0}
    worst_nv = dict(worst)
    over = 0
    cases = [(0, "shell", 512, 0), (1, "shell", 512, 1), (2, "cube", 512, 2), (3, "shell", 1024, 1),
             (4, "cube", (300, 500), 0)]
    for seed, kind, res, cam in cases:
        gs = g if seed == 0 else scene(args.n, seed, kind=kind)
        bgc = (0.2, 0.5, 1.0) if seed % 2 else (0.0, 0.0, 0.0)
        try:
            ref = render(gs, ext[cam], intr[cam], res, False, bg_color=bgc)
            out = render(gs, ext[cam], intr[cam], res, True, bg_color=bgc)
            d_nv = maxdiff(render(gs, ext[cam], intr[cam], res, "nvrtc", bg_color=bgc), ref)
            worst_nv = {k_: max(worst_nv[k_], d_nv[k_]) for k_ in d_nv}
            d = maxdiff(out, ref)
            worst = {k_: max(worst[k_], d[k_]) for k_ in d}
            n_over = (out["color"] - ref["color"]).abs().gt(1e-4).sum().item()
            over += n_over
            if args.pixels:
                check_pixels(gs, ext[cam], intr[cam], res, bgc, out, ref)
            npx = (ref["alpha"] > 0).float().mean().item()
            print(f"seed {seed} {kind:5s} res {res} cam {cam}: "
                  + " ".join(f"{k_} {v:.2e}" for k_, v in d.items())
                  + f"  (covered {npx:.2f}; color>1e-4 px {n_over})", flush=True)
        except Exception:
            traceback.print_exc()
    print("worst:", worst, "pixels with colour difference > 1e-4:", over)
    print("worst NVRTC kernel vs twin:", worst_nv)
    res_json["equality"] = {"worst": worst, "pixels_over_1e-4": over, "worst_nvrtc": worst_nv}

    # the brute-force scenes of the CPU tests, on CUDA (both paths vs the per-pixel float64 reference)
    try:
        from tests.helpers import splats as tg
        worst_bf = {True: 0.0, "nvrtc": 0.0, False: 0.0}
        for seed, res, yaw, pitch, bgc, kern, tile in [(0, 24, 0.3, 0.2, (0, 0, 0), 0.1, 16),
                                                        (1, 24, 2.0, -0.4, (0.2, 0.5, 1.0), 0.1, 16),
                                                        (2, 21, 4.0, 0.9, (1, 1, 1), 0.3, 8),
                                                        (3, 24, 5.5, 0.0, (0, 0, 0), 0.0, 16),
                                                        (4, 24, 1.2, 0.5, (0, 0, 0), 0.1, 4)]:
            rng = np.random.default_rng(seed)
            e, k = orbit_cameras([yaw], [pitch], radius=2.0, fov=40.0)
            eye = -e[0, :3, :3].T.double().numpy() @ e[0, :3, 3].double().numpy()
            gc = tg.random_scene(rng, eye=eye)
            c, a, d = tg.render_brute_force(gc, e[0], k[0], res, res, bg=bgc, kernel_size=kern)
            for fast in (True, "nvrtc", False):
                out = render(gc.to("cuda"), e[0].cuda(), k[0].cuda(), res, fast, bg_color=bgc, kernel_size=kern,
                             tile_size=tile)
                m = max(np.abs(out["color"].cpu().numpy() - c).max(), np.abs(out["alpha"].cpu().numpy() - a).max(),
                        np.abs(out["depth"].cpu().numpy() - d).max())
                worst_bf[fast] = max(worst_bf[fast], m)
        print(f"brute-force test scenes on CUDA: max abs difference Triton {worst_bf[True]:.2e}, "
              f"NVRTC {worst_bf['nvrtc']:.2e}, twin {worst_bf[False]:.2e}")
        res_json["brute_force"] = {"triton": worst_bf[True], "nvrtc": worst_bf["nvrtc"], "twin": worst_bf[False]}
    except Exception:
        traceback.print_exc()

    print("\n=== timing (ms/frame, warm) ===", flush=True)
    res_json["ms_per_frame"] = {}
    for res in (512, 1024):
        t_twin = timeit(lambda: render(g, ext[0], intr[0], res, False), args.reps)
        t_tri = timeit(lambda: render(g, ext[0], intr[0], res, True), args.reps)
        t_nv = timeit(lambda: render(g, ext[0], intr[0], res, "nvrtc"), args.reps)
        sweep = {b: timeit(lambda: render(g, ext[0], intr[0], res, False, work_budget=b), max(2, args.reps // 3))
                 for b in (1 << 21, 1 << 23, 1 << 24)}
        print(f"{res}²: Triton {t_tri:.2f}  NVRTC {t_nv:.2f}  fast paths off (twin) {t_twin:.1f}  twin by work budget "
              + " ".join(f"2^{int(math.log2(b))}: {t:.1f}" for b, t in sweep.items()), flush=True)
        res_json["ms_per_frame"][res] = {"triton": t_tri, "nvrtc": t_nv, "twin": t_twin,
                                         "twin_by_budget": {str(b): t for b, t in sweep.items()}}
    yaws = torch.linspace(0, 2 * math.pi, args.frames + 1)[:-1]
    e, k = orbit_cameras(yaws, torch.full_like(yaws, 0.25), radius=2.0, fov=40.0, device=dev)
    for fast in (True, "nvrtc", False):
        label = {True: "Triton", "nvrtc": "NVRTC", False: "fast paths off"}[fast]
        render(g, e[0], k[0], 512, fast)
        torch.cuda.synchronize()
        t = time.perf_counter()
        for i in range(args.frames):
            render(g, e[i], k[i], 512, fast)["color"].clamp(0, 1)
        torch.cuda.synchronize()
        t_turn = time.perf_counter() - t
        t = time.perf_counter()
        for i in range(50):
            render(g, e[i % len(e)], k[i % len(k)], 1024, fast)
        torch.cuda.synchronize()
        t_obs = time.perf_counter() - t
        print(f"{label}: turntable {args.frames} frames at 512² {t_turn:.2f} s; 50 views at 1024² {t_obs:.2f} s")
        res_json[f"turntable_s_{MODES[fast]}"] = t_turn
        res_json[f"views50_1024_s_{MODES[fast]}"] = t_obs
    res_json["peak_alloc_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30
    print("peak alloc GiB %.2f" % res_json["peak_alloc_gib"])
    if args.out:
        Path(args.out).write_text(json.dumps(res_json, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
