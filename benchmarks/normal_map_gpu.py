"""The tangent-space normal map on realistic objects: how much closer to the dense mesh the exported mesh shades
with it, and what it costs.

    python benchmarks/normal_map_gpu.py [--shapes bunny nut] [--out normal_map.json]
    TRELLIS_FAST_PATHS=off python benchmarks/normal_map_gpu.py --out normal_map_off.json
    python benchmarks/normal_map_gpu.py --device cpu --quick          # reduced size, a few minutes

Per shape (``realistic_objects.py``: decoder-like two-sheet meshes) and per face budget (the app's balanced preset,
and 5 000 faces): the export's clean-up, UV unwrap and colour bake at the balanced preset's settings
(``bake_textured_mesh``), then ``bake_normal_map`` through the same observation views, timed alone (median of
``--runs``). Quality: at ``--quality-views`` held-out views (``realistic_objects.held_out_cameras``), the mean
angle between the dense mesh's smooth normals (the truth) and the exported mesh's shading normals, without the map
(its written vertex normals) and with it (``normal_map.shading_normals``: what a viewer shows).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from export_realistic_gpu import balanced_to_glb_kwargs, path_label, sync  # noqa: E402
from provenance import source_commit  # noqa: E402
from realistic_objects import DEFAULT_SHAPES, SHAPES, held_out_cameras, realistic_object  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", nargs="+", default=list(DEFAULT_SHAPES), choices=SHAPES)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="a 64^3 mesh, 20 k Gaussians, 8 views at 256^2")
    ap.add_argument("--budgets", nargs="+", default=["balanced", "5000"])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--quality-views", type=int, default=8)
    ap.add_argument("--quality-resolution", type=int, default=512)
    ap.add_argument("--cache", default=None)
    ap.add_argument("--out", default="normal_map.json")
    args = ap.parse_args(argv)
    from trellis.export.bake.normal_map import (angular_error, bake_normal_map, dense_normals_view,
                                                shading_normals, smooth_normals)
    from trellis.export.bake.observations import observation_cameras
    from trellis.export.schedule import bake_textured_mesh

    device = torch.device(args.device)
    res, n_gs = (64, 20_000) if args.quick else (256, 500_000)
    kwargs = balanced_to_glb_kwargs()
    if args.quick:
        kwargs.update(nviews=8, render_resolution=256, texture_size=256, fill_holes=False)
        args.runs, args.quality_views, args.quality_resolution = 1, 4, 256
    label, _ = path_label(device)
    info = {"device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU",
            "path": label, "TRELLIS_FAST_PATHS": os.environ.get("TRELLIS_FAST_PATHS"), "torch": torch.__version__,
            "commit": source_commit(), "date": time.strftime("%Y-%m-%d"), "export_kwargs": kwargs, "runs": args.runs,
            "quality": {"views": args.quality_views, "resolution": args.quality_resolution}, "rows": []}
    print(json.dumps({k: v for k, v in info.items() if k != "rows"}), flush=True)
    for name in args.shapes:
        gaussian, mesh = realistic_object(name, device, resolution=res, num_gaussians=n_gs, cache=args.cache)
        dv, df = mesh["vertices"], mesh["faces"]
        dn = smooth_normals(dv, df)
        held = held_out_cameras(args.quality_views, device=device)
        truths = [dense_normals_view(dv, df, dn, e, k, args.quality_resolution) for e, k in zip(*held)]
        for budget in args.budgets:
            kw = dict(kwargs, **({} if budget == "balanced" else {"target_faces": int(budget)}))
            textured = bake_textured_mesh(gaussian, mesh, verbose=False, **kw)
            obs = textured.info["observations"]
            ext, intr = observation_cameras(obs["views"], device=device)
            secs, nmap, seen = [], None, {}
            for _ in range(args.runs + 1):                 # the first run warms the kernels, not timed
                sync(device)
                t0 = time.perf_counter()
                nmap = bake_normal_map(dv, df, textured.vertices, textured.faces, textured.uvs, kw["texture_size"],
                                       ext, intr, obs["resolution"], device=device, info=seen)
                sync(device)
                secs.append(time.perf_counter() - t0)
            plain, mapped = [], []
            for (e, k), (truth, tmask, _) in zip(zip(*held), truths):
                n0, m0 = shading_normals(textured.vertices, textured.faces, textured.uvs, None, e, k,
                                         args.quality_resolution, device=device)
                n1, m1 = shading_normals(textured.vertices, textured.faces, textured.uvs, nmap, e, k,
                                         args.quality_resolution, device=device)
                both = tmask & m0 & m1
                plain.append(angular_error(n0, truth, both))
                mapped.append(angular_error(n1, truth, both))
            row = {"shape": name, "budget": budget, "faces": int(len(textured.faces)),
                   "dense_faces": int(df.shape[0]), "texture": kw["texture_size"],
                   "views": f"{obs['views']} x {obs['resolution']}^2",
                   "bake_normal_map_s": round(statistics.median(secs[1:] if len(secs) > 1 else secs), 3),
                   "error_without_deg": round(statistics.mean(plain), 2),
                   "error_with_deg": round(statistics.mean(mapped), 2),
                   "observed_share": round(seen["normal_map_observed_share"], 3)}
            row["ratio"] = round(row["error_with_deg"] / row["error_without_deg"], 3)
            info["rows"].append(row)
            print(json.dumps(row), flush=True)
    Path(args.out).write_text(json.dumps(info, indent=1))
    print("| shape | budget | faces | without | with | ratio | bake s |\n|---|---|---|---|---|---|---|")
    for r in info["rows"]:
        print(f"| {r['shape']} | {r['budget']} | {r['faces']} | {r['error_without_deg']}° | {r['error_with_deg']}° | "
              f"{r['ratio']} | {r['bake_normal_map_s']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
