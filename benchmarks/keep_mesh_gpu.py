"""Keep my mesh (``trellis.export.bake_onto_mesh``) on the realistic objects: the look baked onto a user's own mesh with
its own UVs, by each bake, against the best texture those UVs can hold.

    python benchmarks/keep_mesh_gpu.py [--shapes bunny nut] [--out keep_mesh.json]          # Triton
    TRELLIS_FAST_PATHS=nvrtc python benchmarks/keep_mesh_gpu.py --out keep_mesh_nvrtc.json  # Windows without Triton
    TRELLIS_FAST_PATHS=off python benchmarks/keep_mesh_gpu.py --runs 2 --out keep_mesh_off.json
    python benchmarks/keep_mesh_gpu.py --device cpu --quick     # 64^3 objects, 8 views at 256^2, texture 256^2

The colours are fitted on first use and cached (``realistic_objects.fitted_arrays``): about a minute a shape on a GPU,
half an hour a shape for --quick on two CPU cores.

Per shape: the user's mesh is the shape's clean source (``realistic_objects.prepare_source``: 99 785 faces for the
bunny, 1 046 for the nut) with a UV atlas of its own (our unwrap, as a DCC tool would have made one), moved 3 units
and made 40 units tall, as a file from elsewhere would be. The Gaussians are the realistic object's, on the
decoder-like outer sheet ``SHELL_VOXELS`` voxels off that source surface (a look generated on the user's voxels lies
off its surface the same way). Their colours (``--colors``): "surface_fitted" (default) carry the source surface's
own look, fitted as a trained decoder's so that their renders show it; "fitted" / "sampled" carry the pattern where
the sheet is, which the offset changes (1.5-voxel lines, 4-voxel stripes): no bake of those can show the source
surface's, and the row's ``sheet_ideal`` (the truth carried along the normals from the sheet to the surface, on the
same UVs) says how close any can come. The voxeliser's normalisation puts the largest side at 1, the objects' at
``EXTENT``: the Gaussians are scaled by 1 / EXTENT to the frame the bake normalises the user's mesh to.

Bakes (``--bakes``): "normals" (keep my mesh's: ``bake.near_surface``, each texel composited along the mesh's
normal) and "views" (the export's: renders projected onto the mesh, ``schedule.bake_uv_mesh``), both through
``bake_onto_mesh``; ``--scales 1 0.7``: the bake along the normals again with the Gaussians at those fixed scales
(``bake_near_surface``'s ``gaussian_scale``, rows ``normals_scale_<s>``). Quality (``glb_quality`` at held-out
views, the truth at the objects' own grid): PSNR / SSIM of each baked texture on the user's mesh and UVs, and of
``ideal_texture`` (the truth at every texel: what a perfect bake would give on those UVs). With fitted colours,
``fit_render_psnr_db``: the Gaussians' own renders against the truth they were fitted to (``fit_colors``, held-back
views): how much of the truth they carry at all. Time and peak GPU memory of ``bake_onto_mesh`` alone (median of
``--runs``).
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
from realistic_objects import (COLORS, DEFAULT_SHAPES, EXTENT, SHAPES, SHELL_VOXELS, fitted_arrays,  # noqa: E402
                               glb_quality, ideal_texture, prepare_source, realistic_object, truth_color)

BAKES = ("normals", "views")


def sheet_ideal(judged, device, res: int):
    """The texture (float [S,S,3]) of the truth ``SHELL_VOXELS`` voxels out along the mesh's normal at every texel:
    the look Gaussians coloured where the outer sheet is carry onto the source surface (the texels outside the UV
    triangles inpainted as ``ideal_texture``'s)."""
    from trellis.export.bake.inpaint import inpaint_texture
    from trellis.export.bake.near_surface import texel_frames
    from realistic_objects import glb_arrays

    v, f, uv, tex = glb_arrays(judged, device)
    size = tex.shape[0]
    fr = texel_frames(v.cpu().numpy(), f.cpu().numpy(), uv.cpu().numpy(), size, device)
    out = torch.zeros(size * size, 3, device=device)
    seen = torch.zeros(size * size, dtype=torch.bool, device=device)
    out[fr["index"]] = truth_color(fr["point"].double() + SHELL_VOXELS / res * fr["normal"].double(), res).float()
    seen[fr["index"]] = True
    return torch.as_tensor(inpaint_texture(out.view(size, size, 3), seen.view(size, size)), device=device).float() / 255


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", nargs="+", default=list(DEFAULT_SHAPES), choices=SHAPES)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--colors", default="surface_fitted", choices=COLORS,
                    help="the Gaussians' colours (realistic_objects.realistic_object): the source surface's look "
                         "fitted as a trained decoder's (surface_fitted, default) or sampled at each Gaussian "
                         "(surface); the pattern where the sheet is, fitted (fitted) or sampled (sampled)")
    ap.add_argument("--bakes", nargs="+", default=list(BAKES), choices=BAKES)
    ap.add_argument("--scales", nargs="*", type=float, default=[],
                    help="also bake along the normals with the Gaussians at these fixed scales (bake_near_surface's "
                         "gaussian_scale; the default is spacing_sharpening's): rows normals_scale_<s>")
    ap.add_argument("--bands", nargs="*", type=float, default=[],
                    help="also bake along the normals with these bands (voxels; bake_near_surface's band_voxels)")
    ap.add_argument("--sharpen", nargs="*", type=float, default=[],
                    help="... and the Gaussians at these shares of their spacing (spacing_sharpening's spacing_share):"
                         " rows normals_band_<b>_sharpen_<s> for every pair (the defaults fill a list left empty)")
    ap.add_argument("--out", default="keep_mesh.json")
    args = ap.parse_args(argv)
    from trellis.export import TexturedMesh, bake_onto_mesh
    from trellis.export.bake.near_surface import (NEAR_BAND_VOXELS, SHARPEN_SPACING, bake_near_surface,
                                                  spacing_sharpening)
    from trellis.representations.voxels import used_in_unit_cube
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
        used, v_cube, f_cube = used_in_unit_cube(user, f_uv)             # what bake_onto_mesh bakes onto
        cube = (v_cube, f_cube, uv[used])
        views = 4 if args.quick else 8
        judge = dict(device=device, views=views, resolution=256 if args.quick else 512, pattern_res=res)
        row = {"shape": shape, "faces": int(len(f_uv)), "vertices": int(len(v_uv)),
               "uv_method": str(unwrap.get("method")), "texture": bake["texture_size"]}
        if args.colors in ("fitted", "surface_fitted"):       # (cached by realistic_object's call)
            fit = fitted_arrays(shape, res, n_gs, device=device, verbose=False, surface=args.colors != "fitted")
            row["fit_render_psnr_db"] = round(float(fit["fit_psnr_end_db"]), 2)
        judged = None
        for which in args.bakes:
            seconds, peaks, out = [], [], None
            for _ in range(args.runs):
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                    base = torch.cuda.memory_allocated(device)
                sync(device)
                t = time.perf_counter()
                out = bake_onto_mesh(gaussian, user, f_uv, uv, bake=which, **bake)
                sync(device)
                seconds.append(time.perf_counter() - t)
                if device.type == "cuda":
                    peaks.append((torch.cuda.max_memory_allocated(device) - base) / 2 ** 20)
            assert np.array_equal(out.vertices, user) and np.array_equal(out.faces, f_uv) and out.info["uv"] == "kept"
            # quality in the objects' own frame (where the truth is defined): the same faces and UVs on v_src's points
            judged = TexturedMesh(np.asarray(v_uv, np.float32), out.faces, out.uvs, out.texture, out.info).to_glb()
            got = glb_quality(judged, **judge)
            row[which] = {"bake_s": round(statistics.median(seconds), 3),
                          "peak_mib": round(max(peaks), 1) if peaks else None, "psnr_db": round(got["psnr_db"], 2),
                          "ssim": round(got["ssim"], 4), "observed_share": out.info.get("observed_share")}
        for scale in args.scales:
            sync(device)
            t = time.perf_counter()
            tex = bake_near_surface(gaussian, *cube, texture_size=bake["texture_size"], gaussian_scale=scale)
            sync(device)
            seconds = time.perf_counter() - t
            got = glb_quality(TexturedMesh(np.asarray(v_uv, np.float32), f_uv, uv, tex, {}).to_glb(), **judge)
            row[f"normals_scale_{scale:g}"] = {"bake_s": round(seconds, 3), "psnr_db": round(got["psnr_db"], 2),
                                               "ssim": round(got["ssim"], 4)}
        for band, share in sweep(args.bands, args.sharpen, NEAR_BAND_VOXELS, SHARPEN_SPACING):
            area = float(np.linalg.norm(np.cross(v_cube[f_cube[:, 1]] - v_cube[f_cube[:, 0]],
                                                 v_cube[f_cube[:, 2]] - v_cube[f_cube[:, 0]]), axis=1).sum() / 2)
            tex = bake_near_surface(gaussian, *cube, texture_size=bake["texture_size"], band_voxels=band,
                                    gaussian_scale=spacing_sharpening(gaussian, area, share))
            got = glb_quality(TexturedMesh(np.asarray(v_uv, np.float32), f_uv, uv, tex, {}).to_glb(), **judge)
            row[f"normals_band_{band:g}_sharpen_{share:g}"] = {"psnr_db": round(got["psnr_db"], 2),
                                                               "ssim": round(got["ssim"], 4)}
        best = glb_quality(judged, texture=ideal_texture(judged, device=device, pattern_res=res), **judge)
        row.update(ideal_psnr_db=round(best["psnr_db"], 2), ideal_ssim=round(best["ssim"], 4))
        if args.colors in ("sampled", "fitted"):
            sheet = glb_quality(judged, texture=sheet_ideal(judged, device, res), **judge)
            row.update(sheet_ideal_psnr_db=round(sheet["psnr_db"], 2), sheet_ideal_ssim=round(sheet["ssim"], 4))
        info["rows"].append(row)
        print(json.dumps(row), flush=True)
    Path(args.out).write_text(json.dumps(info, indent=2))
    return 0


def sweep(bands, shares, band0, share0):
    """Every (band, share) pair of the two lists but the defaults' own (a list left empty: its default alone)."""
    if not bands and not shares:
        return []
    return [(b, s) for b in (bands or [band0]) for s in (shares or [share0]) if (b, s) != (band0, share0)]


if __name__ == "__main__":
    raise SystemExit(main())
