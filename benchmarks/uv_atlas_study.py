"""UV atlas study (issue 13 §4): texel use, charts, single-triangle charts, overlaps and UV time per method.

    python benchmarks/uv_atlas_study.py [--shapes bunny nut] [--methods xatlas geometric] [--texture-size 1024]
    python benchmarks/uv_atlas_study.py --export [--quick] ...   # also to_glb + glb_quality per method (seam ratio, PSNR)

The UV-only part needs no renders and runs on a CPU in seconds per method: the mesh is the realistic
object's outer sheet (``realistic_objects.build_arrays`` at grid 256, the decoder's) decimated with the
library's ``simplify_mesh`` to the face count the balanced preset's clean-up leaves on the H100 host
(bunny 18 276, nut 27 396 faces; ``--faces`` to change). Hidden-face removal is skipped (it takes minutes on
a CPU); it only removes the inner sheet, which is left out here from the start. The decimated meshes are
cached next to the objects. Each method runs ``--repeat`` times; the median time is reported.

``--packers bitmap skyline`` gives the geometric method once per chart packer (``chart_pack.PACKER``).
``--export`` runs ``export_realistic_gpu.main`` once per method with ``uv_method`` added to the balanced
preset's ``to_glb`` arguments (``--quick``: its reduced CPU size), so the seam-band error ratio, PSNR and
the GLB atlas's texel use come from the same code as the GPU table.
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

from trellis.utils.export.atlas_stats import atlas_stats  # noqa: E402

BALANCED_FACES = {"bunny": 18276, "nut": 27396}


def study_mesh(name: str, faces: int = None, cache=None):
    """The outer sheet of the realistic object decimated to ``faces`` faces (cached)."""
    from realistic_objects import build_arrays, cache_dir

    from trellis.utils.export.simplify import simplify_mesh
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


def run_uv(v, f, method: str, size: int, padding: int, repeat: int) -> dict:
    from trellis.utils.export.uv_unwrap import unwrap_uv
    secs, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        info = {}
        out = unwrap_uv(v, f, time_budget_s=60.0, texture_size=size, padding=padding, method=method, info=info)
        secs.append(time.perf_counter() - t0)
    _, ff, uv, _ = out
    st = atlas_stats(ff, uv, size)
    st.update(method=info.get("method"), seconds=round(statistics.median(secs), 3), runs_s=[round(s, 3) for s in secs])
    return st


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", nargs="+", default=["bunny", "nut"])
    ap.add_argument("--methods", nargs="+", default=["xatlas", "geometric"])
    ap.add_argument("--packers", nargs="+", default=["bitmap"], choices=["bitmap", "skyline"],
                    help="chart_pack.PACKER for the geometric method (each a row)")
    ap.add_argument("--faces", type=int, default=None)
    ap.add_argument("--texture-size", type=int, default=1024)
    ap.add_argument("--padding", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cache", default=None)
    ap.add_argument("--export", action="store_true", help="also to_glb + glb_quality per method")
    ap.add_argument("--quick", action="store_true", help="with --export: the reduced CPU size")
    ap.add_argument("--device", default=None, help="with --export")
    ap.add_argument("--out", default="uv_atlas_study.json")
    args = ap.parse_args(argv)
    from trellis.utils.export import chart_pack
    runs = [(m, pk) for m in args.methods for pk in (args.packers if m == "geometric" else [None])]
    rows = []
    for name in args.shapes:
        v, f = study_mesh(name, args.faces, args.cache)
        for m, pk in runs:
            chart_pack.PACKER = pk or "bitmap"
            st = run_uv(v, f, m, args.texture_size, args.padding, args.repeat)
            st.update(shape=name, packer=pk)
            rows.append(st)
            print(json.dumps(st), flush=True)
    result = {"texture_size": args.texture_size, "padding": args.padding, "uv": rows}
    if args.export:
        import export_realistic_gpu as erg
        base = erg.balanced_to_glb_kwargs
        result["export"] = {}
        for m, pk in runs:
            chart_pack.PACKER = pk or "bitmap"
            erg.balanced_to_glb_kwargs = lambda m=m: {**base(), "uv_method": m}
            label = m + (f"-{pk}" if pk else "")
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
    print("\n| shape | method (packer) | faces | charts | single-triangle % | texel use | overlap texels | UV s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['shape']} | {r['method']}{' (' + r['packer'] + ')' if r['packer'] else ''} | {r['faces']} | {r['charts']} | {100 * r['single_triangle_share']:.1f} "
              f"| {r['texel_use']:.3f} | {r['overlap_texels']} | {r['seconds']:.2f} |")
    Path(args.out).write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
