"""Exporting a finished job again, without sampling: `python -m desktop export JOB_FOLDER -o OUT [options]` on the
job folders ``app_gpu.py --object bunny|nut`` made (their result.npz holds the realistic object), once per option set:
the same GLB, a 5 000-face target with a normal map, and each destination (web, game, print).

    python benchmarks/app_gpu.py --object bunny --runs 1 && python benchmarks/export_again_gpu.py --object bunny

Per option set: the command's wall time (a fresh process: start-up, reading result.npz, the export, the files) and
the job's own seconds (timings.json ``total``), then from export.json the triangles (against the target), the files'
sizes, watertight / flat base and the destination's limits (met, or the reasons). The first job folder of
``--work``/outputs-<object> is used; the JSON goes to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OPTION_SETS = {
    "same glb": ["--formats", "glb"],
    "5000 faces + normal map": ["--formats", "glb", "--target-faces", "5000", "--normal-map"],
    "web": ["--destination", "web"],
    "game": ["--destination", "game", "--target-faces", "20000"],
    "print": ["--destination", "print", "--height", "0.08"],
}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="/tmp/app_gpu")
    ap.add_argument("--object", default="bunny", choices=("random", "bunny", "nut"))
    ap.add_argument("--sets", nargs="+", default=list(OPTION_SETS), choices=list(OPTION_SETS))
    ap.add_argument("--out", default="export_again.json")
    args = ap.parse_args()
    import torch

    from trellis import fastpaths

    source = sorted(p for p in (Path(args.work) / f"outputs-{args.object}").iterdir()
                    if (p / "result.npz").is_file())[0]
    model = Path(args.work) / "TRELLIS-image-large-random"
    from provenance import source_commit

    commit = source_commit()
    info = {"device_name": torch.cuda.get_device_name(0), "path": fastpaths.describe("cuda"),
            "TRELLIS_FAST_PATHS": os.environ.get("TRELLIS_FAST_PATHS"), "commit": commit,
            "date": time.strftime("%Y-%m-%d"), "object": args.object, "source": source.name, "runs": {}}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    try:
        import pxr  # noqa: F401
    except ImportError:          # the lent GPU hosts have no usd-core unless its 29 MB wheel is carried
        OPTION_SETS["web"] = [*OPTION_SETS["web"], "--formats", "glb,mp4"]
        info["note"] = "usd-core missing: the web destination without its USDZ"
    for name in args.sets:
        out = Path(args.work) / "export-again" / f"{args.object}-{name.replace(' ', '_')}"
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "desktop", "export", str(source), "-o", str(out), "--model",
                               str(model), "--device", "cuda", "--quiet", *OPTION_SETS[name]], cwd=ROOT, env=env,
                              capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            info["runs"][name] = {"exit": proc.returncode, "stderr": proc.stderr[-2000:]}
            print(name, "FAILED", proc.stderr[-2000:], flush=True)
            continue
        folder = sorted(p for p in out.iterdir() if p.is_dir())[-1]
        report = json.loads((folder / "export.json").read_text())
        timings = json.loads((folder / "timings.json").read_text())
        same = None
        if name == "same glb":
            same = (folder / "model.glb").read_bytes() == (source / "model.glb").read_bytes()
        row = {"wall_s": round(wall, 2), "job_s": round(timings.get("total", float("nan")), 2),
               "export_s": {k: round(v, 2) for k, v in (timings.get("export") or {}).items()},
               "triangles": report["triangles"], "target": report.get("target_faces"),
               "files": {k: v["bytes"] for k, v in report["files"].items()},
               "lods": [lod["triangles"] for lod in report.get("lods", [])],
               "watertight": report["watertight"], "flat_base": report.get("flat_base"),
               "limits": report.get("limits"), "same_glb_as_the_job": same}
        info["runs"][name] = row
        print(name, json.dumps(row), flush=True)
    Path(args.out).write_text(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
