"""Check and timing of the triangle rasteriser: a fast kernel vs its PyTorch twin (fast paths off), on the
GPU (and, with ``--quick``, a small version anywhere, e.g. on the CPU).

    python benchmarks/mesh_render_gpu.py [--mesh full|sphere] [--frames 120] [--views 1000] [--out FILE.json]
    python benchmarks/mesh_render_gpu.py --quick --device cpu     # small sizes: a smoke run

The two modes are switched with ``trellis.fastpaths.set_enabled(True/False)``: "fast kernel" is the first
usable backend — Triton where it is installed (Linux), else the NVRTC kernel (Windows without Triton,
Pascal); ``TRELLIS_FAST_PATHS=nvrtc`` picks NVRTC explicitly — and its name is printed; "fast paths off"
runs ``mesh_render.raster_keys_torch`` (what a machine gets when no kernel can run). On a CPU both
columns run the twin.

* equality: face ids, barycentrics and depth of the two modes must be bit-identical on random triangle
  soups (tiny to screen-filling, edges and vertices on pixel centres, both windings, depth ties), a sphere
  and the full-size mesh (~1.26 M faces from the random-weight mesh decoder on the ~20 000-voxel
  structure); the GPU raster also equals the CPU one on the small cases; ``face_visibility`` gives the
  same fractions in both modes;
* timing: ms per view at 512², 1024² and 2048² (with and without the barycentric pass);
  ``trellis.export.cleanup.visibility.face_visibility`` (``--views`` views at 1024², the hole-filling default is
  1000) on a bumpy sphere with an inner shell (~49 k faces, what a decimated decoder mesh looks like to
  the visibility pass); the 120-frame normal turntable of ``render_utils.render_video`` (SSAA 4 at 512²).

Prints a markdown table; ``--out`` writes everything as JSON.
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
from trellis import fastpaths  # noqa: E402
from trellis.renderers.cameras import orbit_cameras, projection_opencv  # noqa: E402

MODES = (("triton", True, "fast kernel"), ("off", False, "fast paths off (PyTorch twin)"))


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timeit(fn, reps, device):
    """ms per call: one warm-up call, then the mean of ``reps``."""
    fn()
    sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    sync(device)
    return (time.perf_counter() - t) / reps * 1e3


def clip_of(vertices, ext, intr):
    proj = projection_opencv(intr, 1.0, 100.0) @ ext
    vh = torch.cat([vertices, torch.ones_like(vertices[:, :1])], -1)
    return vh @ proj.T


def in_mode(flag, fn):
    fastpaths.set_enabled(flag)
    try:
        return fn()
    finally:
        fastpaths.set_enabled(None)


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


def sphere(n_lat, n_lon, device, radius=0.45, bumps=0.0, inward=False):
    """UV sphere (poles: fans of slivers); ``bumps`` modulates the radius; ``inward`` flips the winding."""
    th = torch.linspace(0, math.pi, n_lat + 1)[1:-1]
    ph = torch.linspace(0, 2 * math.pi, n_lon + 1)[:-1]
    t, p = torch.meshgrid(th, ph, indexing="ij")
    r = radius * (1 + bumps * torch.sin(5 * t) * torch.cos(7 * p) + 0.5 * bumps * torch.cos(11 * t + 3 * p))
    v = (torch.stack([t.sin() * p.cos(), t.sin() * p.sin(), t.cos()], -1) * r[..., None]).reshape(-1, 3)
    v = torch.cat([torch.tensor([[0, 0, radius]]), v, torch.tensor([[0, 0, -radius]])])
    f = []
    ring = lambda a, b: 1 + a * n_lon + b % n_lon  # noqa: E731
    for b in range(n_lon):
        f.append((0, ring(0, b), ring(0, b + 1)))
        f.append((len(v) - 1, ring(n_lat - 2, b + 1), ring(n_lat - 2, b)))
    for a in range(n_lat - 2):
        for b in range(n_lon):
            f += [(ring(a, b), ring(a + 1, b), ring(a + 1, b + 1)), (ring(a, b), ring(a + 1, b + 1), ring(a, b + 1))]
    f = torch.tensor(f)
    if inward:
        f = f.flip(1)
    return v.to(device), f.to(device)


def shell_object(n_lat, n_lon, device):
    """A bumpy closed surface with an inner shell facing inwards (a decoder mesh's two sheets)."""
    vo, fo = sphere(n_lat, n_lon, device, 0.45, bumps=0.06)
    vi, fi = sphere(n_lat // 2, n_lon // 2, device, 0.40, bumps=0.06, inward=True)
    return torch.cat([vo, vi]), torch.cat([fo, fi + vo.shape[0]])


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
    ap.add_argument("--views", type=int, default=1000, help="face_visibility views (at --vis-res)")
    ap.add_argument("--vis-res", type=int, default=1024)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true",
                    help="small sizes (sphere mesh, 64²-512², 20 visibility views at 256², 4 frames): a smoke run")
    ap.add_argument("--out", default=None)
    ap.add_argument("--profile", action="store_true", help="torch.profiler tables of one normal-video frame")
    args = ap.parse_args()
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    if args.quick:
        args.mesh, args.frames, args.views, args.vis_res = "sphere", 4, 20, 256
    if args.mesh == "full" and not cuda:
        args.mesh = "sphere"
    res_eq = (64, 256) if args.quick else (64, 512, 1024)
    res_time = (128, 256, 512) if args.quick else (512, 1024, 2048)
    report = {"device": torch.cuda.get_device_name(dev) if cuda else "cpu", "torch": torch.__version__,
              "fast_paths_on_device": fastpaths.describe(dev), "quick": args.quick, "equal": {}, "ms": {}}
    print("device:", report["device"], "|", report["fast_paths_on_device"], flush=True)

    # ---- equality of the two modes
    cams = orbit_cameras([0.3, 2.0, 4.1], [0.2, -0.4, 0.9], 2.0, 40.0, device=dev)
    cases = []
    for seed, (n, scale) in enumerate([(2000, 0.02), (300, 0.3), (20, 2.0), (5000, 0.005)]):
        cases.append((f"soup{seed}", *soup(n, seed, scale, dev)))
    cases.append(("sphere", *(sphere(60, 120, dev) if args.quick else sphere(200, 400, dev))))
    full = None
    if args.mesh == "full":
        full = full_mesh()
        cases.append(("full", full.vertices.float(), full.faces.long()))
    ok = True
    for name, v, f in cases:
        for res in res_eq if name != "full" else (512, 2048):
            for c in range(cams[0].shape[0]):
                clip = clip_of(v, cams[0][c], cams[1][c])
                ref = in_mode(False, lambda: mr.rasterize(clip, f, res, res))
                got = in_mode(True, lambda: mr.rasterize(clip, f, res, res))
                eq = same(ref, got)
                if cuda and name != "full" and res == 64:
                    cpu = mr.rasterize(clip.cpu(), f.cpu(), res, res)
                    eq = eq and same([x.cpu() for x in got], cpu)
                report["equal"][f"{name}@{res}/cam{c}"] = eq
                ok &= eq
                if not eq:
                    diff = (ref[0] != got[0]).sum().item()
                    print(f"MISMATCH {name} {res} cam{c}: {diff} face ids differ", flush=True)
    print("equality:", "all bit-identical" if ok else "MISMATCH", f"({len(report['equal'])} cases)", flush=True)

    # ---- per-view timing on the largest mesh
    name, v, f = cases[-1]
    report["timing_mesh"] = {"name": name, "faces": int(f.shape[0])}
    clip = clip_of(v, cams[0][0], cams[1][0])
    for res in res_time:
        for mode, flag, _ in MODES:
            reps = (10 if flag else 3) if cuda else 2
            ms = in_mode(flag, lambda: timeit(lambda: mr.rasterize(clip, f, res, res), reps, dev))
            ms_nb = in_mode(flag, lambda: timeit(lambda: mr.rasterize(clip, f, res, res, with_bary=False), reps, dev))
            report["ms"][f"{mode}@{res}"] = {"with_bary": round(ms, 2), "face_id_only": round(ms_nb, 2)}
            print(f"{mode}@{res}", report["ms"][f"{mode}@{res}"], flush=True)

    # ---- face visibility (hole filling): many views as atlas images, ~1 M triangles per call
    from trellis.export.cleanup.visibility import face_visibility

    sv, sf = shell_object(30, 60, dev) if args.quick else shell_object(100, 200, dev)
    report["visibility"] = {"faces": int(sf.shape[0]), "views": args.views, "resolution": args.vis_res}
    vis = {}
    for mode, flag, _ in MODES:
        def run():
            return face_visibility(sv, sf, num_views=args.views, resolution=args.vis_res, device=dev)
        in_mode(flag, run)  # warm-up (Triton compile, allocator)
        sync(dev)
        t0 = time.perf_counter()
        vis[mode] = in_mode(flag, run)
        sync(dev)
        report["visibility"][f"{mode}_s"] = round(time.perf_counter() - t0, 3)
        print(f"face_visibility {mode}: {report['visibility'][f'{mode}_s']} s", flush=True)
    vis_eq = bool((vis["triton"] == vis["off"]).all())
    report["visibility"]["equal"] = vis_eq
    report["visibility"]["visible_fraction_mean"] = float(vis["off"].mean())
    ok &= vis_eq

    # ---- normal turntable (SSAA 4 at 512², the app's preview of meshes)
    from trellis.representations.mesh import MeshExtractResult
    from trellis.utils import render_utils

    mesh = full if full is not None else MeshExtractResult(v, f)
    for mode, flag, _ in MODES:
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        sync(dev)
        t0 = time.perf_counter()
        out = in_mode(flag, lambda: render_utils.render_video(mesh, resolution=512, num_frames=args.frames,
                                                              verbose=False))
        sync(dev)
        report[f"normal_video_{mode}_s"] = round(time.perf_counter() - t0, 3)
        if cuda:
            report[f"normal_video_{mode}_peak_gib"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 3)
        print(f"normal video {mode}:", len(out["normal"]), "frames,", report[f"normal_video_{mode}_s"], "s",
              flush=True)

    # ---- the table
    rows = [f"| work ({report['device']}, {name} mesh, {report['timing_mesh']['faces']} faces) | "
            + " | ".join(label for _, _, label in MODES) + " |", "|---|---|---|"]
    for res in res_time:
        for kind, label in (("with_bary", "rasterize"), ("face_id_only", "rasterize, face ids only")):
            rows.append(f"| {label}, {res}², ms per view | "
                        + " | ".join(f"{report['ms'][f'{m}@{res}'][kind]:.2f}" for m, _, _ in MODES) + " |")
    rows.append(f"| face_visibility, {args.views} views at {args.vis_res}², {report['visibility']['faces']} faces, s | "
                + " | ".join(f"{report['visibility'][f'{m}_s']:.2f}" for m, _, _ in MODES) + " |")
    rows.append(f"| normal turntable, {args.frames} frames (512², SSAA 4), s | "
                + " | ".join(f"{report[f'normal_video_{m}_s']:.2f}" for m, _, _ in MODES) + " |")
    rows.append(f"| bit-identical ({len(report['equal'])} raster cases + visibility) | "
                + ("yes" if ok else "**NO**") + " | |")
    table = "\n".join(rows)
    report["table"] = table
    print()
    print(table, flush=True)

    if args.profile and cuda:
        from torch.profiler import ProfilerActivity, profile

        ext, intr = orbit_cameras([0.5], [0.3], 2.0, 40.0, device=dev)
        for mode, flag, _ in MODES:
            def frame():
                return mr.render_mesh(mesh, ext[0], intr[0], 512, ssaa=4, return_types=("mask", "normal"))
            in_mode(flag, frame)
            torch.cuda.synchronize()
            fastpaths.set_enabled(flag)
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                for _ in range(5):
                    frame()
                torch.cuda.synchronize()
            fastpaths.set_enabled(None)
            print(f"=== {mode}: 5 normal frames (512², SSAA 4), by CUDA time ===")
            print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=20))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
