"""GPU check and timing of the Gaussian rasteriser: fused Triton path vs the exact pure-PyTorch path.

    python benchmarks/gaussian_render_gpu.py [--n 640000] [--profile] [--frames 120]

* equality: max abs difference of color/alpha/depth between the Triton path (float64 and float32
  exponent) and the PyTorch path (the reference, `USE_TRITON = False`) for several random scenes and
  cameras at 512² and 1024², plus the small brute-force scenes of tests/test_gaussian_render.py on CUDA;
* timing: ms/frame at 512² and 1024² for both paths, and a 120-frame 512² turntable;
* ``--profile``: torch.profiler tables of one 512² frame of each path.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import trellis.renderers.gaussian_render as gr  # noqa: E402
import trellis.renderers.gaussian_render_triton as grt  # noqa: E402
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


def render(g, ext, intr, res, triton, wide=True, **kw):
    gr.USE_TRITON = triton
    if triton and not wide:
        orig = grt.composite
        grt.composite = lambda *a, **k: orig(*a, wide=False, **k)
        try:
            return gr.render_gaussians(g, ext, intr, res, **kw)
        finally:
            grt.composite = orig
    return gr.render_gaussians(g, ext, intr, res, **kw)


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
    proj = gr._project(g.get_xyz, g.get_scaling, g.get_rotation, g.get_opacity.reshape(-1), e, k, w, h,
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
    ap.add_argument("--torch-reps", type=int, default=3)
    ap.add_argument("--pixels", action="store_true", help="explain differing pixels with a float64 reference")
    args = ap.parse_args()
    dev = "cuda"
    print(torch.cuda.get_device_name(), "torch", torch.__version__, "triton available", grt.AVAILABLE, flush=True)
    ext, intr = orbit_cameras([0.3, 2.0, 4.4], [0.2, -0.5, 0.9], radius=2.0, fov=40.0, device=dev)
    g = scene(args.n, 0)

    if args.profile:
        from torch.profiler import ProfilerActivity, profile
        for tri in (False, True):
            try:
                render(g, ext[0], intr[0], 512, tri)
                torch.cuda.synchronize()
                with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                    render(g, ext[0], intr[0], 512, tri)
                    torch.cuda.synchronize()
                print(f"\n=== profile, triton={tri}, one 512² frame, {args.n} Gaussians ===")
                print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=22))
                print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=12))
            except Exception:
                traceback.print_exc()
        # stage split of the Triton path
        try:
            gr.USE_TRITON = True
            x = g.get_xyz
            e, k = ext[0], intr[0]
            with torch.no_grad():
                def stage_proj():
                    return gr._project(x, g.get_scaling, g.get_rotation, g.get_opacity.reshape(-1), e, k,
                                       512, 512, 0.8, 1.6, False, 0.1, True)
                proj = stage_proj()
                colors = (SH_C0 * g.get_features.reshape(-1, 3)[proj["idx"]] + 0.5).clamp(min=0)
                binned = gr._bin(proj, 512, 512, 16)
                bg = torch.zeros(3, device=dev)
                print("pairs at 512²:", binned[2].numel(), "kept Gaussians:", proj["idx"].numel(),
                      "max per tile:", binned[4].max().item())
                print("stage ms: project %.2f  bin %.2f  composite %.2f" % (
                    timeit(stage_proj, 10), timeit(lambda: gr._bin(proj, 512, 512, 16), 10),
                    timeit(lambda: grt.composite(proj, colors, *binned, 512, 512, 16, bg), 10)))
        except Exception:
            traceback.print_exc()

    print("\n=== equality: Triton path vs PyTorch path (max abs difference) ===", flush=True)
    worst = {"color": 0.0, "alpha": 0.0, "depth": 0.0}
    cases = [(0, "shell", 512, 0), (1, "shell", 512, 1), (2, "cube", 512, 2), (3, "shell", 1024, 1),
             (4, "cube", (300, 500), 0)]
    for seed, kind, res, cam in cases:
        gs = g if seed == 0 else scene(args.n, seed, kind=kind)
        bgc = (0.2, 0.5, 1.0) if seed % 2 else (0.0, 0.0, 0.0)
        ref = render(gs, ext[cam], intr[cam], res, False, bg_color=bgc)
        for wide in (True, False):
            try:
                out = render(gs, ext[cam], intr[cam], res, True, wide, bg_color=bgc)
                d = maxdiff(out, ref)
                if wide:
                    worst = {k_: max(worst[k_], d[k_]) for k_ in d}
                    if args.pixels:
                        check_pixels(gs, ext[cam], intr[cam], res, bgc, out, ref)
                npx = (ref["alpha"] > 0).float().mean().item()
                print(f"seed {seed} {kind:5s} res {res} cam {cam} wide={wide}: "
                      + " ".join(f"{k_} {v:.2e}" for k_, v in d.items())
                      + f"  (covered {npx:.2f}; color>1e-4 px {(out['color'] - ref['color']).abs().gt(1e-4).sum().item()})",
                      flush=True)
            except Exception:
                traceback.print_exc()
    print("worst (float64 exponent):", worst)

    # the brute-force scenes of the CPU tests, on CUDA (Triton path vs the per-pixel reference)
    try:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        import test_gaussian_render as tg
        worst_bf = 0.0
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
            out = render(gc.to("cuda"), e[0].cuda(), k[0].cuda(), res, True, bg_color=bgc, kernel_size=kern,
                         tile_size=tile)
            m = max(np.abs(out["color"].cpu().numpy() - c).max(), np.abs(out["alpha"].cpu().numpy() - a).max(),
                    np.abs(out["depth"].cpu().numpy() - d).max())
            worst_bf = max(worst_bf, m)
        print(f"brute-force test scenes on CUDA (Triton path): max abs difference {worst_bf:.2e}")
    except Exception:
        traceback.print_exc()

    print("\n=== timing (ms/frame, warm) ===", flush=True)
    for res in (512, 1024):
        t_torch = timeit(lambda: render(g, ext[0], intr[0], res, False), args.torch_reps)
        t_tri = timeit(lambda: render(g, ext[0], intr[0], res, True), 20)
        t_tri32 = timeit(lambda: render(g, ext[0], intr[0], res, True, False), 20)
        print(f"{res}²: pytorch {t_torch:.1f}  triton(f64 exponent) {t_tri:.2f}  triton(f32 exponent) {t_tri32:.2f}",
              flush=True)
    yaws = torch.linspace(0, 2 * math.pi, args.frames + 1)[:-1]
    e, k = orbit_cameras(yaws, torch.full_like(yaws, 0.25), radius=2.0, fov=40.0, device=dev)
    render(g, e[0], k[0], 512, True)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for i in range(args.frames):
        render(g, e[i], k[i], 512, True)["color"].clamp(0, 1)
    torch.cuda.synchronize()
    print(f"turntable {args.frames} frames at 512² (Triton): {time.perf_counter() - t:.2f} s")
    t = time.perf_counter()
    for i in range(50):
        render(g, e[i % len(e)], k[i % len(k)], 1024, True)
    torch.cuda.synchronize()
    print(f"50 views at 1024² (Triton): {time.perf_counter() - t:.2f} s")
    print("peak alloc GiB %.2f" % (torch.cuda.max_memory_allocated() / 2 ** 30))
    return 0


if __name__ == "__main__":
    sys.exit(main())
