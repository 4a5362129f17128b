"""Where the UV unwrap's time goes inside ``to_glb`` (issue 13: the realistic nut's export time).

    python benchmarks/uv_overlap_gpu.py [--shapes bunny nut] [--runs 2] [--out uv_overlap.json]

``to_glb`` unwraps the cleaned mesh in a thread while the main thread renders the remaining observation
views (``overlap_uv``). On the H100 hosts the UV stage inside ``to_glb`` took 1.0-1.4 s on the nut where the
same unwrap alone took 0.6-0.8 s on a 2-core runner. Per shape, after one warm-up export: ``to_glb`` with
``overlap_uv`` on and off, interleaved (stage seconds, views rendered during the UV), then the UV unwrap of
the exact mesh ``to_glb`` unwrapped, alone in this process (median of ``--runs`` + 1), and in a thread while
this thread renders observation views as ``to_glb`` does (the same number of views as the last overlapped
run rendered during its UV) — which separates the host's speed from the contention of the two threads.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from export_realistic_gpu import _UV_INPUT, _record_uv_input, balanced_to_glb_kwargs, run_to_glb, sync  # noqa: E402
from provenance import source_commit  # noqa: E402
from realistic_objects import DEFAULT_SHAPES, SHAPES, realistic_object  # noqa: E402


def top(prof, n=14) -> str:
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(n)
    return "\n".join(line for line in out.getvalue().splitlines()[6:] if line.strip())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", nargs="+", default=list(DEFAULT_SHAPES), choices=SHAPES)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="64^3 grid, 20 k Gaussians, 8 views at 384^2 (a CPU check)")
    ap.add_argument("--out", default="uv_overlap.json")
    args = ap.parse_args(argv)
    from trellis.export import bake as tb
    from trellis.export.uv.unwrap import unwrap_uv

    _record_uv_input()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    kw = balanced_to_glb_kwargs()
    res, n_gs, nv, rr = 256, 500_000, 50, 1024
    if args.quick:
        res, n_gs, nv, rr = 64, 20_000, 8, 384
        kw.update(nviews=nv, render_resolution=rr, texture_size=512)
    info = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", "commit": source_commit(),
            "date": time.strftime("%Y-%m-%d"), "torch_threads": torch.get_num_threads(), "rows": {}}
    for name in args.shapes:
        gaussian, mesh = realistic_object(name, dev, resolution=res, num_gaussians=n_gs, verbose=False)
        with torch.no_grad():
            run_to_glb(gaussian, mesh, kw, dev)                          # warm-up
            runs = []
            for _ in range(args.runs):
                for overlap in (True, False):
                    glb, sec, _ = run_to_glb(gaussian, mesh, {**kw, "overlap_uv": overlap}, dev)
                    e = glb.export_info
                    runs.append({"overlap_uv": overlap, "to_glb_s": round(sec, 3), "stages": e["seconds"],
                                 "views_during_simplify": e.get("views_rendered_during_simplify"),
                                 "views_during_uv": e.get("views_rendered_during_uv"), "uv_method": e.get("uv_method")})
                    print(json.dumps({"shape": name, **runs[-1]}), flush=True)
            v, f = _UV_INPUT[-1]
            _UV_INPUT.clear()
            alone = []
            for _ in range(args.runs + 1):
                t0 = time.perf_counter()
                unwrap_uv(v, f, texture_size=kw["texture_size"], verbose=False)
                alone.append(time.perf_counter() - t0)
            prof = cProfile.Profile()
            prof.enable()
            unwrap_uv(v, f, texture_size=kw["texture_size"], verbose=False)
            prof.disable()
            print(f"== {name}: UV alone, by own time\n{top(prof)}", flush=True)
            _UV_INPUT.clear()
            nviews = max((r["views_during_uv"] or 0) for r in runs if r["overlap_uv"])
            ext, intr = tb.observation_cameras(nv, device=dev)
            scale = tb.sharpening_scale(gaussian, rr)
            threaded = []
            for k in range(args.runs + 2):
                box = {}

                def work():
                    prof = cProfile.Profile() if k == args.runs + 1 else None
                    if prof is not None:
                        prof.enable()
                    t0 = time.perf_counter()
                    unwrap_uv(v, f, texture_size=kw["texture_size"], verbose=False)
                    box["s"] = time.perf_counter() - t0
                    if prof is not None:
                        prof.disable()
                        box["prof"] = prof

                views = tb.render_observations(gaussian, ext[:nviews], intr[:nviews], rr, gaussian_scale=scale)
                t = threading.Thread(target=work)
                t.start()
                held = [(c.cpu(), m.cpu(), d.cpu()) for c, m, d in views]
                sync(dev)
                t.join()
                if "prof" in box:
                    print(f"== {name}: UV beside {nviews} renders, by own time\n{top(box['prof'])}", flush=True)
                else:
                    threaded.append(box["s"])
                del held
            _UV_INPUT.clear()
        row = {"uv_faces": int(len(f)), "runs": runs,
               "uv_alone_s": round(statistics.median(alone), 3), "uv_alone_runs_s": [round(x, 3) for x in alone],
               "uv_with_renders_s": round(statistics.median(threaded), 3),
               "uv_with_renders_runs_s": [round(x, 3) for x in threaded], "views_rendered_beside": nviews}
        for overlap in (True, False):
            sel = [r for r in runs if r["overlap_uv"] == overlap]
            row[f"to_glb_s_overlap_{'on' if overlap else 'off'}"] = round(statistics.median(r["to_glb_s"] for r in sel), 3)
            row[f"uv_stage_s_overlap_{'on' if overlap else 'off'}"] = round(
                statistics.median(r["stages"]["uv_unwrap"] for r in sel), 3)
        info["rows"][name] = row
        print(json.dumps({"shape": name, **{k: val for k, val in row.items() if k != "runs"}}), flush=True)
        del gaussian, mesh
    Path(args.out).write_text(json.dumps(info, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
