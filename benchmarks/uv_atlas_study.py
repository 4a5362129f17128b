"""UV atlas study (issue 13 §4): texel use, charts, single-triangle charts, overlaps and UV time per method.

    python benchmarks/uv_atlas_study.py [--shapes bunny nut] [--methods xatlas geometric] [--texture-size 1024]
    python benchmarks/uv_atlas_study.py --export [--quick] ...   # also to_glb + glb_quality per method (seam ratio, PSNR)

The UV-only part needs no renders and runs on a CPU in seconds per method: the mesh is the realistic
object's outer sheet (``realistic_objects.build_arrays`` at grid 256, the decoder's) decimated with the
library's ``simplify_mesh`` to the face count the balanced preset's clean-up leaves on the H100 host
(bunny 18 276, nut 27 396 faces; ``--faces`` to change). Hidden-face removal is skipped (it takes minutes on
a CPU); it only removes the inner sheet, which is left out here from the start. The decimated meshes are
cached next to the objects. Each method runs ``--repeat`` times, the methods interleaved; the median time is reported.

``--export`` runs ``export_realistic_gpu.main`` once per method with ``uv_method`` added to the balanced
preset's ``to_glb`` arguments (``--quick``: its reduced CPU size), so the seam-band error ratio, PSNR and
the GLB atlas's texel use come from the same code as the GPU table.

``--cleaned`` studies instead the mesh ``to_glb``'s clean-up leaves without hidden-face removal (both sheets
decimated to the balanced preset's budget; with ``--quick`` from ``export_realistic_gpu --quick``'s 64^3
grid: 1120 / 1710 faces), i.e. what the quick export unwraps: ``--cleaned --quick --texture-size 512``.

``--mesh-file bunny=/path/uv_input_bunny.npz nut=...`` studies saved meshes instead (npz with "vertices" and
"faces", e.g. what ``export_realistic_gpu --save-uv-input DIR`` writes: the exact mesh ``to_glb`` unwraps, after
the clean-up and hidden-face removal); ``NAME=`` is the row's label, ``--shapes`` is then ignored.

``--phases`` adds the geometric layout's seconds per step (segmentation, flattening, packing, overlap checks;
median over the repeats), as the layout itself reports them (``geometric_layout(info=)``).

``--set uv.segment.DIFFUSE_STEPS=0 uv.pack_bitmap.BITMAP_FIRST_FILL=0.78`` sets module constants of
``trellis.export`` first (an A/B of one change in one session; 0 and 0.78: the layout before the
compact chart borders).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from trellis.export.uv.stats import atlas_stats  # noqa: E402

BALANCED_FACES = {"bunny": 18276, "nut": 27396}


def study_mesh(name: str, faces: int = None, cache=None):
    """The outer sheet of the realistic object decimated to ``faces`` faces (cached)."""
    from realistic_objects import build_arrays, cache_dir

    from trellis.export.cleanup.decimate import simplify_mesh
    target = int(faces or BALANCED_FACES[name])
    path = cache_dir(cache) / f"uvstudy_{name}_{target}.npz"
    if path.exists():
        d = np.load(path)
        return d["vertices"], d["faces"]
    a = build_arrays(name, 256, 500_000, cache=cache, verbose=False)
    f = np.asarray(a["faces"])[np.asarray(a["outer"], bool)]
    v = np.asarray(a["vertices"], np.float32)
    used, f = np.unique(f, return_inverse=True)
    v, f = v[used], f.reshape(-1, 3)
    v, f = simplify_mesh(v, f, 1.0 - target / len(f))
    v, f = np.asarray(v, np.float32), np.asarray(f, np.int64)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, vertices=v, faces=f)
    return v, f


def cleaned_mesh(name: str, quick: bool = False, cache=None):
    """The realistic object (outer and inner sheet) as ``to_glb``'s clean-up leaves it without hidden-face
    removal: one decimation to the balanced preset's face budget (``quick``: from the 64^3 grid with
    20 k Gaussians of ``export_realistic_gpu --quick``, else the 256^3 grid)."""
    import export_realistic_gpu as erg
    from realistic_objects import build_arrays

    from trellis.export.cleanup.chain import clean_mesh_for_export
    res, gs = (64, 20_000) if quick else (256, 500_000)
    a = build_arrays(name, res, gs, cache=cache, verbose=False)
    v, f = clean_mesh_for_export(np.asarray(a["vertices"]), np.asarray(a["faces"], np.int64),
                                 simplify=erg.balanced_to_glb_kwargs()["simplify"], fill_holes=False)
    return np.asarray(v, np.float32), np.asarray(f, np.int64)


def distortion(vertices, faces, uvs) -> dict:
    """How evenly the atlas spends its texels on the surface, from each face's map 3-D -> UV (its singular
    values s1 >= s2): ``conformal``, the area-weighted mean of s1 / s2 (1: angles kept; the packer's
    vertical stretch counts here); ``density_sd``, the area-weighted standard deviation of log(s1 s2)
    over faces (0: every face gets texels in proportion to its area); ``chart_density_sd``, the same
    over charts of their mean log density (0: every chart at the same texel density)."""
    from trellis.export.uv.stats import chart_ids
    v = np.asarray(vertices, np.float64)[faces]
    t = np.asarray(uvs, np.float64)[faces]
    e1, e2 = v[:, 1] - v[:, 0], v[:, 2] - v[:, 0]
    n = np.cross(e1, e2)
    area = 0.5 * np.linalg.norm(n, axis=1)
    ok = area > 1e-12 * max(float(area.max(initial=0)), 1e-30)
    x = e1 / np.maximum(np.linalg.norm(e1, axis=1, keepdims=True), 1e-30)
    y = np.cross(n / np.maximum(2 * area[:, None], 1e-30), x)
    p = np.stack([np.stack([(e1 * x).sum(1), (e1 * y).sum(1)], 1), np.stack([(e2 * x).sum(1), (e2 * y).sum(1)], 1)], 1)
    q = np.stack([t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]], 1)
    jac = np.linalg.solve(p[ok], q[ok])                 # rows: the face's edges in its own frame -> UV
    sv = np.linalg.svd(jac, compute_uv=False)
    w = area[ok] / area[ok].sum()
    logd = np.log(np.maximum(sv[:, 0] * sv[:, 1], 1e-30))
    mean = float((w * logd).sum())
    chart = chart_ids(faces)[ok]
    k = int(chart.max()) + 1
    wc = np.bincount(chart, w, k)
    per_chart = np.bincount(chart, w * logd, k) / np.maximum(wc, 1e-30)
    return {"conformal": float((w * sv[:, 0] / np.maximum(sv[:, 1], 1e-30)).sum()),
            "density_sd": float(np.sqrt((w * (logd - mean) ** 2).sum())),
            "chart_density_sd": float(np.sqrt((wc * (per_chart - mean) ** 2).sum()))}


PHASES = False       # report the geometric layout's seconds per step (its own "phases", ``geometric_layout``)


def run_uv(v, f, method: str, size: int, padding: int, repeat: int) -> dict:
    return finish_uv(v, f, *[time_uv(v, f, method, size, padding) for _ in range(repeat)], size=size)


def time_uv(v, f, method: str, size: int, padding: int):
    """One ``unwrap_uv`` run: (output, info, seconds)."""
    from trellis.export.uv.unwrap import unwrap_uv
    t0 = time.perf_counter()
    info = {}
    out = unwrap_uv(v, f, time_budget_s=60.0, texture_size=size, padding=padding, method=method, info=info)
    return out, info, time.perf_counter() - t0


def finish_uv(v, f, *runs, size: int) -> dict:
    """Stats of the last of ``runs`` (``time_uv`` results), the median time of all."""
    (vv, ff, uv, _), info, _ = runs[-1]
    secs = [r[2] for r in runs]
    st = atlas_stats(ff, uv, size)
    st.update({k: round(x, 4) for k, x in distortion(vv, ff, uv).items()})
    st.update(method=info.get("method"), seconds=round(statistics.median(secs), 3), runs_s=[round(s, 3) for s in secs])
    if PHASES and info.get("phases"):
        st["phases_s"] = {k: round(statistics.median(r[1]["phases"].get(k, 0.0) for r in runs), 3)
                          for k in info["phases"]}
    return st


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", nargs="+", default=["bunny", "nut"])
    ap.add_argument("--methods", nargs="+", default=["xatlas", "geometric"])
    ap.add_argument("--faces", type=int, default=None)
    ap.add_argument("--texture-size", type=int, default=1024)
    ap.add_argument("--padding", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cache", default=None)
    ap.add_argument("--export", action="store_true", help="also to_glb + glb_quality per method")
    ap.add_argument("--quick", action="store_true", help="with --export or --cleaned: the reduced CPU size")
    ap.add_argument("--cleaned", action="store_true",
                    help="study the mesh to_glb's clean-up leaves (no hidden-face removal) instead")
    ap.add_argument("--mesh-file", nargs="+", default=[], metavar="NAME=PATH",
                    help="study saved meshes (npz: vertices, faces) instead of --shapes")
    ap.add_argument("--device", default=None, help="with --export")
    ap.add_argument("--out", default="uv_atlas_study.json")
    ap.add_argument("--phases", action="store_true", help="the geometric layout's seconds per step")
    ap.add_argument("--set", nargs="+", default=[], metavar="MODULE.NAME=VALUE",
                    help="module constants of trellis.export to set first (numbers), e.g. uv.segment.MIN_CHARTS=30")
    args = ap.parse_args(argv)
    global PHASES
    PHASES = args.phases
    import importlib
    for item in args.set:
        name, value = item.split("=", 1)
        mod, attr = name.rsplit(".", 1)
        module = importlib.import_module(f"trellis.export.{mod}")
        old = getattr(module, attr)
        setattr(module, attr, type(old)(float(value)) if isinstance(old, (int, float)) else value)
    runs = list(args.methods)
    rows = []
    files = dict(item.split("=", 1) if "=" in item else (Path(item).stem, item) for item in args.mesh_file)
    for name in (files or args.shapes):
        if files:
            d = np.load(files[name])
            v, f = np.asarray(d["vertices"], np.float32), np.asarray(d["faces"], np.int64)
        elif args.cleaned:
            v, f = cleaned_mesh(name, args.quick, args.cache)
        else:
            v, f = study_mesh(name, args.faces, args.cache)
        done = {i: [] for i in range(len(runs))}
        for _ in range(args.repeat):          # methods interleaved: each repeat runs every method once
            for i, m in enumerate(runs):
                done[i].append(time_uv(v, f, m, args.texture_size, args.padding))
                done[i][:-1] = [(None, r[1], r[2]) for r in done[i][:-1]]     # keep only the last output
        for i, m in enumerate(runs):
            st = finish_uv(v, f, *done[i], size=args.texture_size)
            st.update(shape=name)
            rows.append(st)
            print(json.dumps(st), flush=True)
    result = {"texture_size": args.texture_size, "padding": args.padding, "uv": rows}
    if args.export:
        import export_realistic_gpu as erg
        base = erg.balanced_to_glb_kwargs
        result["export"] = {}
        for m in runs:
            erg.balanced_to_glb_kwargs = lambda m=m: {**base(), "uv_method": m}
            label = m
            out = Path(args.out).with_suffix(f".{label}.json")
            extra = ["--quick"] if args.quick else []
            extra += ["--device", args.device] if args.device else []
            erg.main(["--shapes", *args.shapes, "--out", str(out), *extra])
            result["export"][label] = {k: {"uv_s": r["stages_median_s"].get("uv_unwrap"), **r["quality"]}
                                   for k, r in json.loads(out.read_text())["rows"].items()}
        erg.balanced_to_glb_kwargs = base
        print("\n| shape | method | UV s | texel use (GLB) | overlap texels | seam-band error ratio | PSNR dB | SSIM |")
        print("|---|---|---|---|---|---|---|---|")
        for label, per in result["export"].items():
            for k, q in per.items():
                print(f"| {k} | {label} | {q['uv_s']:.2f} | {q['texel_use']:.3f} | {q['overlap_texels']} "
                      f"| {q['seam_band_error_ratio']:.2f} | {q['psnr_db']:.2f} | {q['ssim']:.3f} |")
    print("\n| shape | method (packer) | faces | charts | single-triangle % | texel use | overlap texels | UV s "
          "| conformal | density sd (faces / charts) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['shape']} | {r['method']}{' (' + r['packer'] + ')' if r.get('packer') else ''} | {r['faces']} | {r['charts']} | {100 * r['single_triangle_share']:.1f} "
              f"| {r['texel_use']:.3f} | {r['overlap_texels']} | {r['seconds']:.2f} | {r['conformal']:.3f} "
              f"| {r['density_sd']:.3f} / {r['chart_density_sd']:.3f} |")
    Path(args.out).write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
