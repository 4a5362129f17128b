"""GPU check and timing of the triangle rasteriser: one Triton launch vs the exact pure-PyTorch loop.

    python benchmarks/mesh_render_gpu.py [--faces-mesh full|sphere] [--frames 120] [--out FILE.json]

* equality: face ids, barycentrics and depth of the Triton path must be bit-identical to the PyTorch
  path (the reference, `USE_TRITON = False`) on random triangle soups (tiny to screen-filling, edges and
  vertices on pixel centres, both windings, depth ties), the CPU tests' scenes, a sphere and the
  full-size mesh (~1.26 M faces from the random-weight mesh decoder on the ~20 000-voxel structure);
  the GPU raster also equals the CPU one;
* timing: ms per view at 512², 1024² and 2048² for both paths; the 120-frame normal turntable of
  `render_utils.render_video` (SSAA 4 at 512² — what the app's preview uses for meshes).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import trellis.renderers.mesh_render as mr  # noqa: E402
from gaussian_render_gpu import timeit  # noqa: E402
from trellis.renderers.cameras import orbit_cameras, projection_opencv  # noqa: E402


def clip_of(vertices, ext, intr):
    proj = projection_opencv(intr, 1.0, 100.0) @ ext
    vh = torch.cat([vertices, torch.ones_like(vertices[:, :1])], -1)
    return vh @ proj.T


def both(clip, faces, h, w):
    mr.USE_TRITON = False
    ref = mr.rasterize(clip, faces, h, w)
    mr.USE_TRITON = True
    got = mr.rasterize(clip, faces, h, w)
    return ref, got


def same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


def soup(n, seed, scale, device):
    g = torch.Generator().manual_seed(seed)
    c = torch.rand(n, 1, 3, generator=g) - 0.5
    v = (c + scale * torch.randn(n, 3, 3, generator=g)).reshape(-1, 3)
    # snap a third of the vertices to a coarse grid: many edges/vertices on pixel centres and ties
    k = v.shape[0] // 3
    v[:k] = torch.round(v[:k] * 16) / 16
    return v.to(device), torch.arange(3 * n, device=device).reshape(n, 3)


def sphere(n_lat, n_lon, device):
    th = torch.linspace(0, math.pi, n_lat + 1)[1:-1]
    ph = torch.linspace(0, 2 * math.pi, n_lon + 1)[:-1]
    t, p = torch.meshgrid(th, ph, indexing="ij")
    v = torch.stack([t.sin() * p.cos(), t.sin() * p.sin(), t.cos()], -1).reshape(-1, 3) * 0.45
    v = torch.cat([torch.tensor([[0, 0, 0.45]]), v, torch.tensor([[0, 0, -0.45]])])
    f = []
    ring = lambda a, b: 1 + a * n_lon + b % n_lon  # noqa: E731
    for b in range(n_lon):
        f.append((0, ring(0, b), ring(0, b + 1)))
        f.append((len(v) - 1, ring(n_lat - 2, b + 1), ring(n_lat - 2, b)))
    for a in range(n_lat - 2):
        for b in range(n_lon):
            f += [(ring(a, b), ring(a + 1, b), ring(a + 1, b + 1)), (ring(a, b), ring(a + 1, b + 1), ring(a, b + 1))]
    return v.to(device), torch.tensor(f, device=device)


def full_mesh():
    from networks_gpu import build, shell_structure

    with torch.no_grad():
        dec = build("slat_decoder_mesh", "cuda")
        mesh = dec(shell_structure(20000))[0]
    del dec
    torch.cuda.empty_cache()
    return mesh


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--mesh", choices=["full", "sphere"], default="full")
    ap.add_argument("--out", default=None)
    ap.add_argument("--profile", action="store_true", help="torch.profiler tables of one normal-video frame")
    args = ap.parse_args()
    dev = "cuda"
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "equal": {}, "ms": {}}

    # ---- equality
    cams = orbit_cameras([0.3, 2.0, 4.1], [0.2, -0.4, 0.9], 2.0, 40.0, device=dev)
    cases = []
    for seed, (n, scale) in enumerate([(2000, 0.02), (300, 0.3), (20, 2.0), (5000, 0.005)]):
        cases.append((f"soup{seed}", *soup(n, seed, scale, dev)))
    cases.append(("sphere", *sphere(200, 400, dev)))
    full = None
    if args.mesh == "full":
        full = full_mesh()
        cases.append(("full", full.vertices.float(), full.faces.long()))
    ok = True
    for name, v, f in cases:
        for res in (64, 512, 1024) if name != "full" else (512, 2048):
            for c in range(cams[0].shape[0]):
                clip = clip_of(v, cams[0][c], cams[1][c])
                ref, got = both(clip, f, res, res)
                eq = same(ref, got)
                if name != "full" and res == 64:
                    cpu = mr.rasterize(clip.cpu(), f.cpu(), res, res)
                    eq = eq and same([x.cpu() for x in got], cpu)
                report["equal"][f"{name}@{res}/cam{c}"] = eq
                ok &= eq
                if not eq:
                    diff = (ref[0] != got[0]).sum().item()
                    print(f"MISMATCH {name} {res} cam{c}: {diff} face ids differ", flush=True)
    print("equality:", "all bit-identical" if ok else "MISMATCH", f"({len(report['equal'])} cases)", flush=True)

    # ---- timing on the largest mesh
    name, v, f = cases[-1]
    report["timing_mesh"] = {"name": name, "faces": int(f.shape[0])}
    clip = clip_of(v, cams[0][0], cams[1][0])
    for res in (512, 1024, 2048):
        for use in (True, False):
            mr.USE_TRITON = use
            reps = 10 if use else 2
            ms = timeit(lambda: mr.rasterize(clip, f, res, res), reps)
            ms_nb = timeit(lambda: mr.rasterize(clip, f, res, res, with_bary=False), reps)
            key = f"{'triton' if use else 'torch'}@{res}"
            report["ms"][key] = {"with_bary": round(ms, 2), "face_id_only": round(ms_nb, 2)}
            print(key, report["ms"][key], flush=True)
    mr.USE_TRITON = True

    from trellis.utils import render_utils

    from trellis.representations.mesh import MeshExtractResult

    mesh = full if full is not None else MeshExtractResult(v, f)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    out = render_utils.render_video(mesh, resolution=512, num_frames=args.frames, verbose=False)
    torch.cuda.synchronize()
    report["normal_video_s"] = round(time.perf_counter() - t0, 3)
    report["normal_video_peak_gib"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 3)
    report["normal_video_frames"] = len(out["normal"])
    print("normal video", args.frames, "frames:", report["normal_video_s"], "s, peak",
          report["normal_video_peak_gib"], "GiB", flush=True)
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        ext, intr = orbit_cameras([0.5], [0.3], 2.0, 40.0, device=dev)
        frame = lambda: mr.render_mesh(mesh, ext[0], intr[0], 512, ssaa=4, return_types=("mask", "normal"))  # noqa: E731
        frame()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                frame()
            torch.cuda.synchronize()
        print("=== 5 normal frames (512², SSAA 4), by CUDA time ===")
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=20))
        print("=== by CPU time ===")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
