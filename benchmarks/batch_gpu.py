"""Batch throughput at full size: items per minute of `python -m desktop batch` with 1 and 2 GPUs, local
worker processes and Ray actors, on a random-weight pipeline folder (issue 17).

    python benchmarks/batch_gpu.py [--work DIR] [--items 16] [--preset balanced] [--formats glb,ply]
        [--object bunny|random] [--modes local1,local2,ray1,ray2,local1-serial] [--ray]
    python benchmarks/batch_gpu.py --smoke --model TINY_DIR --object random --ray     # the script itself, on a CPU

Writes the full-size random-weight pipeline (benchmarks/app_gpu.py: the published TRELLIS-image-large
configs + a full-size DINOv2, stage 1 calibrated to ~8 % occupancy) once into --work, makes --items RGBA
test images (no background removal), then runs the real command once per mode, each into a fresh outputs
folder, as a subprocess:

    local1 / local2    --gpus 0 / --gpus 0,1             one worker process per GPU
    ray1 / ray2        --ray local --workers 1 / 2       a private Ray cluster on this machine (needs --ray)
    local1-serial      --gpus 0 --no-overlap             one GPU without the export/sampling overlap

Per mode: wall seconds (start-up and model loading included), items/min over the wall time, and
steady items/min (from the first item finished to the last, from manifest.jsonl: the model loads left
out), the mean sampling and export seconds per item (summary.json), and the 2-GPU / 1-GPU ratio
(target >= 1.8). Ray is optional: without --ray (or without the ray package) the Ray modes are skipped
and the table says so; on an offline machine install the wheel first (pip install ray-*.whl).
``--smoke``: the same runs on the CPU (workers on --device cpu, Ray actors on its CPU resource) with the
pipeline of --model (e.g. `python -m trellis.tools.tiny_pipeline DIR`), to check the script, not to time.

``--object bunny`` (default): the typical case. Every item runs exactly as in the app (sampling and both
decoders included), then the decoders' Gaussians and mesh are replaced by the realistic bunny of
benchmarks/realistic_objects.py (a 256^3 two-sheet mesh, 500 k surface Gaussians), as app_gpu.py does:
the random weights' 6 M-face noisy mesh is the worst case, ``--object random``, whose export alone takes
about 30 s. The replacement is installed in every worker process (local or Ray) by a sitecustomize.py on
PYTHONPATH that acts only when BATCH_GPU_OBJECT is set, and only once the process imports trellis.pipelines
(the export's small child processes stay as fast as in the app; before 2026-11-23 each of them imported
torch and trellis here, which added ~9 s to every item's export: the earlier table's export column).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

MODES = {
    "local1": ["--gpus", "0"],
    "local2": ["--gpus", "0,1"],
    "ray1": ["--ray", "local", "--workers", "1"],
    "ray2": ["--ray", "local", "--workers", "2"],
    "local1-serial": ["--gpus", "0", "--no-overlap"],
}

# Installed into every Python process of a run (driver, local workers, Ray workers) through PYTHONPATH.
SITECUSTOMIZE = r'''
import os, sys
if os.environ.get("BATCH_GPU_OBJECT"):
    # Lazily: only a process that imports trellis.pipelines (a batch worker) gets the realistic object. The
    # export's own child processes (xatlas, the decimation pieces) run small scripts that never import it, and
    # must not pay for importing torch and trellis here (that added ~4 s to each of them, ~9 s per item).
    import importlib.abc, importlib.util

    def _patch(module):
        import numpy as np, torch
        from trellis.representations.mesh import MeshExtractResult
        arrays, cls = {}, module.TrellisImageTo3DPipeline
        run = cls.run

        def _realistic_run(self, *args, **kwargs):
            from realistic_objects import build_arrays, make_gaussian
            out = run(self, *args, **kwargs)
            if not arrays:
                arrays.update(build_arrays(os.environ["BATCH_GPU_OBJECT"], verbose=False))
            a, device = arrays, self.device
            if "gaussian" in out:
                out["gaussian"][0] = make_gaussian({k[3:]: a[k] for k in a if k.startswith("gs_")}, device)
            if "mesh" in out:
                out["mesh"][0] = MeshExtractResult(torch.as_tensor(a["vertices"], dtype=torch.float32, device=device),
                                                   torch.as_tensor(a["faces"].astype(np.int64), device=device), res=256)
            return out

        cls.run = _realistic_run

    class _Hook(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name != "trellis.pipelines":
                return None
            sys.meta_path.remove(self)
            spec = importlib.util.find_spec(name)
            if spec is None or spec.loader is None:
                return spec
            execute = spec.loader.exec_module

            def exec_module(module):
                execute(module)
                try:
                    _patch(module)
                except Exception as err:      # never break an unrelated process
                    print(f"batch_gpu sitecustomize: {err!r}", file=sys.stderr)
            spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, _Hook())
'''


def make_images(folder: Path, count: int) -> None:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:768, 0:768] / 767.0
    for i in range(count):
        r = np.hypot(xx - 0.5, yy - 0.55)
        alpha = ((r < 0.30 + 0.004 * i) * 255).astype(np.uint8)
        rgb = np.stack([200 * (1 - yy), (120 + 9 * i) % 256 + 0 * xx, 80 + 150 * (r < 0.2)], -1)
        Image.fromarray(np.dstack([rgb.clip(0, 255).astype(np.uint8), alpha]), "RGBA").save(folder / f"item_{i:03d}.png")


def mode_args(name: str, smoke: bool) -> list:
    if not smoke:
        return MODES[name]
    workers = "2" if name.endswith("2") else "1"
    where = ["--ray", "local", "--ray-resource", "CPU"] if name.startswith("ray") else []
    return [*where, "--device", "cpu", "--workers", workers] + (["--no-overlap"] if "serial" in name else [])


def run_mode(name: str, args, model: Path, images: Path, env: dict) -> dict:
    out = Path(args.work) / f"out-{name}"
    shutil.rmtree(out, ignore_errors=True)
    small = ["--steps", "2", "--texture-size", "64", "--set", "bake_views=4", "--set", "bake_resolution=64",
             "--set", "fill_holes=false"] if args.smoke else []
    cmd = [sys.executable, "-m", "desktop", "batch", str(images), "-o", str(out), "--model", str(model),
           "--preset", args.preset, "--formats", args.formats, "--seed", "3", "--retries", "0",
           *mode_args(name, args.smoke), *small]
    print(f"\n=== {name}: {' '.join(cmd[3:])}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    print(proc.stderr[-2500:], flush=True)
    result = {"mode": name, "exit": proc.returncode, "wall_s": wall}
    summary_file = out / "summary.json"
    if not summary_file.is_file():
        return {**result, "error": proc.stderr[-500:]}
    summary = json.loads(summary_file.read_text())
    done_times = sorted(e["time"] for e in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())
                        if e["event"] == "done")
    workers = summary.get("workers") or []
    items = sum(w["items"] for w in workers)
    steady = (len(done_times) - 1) / (done_times[-1] - done_times[0]) * 60 if len(done_times) > 2 else None
    stages = item_stages(out)
    return {**result, "done": summary["done"], "failed": summary["failed"], "workers": len(workers),
            "stages": stages,
            "items_per_min_wall": summary["done"] / wall * 60, "items_per_min_steady": steady,
            "sample_s": sum(w["sample"] for w in workers) / items if items else None,
            "export_s": sum(w["export"] for w in workers) / items if items else None}


def item_stages(out: Path) -> dict:
    """Mean seconds per item of every timed stage (each item's timings.json: pipeline, export.*, the bake's
    clean-up / UV / observe / solve), to see where an item's export time goes when it overlaps sampling."""
    sums, counts = {}, {}

    def walk(prefix, value):
        if isinstance(value, bool):
            return
        if isinstance(value, (int, float)):
            sums[prefix] = sums.get(prefix, 0.0) + float(value)
            counts[prefix] = counts.get(prefix, 0) + 1
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)

    for path in sorted(out.glob("*/timings.json")):
        with contextlib.suppress(ValueError, OSError):
            walk("", json.loads(path.read_text()))
    return {k: round(sums[k] / counts[k], 3) for k in sorted(sums)}


def table(results: list, info: dict) -> str:
    lines = [f"{info['device']} x{info['gpus']}, torch {info['torch']}, ray {info['ray']}, commit {info['commit']}, "
             f"{info['date']}; {info['items']} items, preset {info['preset']}, formats {info['formats']}, "
             f"object {info['object']}", "",
             "| mode | workers | done | wall s | items/min (wall) | items/min (steady) | sample s/item | export s/item |",
             "|---|---|---|---|---|---|---|---|"]
    fmt = lambda v, f="{:.1f}": "-" if v is None else f.format(v)  # noqa: E731
    for r in results:
        if "skipped" in r:
            lines.append(f"| {r['mode']} | skipped: {r['skipped']} | | | | | | |")
        elif "error" in r:
            lines.append(f"| {r['mode']} | failed (exit {r['exit']}) | | {fmt(r['wall_s'])} | | | | |")
        else:
            lines.append(f"| {r['mode']} | {r['workers']} | {r['done']}/{info['items']} | {fmt(r['wall_s'])} | "
                         f"{fmt(r['items_per_min_wall'])} | {fmt(r['items_per_min_steady'])} | {fmt(r['sample_s'], '{:.2f}')} | "
                         f"{fmt(r['export_s'], '{:.2f}')} |")
    by = {r["mode"]: r for r in results if "items_per_min_wall" in r}
    for one, two in (("local1", "local2"), ("ray1", "ray2")):
        if one in by and two in by:
            lines.append(f"\n{two} / {one}: {by[two]['items_per_min_wall'] / by[one]['items_per_min_wall']:.2f}x wall, "
                         + (f"{by[two]['items_per_min_steady'] / by[one]['items_per_min_steady']:.2f}x steady"
                            if by[one]["items_per_min_steady"] and by[two]["items_per_min_steady"] else "steady -"))
    if "local1" in by and "local1-serial" in by:
        lines.append(f"overlap gain on one GPU: {by['local1']['items_per_min_wall'] / by['local1-serial']['items_per_min_wall']:.2f}x wall")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default="/tmp/batch_gpu")
    ap.add_argument("--items", type=int, default=16)
    ap.add_argument("--preset", default="balanced")
    ap.add_argument("--formats", default="glb,ply")
    ap.add_argument("--object", default="bunny", choices=("bunny", "nut", "random"))
    ap.add_argument("--modes", default="local1,local2,ray1,ray2")
    ap.add_argument("--ray", action="store_true", help="run the Ray modes (needs the ray package)")
    ap.add_argument("--out", default=None, help="JSON results (default WORK/batch_gpu.json)")
    ap.add_argument("--model", default=None, help="a pipeline folder to use instead of the full-size random one")
    ap.add_argument("--smoke", action="store_true", help="run on the CPU (check the script; not a measurement)")
    args = ap.parse_args()
    import torch

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    model = Path(args.model) if args.model else work / "TRELLIS-image-large-random"
    if not (model / "pipeline.json").exists():
        from app_gpu import write_full_pipeline

        t0 = time.perf_counter()
        write_full_pipeline(model)
        print(f"wrote the full-size random pipeline in {time.perf_counter() - t0:.1f} s", flush=True)
    images = work / f"images-{args.items}"
    if not images.is_dir():
        make_images(images, args.items)
    hook = work / "hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hook), str(ROOT), str(ROOT / "benchmarks"),
                                                         *filter(None, [os.environ.get("PYTHONPATH")])]),
           "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
    if args.object != "random":
        env["BATCH_GPU_OBJECT"] = args.object
        from realistic_objects import build_arrays

        build_arrays(args.object)                  # into the cache once, before any worker wants it
    try:
        import ray
        ray_version = ray.__version__
    except ImportError:
        ray_version = None
    gpus = torch.cuda.device_count()
    results = []
    for name in [m.strip() for m in args.modes.split(",") if m.strip()]:
        if name not in MODES:
            raise SystemExit(f"unknown mode {name!r}; choose from {', '.join(MODES)}")
        if name.startswith("ray") and not args.ray:
            results.append({"mode": name, "skipped": "no --ray"})
        elif name.startswith("ray") and ray_version is None:
            results.append({"mode": name, "skipped": "ray is not installed"})
        elif name.endswith("2") and gpus < 2 and not args.smoke:
            results.append({"mode": name, "skipped": f"{gpus} GPU(s) here"})
        else:
            results.append(run_mode(name, args, model, images, env))
    from provenance import source_commit

    commit = source_commit()
    info = {"device": torch.cuda.get_device_name(0) if gpus else "cpu", "gpus": gpus, "torch": torch.__version__,
            "ray": ray_version, "commit": commit, "date": time.strftime("%Y-%m-%d"), "items": args.items,
            "preset": args.preset, "formats": args.formats, "object": args.object}
    text = table(results, info)
    print("\n" + text, flush=True)
    out = Path(args.out) if args.out else work / "batch_gpu.json"
    out.write_text(json.dumps({"info": info, "results": results}, indent=2))
    print(f"\nresults: {out}", flush=True)
    return 0 if all(r.get("exit", 0) == 0 for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
