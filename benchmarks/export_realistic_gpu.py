"""``to_glb`` on realistic objects at the app's balanced preset: seconds per stage, peak memory, quality.

    python benchmarks/export_realistic_gpu.py [--shapes bunny nut] [--out export_realistic.json]
    TRELLIS_FAST_PATHS=off python benchmarks/export_realistic_gpu.py --out export_realistic_off.json
    python benchmarks/export_realistic_gpu.py --device cpu --quick        # reduced size, a few minutes

The objects come from ``benchmarks/realistic_objects.py`` (real scanned / CAD shapes turned into a
decoder-like 256^3 thin-shell mesh with its inner sheet and ~500 k surface Gaussians carrying a known
sharp-edged pattern; built once and cached). ``to_glb`` gets the arguments the desktop app passes at the
balanced preset (``desktop.settings.GenerationSettings.from_preset("balanced")``: simplify, hole filling,
texture size, bake mode, bake views and their resolution). Per shape: one warm-up run (``--warmup``),
then ``--runs`` timed runs; the median total, the median of each stage from ``mesh.export_info``, the
peak CUDA memory (allocated and reserved, reset before each timed run) and the texture quality of the
last GLB against the truth at held-out views (``realistic_objects.glb_quality``: PSNR inside the object,
the ceiling — the same mesh and UV atlas with ideal texels, ``realistic_objects.ideal_texture`` —,
mask IoU against the decoder mesh, and the Gaussians' own PSNR on the same pixels: the bake's ceiling
from its input). The column label is ``trellis.fastpaths.describe(device)``; run
once as is and once with ``TRELLIS_FAST_PATHS=off`` for the two columns of the benchmark tables.

``--quick`` (a smoke run for the CPU, a few minutes on 2 cores): a 64^3 mesh grid, 20 k Gaussians, no
warm-up, one timed run, quality from 4 views at 256^2, and lighter export settings: 8 bake views at
384^2, texture 512 and no hole filling (on a CPU the preset's 1000-view hidden-face removal alone took
~10 min for a 150 k-face mesh on a busy 2-core box, and the 50 bake views at 1024^2 several more; issue
11 §4). Every export setting can be set by hand (``--nviews``, ``--render-resolution``,
``--texture-size``, ``--fill-holes``); the JSON records what ran.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from provenance import source_commit  # noqa: E402
from trellis.export.uv.stats import atlas_stats, uv_coverage  # noqa: E402

from realistic_objects import (DEFAULT_SHAPES, SHAPES, SOURCES, build_arrays, effective_blur,  # noqa: E402
                               glb_arrays, glb_quality, ideal_texture, realistic_object)


def balanced_to_glb_kwargs() -> dict:
    """The keyword arguments the app's job runner gives ``to_glb`` at the balanced preset."""
    from desktop.settings import GenerationSettings

    s = GenerationSettings.from_preset("balanced")
    return dict(simplify=s.simplify, fill_holes=s.fill_holes, texture_size=s.texture_size,
                bake_mode=s.bake_mode, nviews=s.bake_views, render_resolution=s.bake_resolution)


def path_label(device) -> tuple:
    try:
        from trellis import fastpaths
    except ImportError as err:      # before trellis/fastpaths.py exists
        return f"unknown (trellis.fastpaths not importable: {err})", None
    return fastpaths.describe(device), fastpaths.status(device)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


_UV_INPUT = []


def _record_uv_input():
    """Wrap ``uv.unwrap.unwrap_uv`` (``bake_textured_mesh`` looks it up at each call) so that the mesh it is
    given is kept in ``_UV_INPUT`` (a copy: vertices float32, faces int64)."""
    from trellis.export.uv import unwrap as uv_unwrap
    inner = uv_unwrap.unwrap_uv

    def recording(vertices, faces, *a, **k):
        _UV_INPUT.append((np.array(vertices, np.float32), np.array(faces, np.int64)))
        return inner(vertices, faces, *a, **k)

    uv_unwrap.unwrap_uv = recording


def run_to_glb(gaussian, mesh, kwargs, device):
    from trellis.utils import postprocessing_utils

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    t0 = time.perf_counter()
    glb = postprocessing_utils.to_glb(gaussian, mesh, verbose=False, **kwargs)
    sync(device)
    sec = time.perf_counter() - t0
    mem = {}
    if device.type == "cuda":
        mem = {"peak_alloc_GiB": round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 3),
               "peak_reserved_GiB": round(torch.cuda.max_memory_reserved(device) / 2 ** 30, 3)}
    return glb, sec, mem


def process_peak_rss_gib() -> float:
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kib / 2 ** 20, 3)


def markdown(info: dict) -> str:
    stages = []
    for row in info["rows"].values():
        for k in row["stages_median_s"]:
            if k not in stages:
                stages.append(k)
    head = (f"{info['device_name']}, torch {info['torch']}, commit {info['commit']}, {info['date']}; "
            f"path: **{info['path']}**; Gaussians' colours: {info.get('colors', 'sampled')}; to_glb {json.dumps(info['to_glb_kwargs'])}; "
            f"{info['warmup']} warm-up + {info['runs']} timed run(s), median")
    cols = (["shape", "input faces (outer + inner)", "Gaussians", "GLB faces", "to_glb s"] + [f"{s} s" for s in stages]
            + ["peak alloc / reserved GiB", "PSNR dB (held-out)", "ceiling dB (ideal texels, same atlas)",
               "SSIM (ceiling)", "blur texels", "seam-band error ratio", "texel use", "UV method",
               "Gaussians' PSNR dB", "mask IoU"])
    lines = [head, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for name, r in info["rows"].items():
        mem = (f"{r['peak_alloc_GiB']:.2f} / {r['peak_reserved_GiB']:.2f}" if "peak_alloc_GiB" in r
               else f"RSS {info['process_peak_rss_GiB']:.2f} (process)")
        cells = [name, f"{r['input_faces']} ({r['outer_faces']} + {r['input_faces'] - r['outer_faces']})",
                 str(r["gaussians"]), str(r["glb_faces"]), f"{r['median_s']:.2f}"]
        cells += [f"{r['stages_median_s'].get(s, float('nan')):.2f}" for s in stages]
        q = r["quality"]
        cells += [mem, f"{q['psnr_db']:.2f}", f"{q.get('ceiling_psnr_db', float('nan')):.2f}",
                  f"{q.get('ssim', float('nan')):.3f} ({q.get('ceiling_ssim', float('nan')):.3f})",
                  f"{q.get('blur', {}).get('sigma_texels', float('nan')):.2f}",
                  f"{q.get('seam_band_error_ratio', float('nan')):.2f}",
                  f"{q.get('texel_use', float('nan')):.3f}", str(r.get("uv_method")),
                  f"{r['quality'].get('gaussian_psnr_db', float('nan')):.2f}",
                  f"{r['quality'].get('mask_iou', float('nan')):.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


@torch.no_grad()
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", nargs="+", default=list(DEFAULT_SHAPES), choices=SHAPES)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="reduced size for the CPU (see the module doc)")
    ap.add_argument("--resolution", type=int, default=None, help="mesh grid (default 256; quick 64)")
    ap.add_argument("--gaussians", type=int, default=None, help="default 500000; quick 20000")
    ap.add_argument("--warmup", type=int, default=None, help="default 1; quick 0")
    ap.add_argument("--runs", type=int, default=None, help="timed runs (default 3; quick 1)")
    ap.add_argument("--quality-views", type=int, default=None, help="default 8; quick 4")
    ap.add_argument("--quality-resolution", type=int, default=None, help="default 512; quick 256")
    ap.add_argument("--nviews", type=int, default=None, help="override the preset's bake views")
    ap.add_argument("--render-resolution", type=int, default=None, help="override the preset's bake resolution")
    ap.add_argument("--texture-size", type=int, default=None, help="override the preset's texture size")
    ap.add_argument("--fill-holes", choices=("on", "off"), default=None, help="override the preset's hole filling")
    ap.add_argument("--cache", default=None, help="object cache folder (default $TRELLIS_BENCH_CACHE or .cache/)")
    ap.add_argument("--colors", choices=("sampled", "fitted"), default="sampled",
                    help="the Gaussians' colours: the truth at their centres (default), or fitted to renders of the "
                         "truth as a trained decoder's (realistic_objects.fit_colors; built once and cached)")
    ap.add_argument("--out", default="export_realistic.json")
    ap.add_argument("--save-uv-input", default=None, metavar="DIR",
                    help="write the mesh each shape's last to_glb gave the UV unwrap (DIR/uv_input_<shape>.npz: "
                         "vertices, faces), for CPU studies of the atlas on the exact mesh the product unwraps")
    args = ap.parse_args(argv)
    if args.save_uv_input:
        _record_uv_input()
    q = args.quick
    pick = lambda v, full, quick: v if v is not None else (quick if q else full)  # noqa: E731
    res, n_gs = pick(args.resolution, 256, 64), pick(args.gaussians, 500_000, 20_000)
    warmup, runs = pick(args.warmup, 1, 0), pick(args.runs, 3, 1)
    qviews, qres = pick(args.quality_views, 8, 4), pick(args.quality_resolution, 512, 256)
    device = torch.device(args.device)
    kwargs = balanced_to_glb_kwargs()
    if q:
        kwargs.update(nviews=8, render_resolution=384, texture_size=512, fill_holes=False)
    fill = None if args.fill_holes is None else args.fill_holes == "on"
    for key, val in (("nviews", args.nviews), ("render_resolution", args.render_resolution),
                     ("texture_size", args.texture_size), ("fill_holes", fill)):
        if val is not None:
            kwargs[key] = val
    label, status = path_label(device)
    info = {"device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else
            f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"{torch.get_num_threads()} torch threads)",
            "device": str(device), "path": label, "fastpaths_status": status,
            "TRELLIS_FAST_PATHS": os.environ.get("TRELLIS_FAST_PATHS"), "torch": torch.__version__,
            "commit": source_commit(), "date": time.strftime("%Y-%m-%d"), "quick": q, "mesh_resolution": res,
            "gaussians": n_gs, "colors": args.colors, "warmup": warmup, "runs": runs, "to_glb_kwargs": kwargs,
            "quality": {"views": qviews, "resolution": qres}, "rows": {}}
    print(json.dumps({k: v for k, v in info.items() if k != "rows"}, default=str), flush=True)
    for name in args.shapes:
        t0 = time.perf_counter()
        gaussian, mesh = realistic_object(name, device, resolution=res, num_gaussians=n_gs, cache=args.cache,
                                          colors=args.colors)
        outer = int(build_arrays(name, res, n_gs, cache=args.cache, verbose=False)["outer"].sum())
        load_s = time.perf_counter() - t0
        for _ in range(warmup):
            run_to_glb(gaussian, mesh, kwargs, device)
        secs, stages, cleanup_steps, mems, glb = [], [], [], [], None
        for i in range(runs):
            del glb
            glb, sec, mem = run_to_glb(gaussian, mesh, kwargs, device)
            secs.append(sec)
            stages.append(dict(glb.export_info["seconds"]))
            cleanup_steps.append({**glb.export_info.get("cleanup", {}).get("seconds", {}),
                                  "views_during_simplify": glb.export_info.get("views_rendered_during_simplify"),
                                  "views_during_uv": glb.export_info.get("views_rendered_during_uv"),
                                  "prepared_during_uv": glb.export_info["observations"].get("prepared_during_uv")})
            mems.append(mem)
            print(json.dumps({"shape": name, "run": i + 1, "seconds": round(sec, 3), "stages": stages[-1], "cleanup": cleanup_steps[-1], **mem}),
                  flush=True)
        t1 = time.perf_counter()
        quality = glb_quality(glb, device, views=qviews, resolution=qres, reference_mesh=mesh, pattern_res=res,
                              gaussian=gaussian)
        # The ceiling: the same mesh and UV atlas with ideal texels (issue 13 §1).
        ideal = ideal_texture(glb, device, pattern_res=res)
        ceiling = glb_quality(glb, device, views=qviews, resolution=qres, pattern_res=res, texture=ideal)
        quality["ceiling_psnr_db"] = ceiling["psnr_db"]
        quality["ceiling_ssim"] = ceiling["ssim"]
        # How blurred the GLB's texture is against the ideal one, over the texels the atlas covers.
        _, gf, guv, gtex = glb_arrays(glb, device)
        quality["blur"] = effective_blur(gtex, ideal, uv_coverage(gf, guv, gtex.shape[0]) > 0)
        # The atlas: texel use at the texture size and overlapping texels (charts are not counted here: the
        # GLB splits vertices at creases for its normals, which would split charts too).
        stats = atlas_stats(gf.cpu().numpy(), guv.cpu().numpy(), gtex.shape[0])
        quality["texel_use"] = round(float(stats["texel_use"]), 4)
        quality["overlap_texels"] = int(stats["overlap_texels"])
        quality["below_ceiling_db"] = round(ceiling["psnr_db"] - quality["psnr_db"], 3)
        row = {"source": SOURCES[name].__dict__, "input_faces": int(mesh["faces"].shape[0]), "outer_faces": outer,
               "input_vertices": int(mesh["vertices"].shape[0]), "gaussians": len(gaussian),
               "glb_faces": int(len(glb.faces)), "glb_vertices": int(len(glb.vertices)),
               "uv_method": glb.export_info.get("uv_method"),
               "observed_share": glb.export_info.get("observed_share"),
               "bake_fallback": glb.export_info.get("bake_fallback"), "median_s": round(statistics.median(secs), 3),
               "runs_s": [round(s, 3) for s in secs], "stages_runs_s": stages, "cleanup_steps_runs_s": cleanup_steps,
               "stages_median_s": {k: round(statistics.median(s.get(k, 0.0) for s in stages), 3) for k in stages[0]},
               "object_load_s": round(load_s, 2), "quality_s": round(time.perf_counter() - t1, 2),
               "quality": quality}
        if mems and mems[0]:
            row["peak_alloc_GiB"] = max(m["peak_alloc_GiB"] for m in mems)
            row["peak_reserved_GiB"] = max(m["peak_reserved_GiB"] for m in mems)
        info["rows"][name] = row
        print(json.dumps({"shape": name, "median_s": row["median_s"], "stages_median_s": row["stages_median_s"],
                          "glb_faces": row["glb_faces"], "quality": quality}), flush=True)
        if args.save_uv_input and _UV_INPUT:
            Path(args.save_uv_input).mkdir(parents=True, exist_ok=True)
            v_in, f_in = _UV_INPUT[-1]
            np.savez(Path(args.save_uv_input) / f"uv_input_{name}.npz", vertices=v_in, faces=f_in)
            _UV_INPUT.clear()
        del gaussian, mesh, glb
        if device.type == "cuda":
            torch.cuda.empty_cache()
    info["process_peak_rss_GiB"] = process_peak_rss_gib()
    info["markdown"] = markdown(info)
    print()
    print(info["markdown"], flush=True)
    Path(args.out).write_text(json.dumps(info, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
