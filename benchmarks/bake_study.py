"""What each texture-bake setting costs and buys, on a realistic object (issue 13 §2, §6).

    python benchmarks/bake_study.py [--shape bunny] [--variants default opt perfect ...] [--out bake_study.json]
    python benchmarks/bake_study.py --device cpu --quick          # 64^3 grid, texture 512, minutes on a CPU

One clean-up + UV unwrap of the object at the app's balanced preset (``bake_textured_mesh``), one set of
observation renders, then every variant bakes a texture for the same mesh and atlas and is scored against
the truth at held-out views (``realistic_objects.glb_quality``: PSNR and SSIM inside the object, the
seam-band error ratio) and in texture space against the atlas's ideal texture (``effective_blur``: the
Gaussian blur in texels that best explains the bake). The ideal texture's own score is the ceiling.
Variants (``VARIANTS``) change one thing each: the solver's settings, the observation views or their
resolution, the "opt" optimiser, or ``perfect``: observations that are the truth itself point-sampled at
each pixel (the mesh's own raster, no Gaussians): what the solver makes of flawless inputs, which
separates the solver's loss from the loss in the Gaussians' renders.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from export_realistic_gpu import balanced_to_glb_kwargs, path_label, sync  # noqa: E402
from provenance import source_commit  # noqa: E402
from realistic_objects import (SHAPES, effective_blur, glb_quality, ideal_texture, realistic_object,  # noqa: E402
                               truth_color)

# name -> (accumulator kwargs, solve kwargs, observation overrides). Observations are rendered with the
# Gaussians at ``sharpening_scale`` of their size (the fast bake's default) unless "scale" says otherwise.
VARIANTS = {
    "default": ({}, {}, {}),
    "scale1": ({}, {}, {"scale": 1.0}),            # the Gaussians at full size (the bake before issue 13)
    "scale.7": ({}, {}, {"scale": 0.7}),
    "scale.5": ({}, {}, {"scale": 0.5}),
    "scale.35": ({}, {}, {"scale": 0.35}),
    "scale.6": ({}, {}, {"scale": 0.6}),
    "it100": ({}, {"iterations": 100}, {}),
    "smooth0": ({}, {"smooth": 0.0, "iterations": 100}, {}),
    "cos0": ({"cos_power": 0.0}, {}, {}),
    "cos4": ({"cos_power": 4.0}, {}, {}),
    "erode0": ({"edge_erode": 0}, {}, {}),
    "depth_off": ({"depth_tolerance": None}, {}, {}),
    "views100": ({}, {}, {"nviews": 100}),
    "res1536": ({}, {}, {"render_resolution": 1536}),
    "res2048": ({}, {}, {"render_resolution": 2048}),
    "perfect": ({}, {}, {"perfect": True}),
    "perfect_it100": ({}, {"iterations": 100, "smooth": 0.0}, {"perfect": True}),
    "opt": ({}, {}, {"opt": True, "scale": 1.0}),     # the reference's bake on the reference's renders
    "opt_scaled": ({}, {}, {"opt": True}),
    "nearest": ({}, {}, {"nearest": True}),
}


def nearest_gaussian_texture(gaussian, faces, uvs, vt, size, dev):
    """Every texel gets the colour of the Gaussian nearest to its surface point (no renders): what the
    Gaussians themselves hold at the atlas's resolution."""
    from scipy.spatial import cKDTree
    from trellis.renderers.mesh_render import rasterize
    from trellis.export.bake.inpaint import inpaint_texture

    uv = torch.as_tensor(uvs, device=dev).float()
    f = torch.as_tensor(faces, device=dev).long()
    clip = torch.cat([uv * 2 - 1, torch.full_like(uv[:, :1], 0.5), torch.ones_like(uv[:, :1])], 1)
    fid, bary, _ = rasterize(clip, f, size, size, ndc_y_up=True)
    hit = fid > 0
    pts = (vt[f[fid[hit] - 1]] * bary[hit][..., None]).sum(1)
    tree = cKDTree(gaussian.get_xyz.detach().cpu().numpy())
    _, idx = tree.query(pts.cpu().numpy(), workers=-1)
    col = (0.28209479177387814 * gaussian._features_dc.reshape(len(gaussian), -1)[:, :3] + 0.5).clamp(0, 1)
    out = torch.zeros(size, size, 3, device=dev)
    out[hit] = col[torch.as_tensor(idx, device=dev)].float()
    return inpaint_texture(out, hit)


def perfect_views(v, f, ext, intr, resolution, pattern_res):
    """The truth point-sampled at each pixel of the mesh's own raster: (color, mask, depth) per view."""
    from trellis.renderers.mesh_render import render_mesh

    for e, i in zip(ext, intr):
        out = render_mesh({"vertices": v, "faces": f}, e, i, resolution, return_types=("mask", "attr", "depth"),
                          attrs=v)
        mask = out["mask"][0] > 0.5
        color = torch.zeros(resolution, resolution, 3, device=v.device)
        color[mask] = truth_color(out["attr"].permute(1, 2, 0)[mask], pattern_res).to(color.dtype)
        yield color, mask, out["depth"][0]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", default="bunny", choices=SHAPES)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--texture-size", type=int, default=None)
    ap.add_argument("--quality-views", type=int, default=None)
    ap.add_argument("--cache", default=None)
    ap.add_argument("--colors", choices=("sampled", "fitted"), default="sampled",
                    help="the Gaussians' colours: the truth at their centres, or fitted to renders of the truth as a "
                         "trained decoder's (realistic_objects.fit_colors)")
    ap.add_argument("--out", default="bake_study.json")
    args = ap.parse_args(argv)
    from trellis.utils import postprocessing_utils as pu
    from trellis.export import bake as tb
    from trellis.export.assemble import make_glb_mesh

    dev = torch.device(args.device)
    res, n_gs = (64, 20_000) if args.quick else (256, 500_000)
    kw = balanced_to_glb_kwargs()
    if args.quick:
        kw.update(nviews=12, render_resolution=384, texture_size=512)
    if args.texture_size:
        kw["texture_size"] = args.texture_size
    qviews, qres = (4, 256) if args.quick else (8, 512)
    qviews = args.quality_views or qviews
    size = kw["texture_size"]
    gaussian, mesh = realistic_object(args.shape, dev, resolution=res, num_gaussians=n_gs, cache=args.cache,
                                      colors=args.colors)
    t0 = time.perf_counter()
    v, f, uv, tex0, info, _ = pu.bake_textured_mesh(gaussian, mesh, simplify=kw["simplify"],
                                                 fill_holes=kw["fill_holes"], texture_size=size, bake_mode="fast",
                                                 nviews=kw["nviews"], render_resolution=kw["render_resolution"])
    print(json.dumps({"setup_s": round(time.perf_counter() - t0, 2), "faces": len(f), "stages": info["seconds"]}),
          flush=True)
    glb = make_glb_mesh(v, f, uv, tex0)
    ideal = ideal_texture(glb, dev, pattern_res=res)
    vt = torch.as_tensor(v, device=dev)
    ft = torch.as_tensor(f, device=dev)
    observed_cache = {}
    ceiling = glb_quality(glb, dev, qviews, qres, pattern_res=res, texture=ideal)
    result = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", "path": path_label(dev)[0],
              "commit": source_commit(), "date": time.strftime("%Y-%m-%d"), "shape": args.shape, "quick": args.quick,
              "colors": args.colors,
              "to_glb_kwargs": kw, "faces": len(f), "ceiling": ceiling, "variants": {}}
    print(json.dumps({"ceiling": {k: ceiling[k] for k in ("psnr_db", "ssim", "seam_band_error_ratio")}}), flush=True)
    # How blurred the observations themselves are: each Gaussian render against the truth point-sampled on
    # the same pixels (the blur, in pixels of the render, that best explains the render).
    ext, intr = tb.observation_cameras(kw["nviews"], device=dev)
    obs_blur = []
    for k, (g, p) in enumerate(zip(tb.render_observations(gaussian, ext[:3], intr[:3], kw["render_resolution"]),
                                   perfect_views(vt, ft, ext[:3], intr[:3], kw["render_resolution"], res))):
        m = g[1] & p[1]
        obs_blur.append(effective_blur(g[0], p[0], m))
    result["observation_blur_px"] = obs_blur
    print(json.dumps({"observation_blur_px": obs_blur}), flush=True)
    auto_scale = tb.sharpening_scale(gaussian, kw["render_resolution"])
    result["sharpening_scale"] = auto_scale
    print(json.dumps({"sharpening_scale": auto_scale}), flush=True)
    for name in args.variants:
        acc_kw, solve_kw, obs = VARIANTS[name]
        nviews = obs.get("nviews", kw["nviews"])
        rres = obs.get("render_resolution", kw["render_resolution"])
        ext, intr = tb.observation_cameras(nviews, device=dev)
        sync(dev)
        t0 = time.perf_counter()
        if obs.get("perfect"):
            views = perfect_views(vt, ft, ext, intr, rres, res)
        else:
            views = tb.render_observations(gaussian, ext, intr, rres,
                                           gaussian_scale=obs.get("scale", auto_scale))
        if obs.get("nearest"):
            tex, observed = nearest_gaussian_texture(gaussian, f, uv, vt, size, dev), None
            t_obs = 0.0
            t0 = time.perf_counter()
        elif obs.get("opt"):
            colors, masks = [], []
            for c, m, _ in views:
                colors.append((c * 255).round().to(torch.uint8))
                masks.append(m)
            sync(dev)
            t_obs = time.perf_counter() - t0
            t0 = time.perf_counter()
            tex = tb.bake_texture(v, f, uv, colors, masks, ext, intr, texture_size=size, mode="opt", device=dev,
                                  inpaint=True)
            observed = None
        else:
            acc = tb.TextureAccumulator(v, f, uv, size, device=dev, **acc_kw)
            for i, (c, m, d) in enumerate(views):
                acc.add_view(c, m, ext[i], intr[i], depth=d)
            sync(dev)
            t_obs = time.perf_counter() - t0
            t0 = time.perf_counter()
            solve_kw = {"iterations": 30, **solve_kw}
            t, observed = acc.solve(**solve_kw)
            tex = tb.inpaint_texture(t, observed)
        sync(dev)
        t_solve = time.perf_counter() - t0
        texf = torch.as_tensor(tex, device=dev).float() / 255
        q = glb_quality(glb, dev, qviews, qres, pattern_res=res, texture=texf)
        if observed is None:
            observed = observed_cache.get("mask")
        else:
            observed_cache["mask"] = observed
        blur = effective_blur(texf, ideal, observed)
        row = {"observe_s": round(t_obs, 3), "solve_s": round(t_solve, 3), "psnr_db": q["psnr_db"], "ssim": q["ssim"],
               "below_ceiling_db": round(ceiling["psnr_db"] - q["psnr_db"], 3),
               "seam_band_error_ratio": q["seam_band_error_ratio"], "blur": blur}
        result["variants"][name] = row
        print(json.dumps({name: row}), flush=True)
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    Path(args.out).write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
