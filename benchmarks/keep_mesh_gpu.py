"""Keep my mesh (``trellis.export.keep_mesh.bake_onto_mesh``) on the realistic objects: the look baked onto a user's
own mesh with its own UVs, against the best texture those UVs can hold.

    python benchmarks/keep_mesh_gpu.py [--shapes bunny nut] [--out keep_mesh.json]
    TRELLIS_FAST_PATHS=off python benchmarks/keep_mesh_gpu.py --out keep_mesh_off.json
    python benchmarks/keep_mesh_gpu.py --device cpu --quick        # 64^3 objects, 8 views at 256^2, minutes
                                                                   # (a smoke run: its truth pattern is the 256^3 one)

Per shape: the user's mesh is the shape's clean source (``realistic_objects.prepare_source``: 99 785 faces for the
bunny, 1 046 for the nut) with a UV atlas of its own (our unwrap, as a DCC tool would have made one), moved 3 units
and made 40 units tall, as a file from elsewhere would be. The Gaussians are the realistic object's (a decoder-like
two-sheet surface; the new look's stage 2 would give Gaussians on the same voxels). The voxeliser's normalisation
puts the largest side at 1, the objects' at ``EXTENT``: the Gaussians are scaled by 1 / EXTENT to the frame the
bake normalises the user's mesh to. Quality (``glb_quality`` at held-out views): PSNR / SSIM of the baked texture on
the user's mesh and UVs, and of ``ideal_texture`` (the truth at every texel: what a perfect bake would give on those
UVs). Time and peak GPU memory of ``bake_onto_mesh`` alone (median of ``--runs``).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from export_realistic_gpu import balanced_to_glb_kwargs, path_label, sync  # noqa: E402
from provenance import source_commit  # noqa: E402
from realistic_objects import (DEFAULT_SHAPES, EXTENT, SHAPES, glb_quality, ideal_texture, prepare_source,  # noqa: E402
                               realistic_object)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", nargs="+", default=list(DEFAULT_SHAPES), choices=SHAPES)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--colors", default="fitted", choices=("sampled", "fitted"),
                    help="the Gaussians' colours: fitted to renders of the truth (as a trained decoder's; default) or "
                         "the truth sampled at their centres, which lie on the decoder-like outer sheet, 1.5 voxels "
                         "off the source surface the user's mesh is")
    ap.add_argument("--out", default="keep_mesh.json")
    args = ap.parse_args(argv)
    from trellis.export import TexturedMesh, bake_onto_mesh
    from trellis.export.uv.unwrap import unwrap_uv

    device = torch.device(args.device)
    res, n_gs = (64, 20_000) if args.quick else (256, 500_000)
    k = balanced_to_glb_kwargs()
    bake = dict(texture_size=k["texture_size"], bake_mode=k["bake_mode"], nviews=k["nviews"],
                render_resolution=k["render_resolution"])
    if args.quick:
        bake.update(texture_size=256, nviews=8, render_resolution=256)
        args.runs = 1
    label, _ = path_label(device)
    info = {"device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU", "path": label,
            "TRELLIS_FAST_PATHS": os.environ.get("TRELLIS_FAST_PATHS"), "torch": torch.__version__,
            "commit": source_commit(), "date": time.strftime("%Y-%m-%d"), "bake": bake, "colors": args.colors,
            "rows": []}
    for shape in args.shapes:
        gaussian, _ = realistic_object(shape, device=device, resolution=res, num_gaussians=n_gs, verbose=False,
                                       colors=args.colors)
        gaussian.from_xyz(gaussian.get_xyz / EXTENT)
        gaussian.from_scaling(gaussian.get_scaling / EXTENT)
        v_src, f_src = prepare_source(shape)
        unwrap = {}
        v_uv, f_uv, uv, _ = unwrap_uv(v_src.astype(np.float32), f_src, texture_size=bake["texture_size"], info=unwrap)
        user = (np.asarray(v_uv, np.float64) * (40.0 / (v_src.max(0) - v_src.min(0)).max()) + 3.0).astype(np.float32)
        seconds, peaks, out = [], [], None
        for _ in range(args.runs):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
                base = torch.cuda.memory_allocated(device)
            sync(device)
            t = time.perf_counter()
            out = bake_onto_mesh(gaussian, user, f_uv, uv, **bake)
            sync(device)
            seconds.append(time.perf_counter() - t)
            if device.type == "cuda":
                peaks.append((torch.cuda.max_memory_allocated(device) - base) / 2 ** 20)
        assert np.array_equal(out.vertices, user) and np.array_equal(out.faces, f_uv) and out.info["uv"] == "kept"
        # quality in the objects' own frame (where the truth is defined): the same faces and UVs on v_src's points
        judged = TexturedMesh(np.asarray(v_uv, np.float32), out.faces, out.uvs, out.texture, out.info).to_glb()
        views = 4 if args.quick else 8
        got = glb_quality(judged, device=device, views=views, resolution=256 if args.quick else 512)
        best = glb_quality(judged, device=device, views=views, resolution=256 if args.quick else 512,
                           texture=ideal_texture(judged, device=device))
        row = {"shape": shape, "faces": int(len(f_uv)), "vertices": int(len(v_uv)), "uv_method": str(unwrap.get("method")),
               "texture": bake["texture_size"], "bake_s": round(statistics.median(seconds), 3),
               "peak_mib": round(max(peaks), 1) if peaks else None,
               "psnr_db": round(got["psnr_db"], 2), "ssim": round(got["ssim"], 4),
               "ideal_psnr_db": round(best["psnr_db"], 2), "ideal_ssim": round(best["ssim"], 4),
               "observed_share": out.info.get("observed_share")}
        info["rows"].append(row)
        print(json.dumps(row), flush=True)
    Path(args.out).write_text(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
