"""Batch throughput at full size: items per minute of `python -m desktop batch` with its overlap on and off, on one
and two GPUs (local worker processes or Ray actors), beside the app's own serial job on the same object.

    python benchmarks/batch_gpu.py [--work DIR] [--items 16] [--preset balanced] [--formats glb,ply]
        [--object bunny|nut|random] [--modes app,local1,local1-serial,local2] [--ray] [--out FILE]
    python benchmarks/batch_gpu.py --smoke --model TINY_DIR --items 4 --modes app,local1,local1-serial   # on a CPU

Writes the full-size random-weight pipeline (benchmarks/app_gpu.py: the published TRELLIS-image-large configs + a
full-size DINOv2, stage 1 calibrated to ~8 % occupancy) once (app_gpu.py's folder is used where it exists), makes
--items RGBA test images (no background removal), then runs each mode once, as a subprocess, into a fresh outputs
folder:

    app                the app's serial job: `python -m desktop generate` of --items jobs in one process
                       (app_gpu.job_command: the CLI's JobRunner, one job after the other)
    local1 / local2    `batch --gpus 0` / `--gpus 0,1`: one worker process per GPU, one item's files written while
                       the next one samples (desktop/jobs/overlap.py)
    local1-serial      `batch --gpus 0 --no-overlap`: one item at a time
    ray1 / ray2        `batch --ray local --workers 1 / 2`: a private Ray cluster on this machine (needs --ray)

Per mode: wall seconds (start-up and model loading included); items/min over the wall time; **steady** items/min,
from the first item finished to the last (batch: manifest.jsonl's "done" times; app: the jobs' timings.json
written at each job's end), what a long batch sees; and per item, from every item's timings.json, the sampling call
(``pipeline``: the app's 0.8 s on an H100 is this column), the files' wall time (``files``), and for the batch the
worker's phases (``sample``: the job up to its result, ``export``: its files, ``waited``: sampled, for the writer).
Then the ratios the batch is held to: overlap on / off (>= 1.3), batch / app (>= 1.0), 2 GPUs / 1 (>= 1.8).

``--object bunny`` (default): every item and every app job runs exactly as in the app (sampling and both decoders
included) on the realistic object of benchmarks/realistic_objects.py, replaced by app_gpu.py's own patch (its
``patch_pipeline``): stage 1's random structure replaced by the object's surface voxels (stage 2 and the decoders then
run on a surface's tokens, as a trained model's do), the decoders' Gaussians and mesh by the object's. The batch's
worker processes (local or Ray) get the patch from a sitecustomize.py on PYTHONPATH, which acts only when
BATCH_GPU_OBJECT is set and only in a process that imports the image pipeline (the export's child processes stay as
in the app). ``--object random`` keeps the random weights' own output (a 6 M-face noisy mesh: the worst case).
``--smoke``: the same runs on the CPU with --model's pipeline (e.g. `python -m trellis.tools.tiny_pipeline DIR`),
small settings, to check the script, not to time.
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
    "app": None,                                      # the app's serial job (app_command)
    "local1": ["--gpus", "0"],
    "local1-serial": ["--gpus", "0", "--no-overlap"],
    "local2": ["--gpus", "0,1"],
    "ray1": ["--ray", "local", "--workers", "1"],
    "ray2": ["--ray", "local", "--workers", "2"],
}
DEFAULT_MODES = "app,local1,local1-serial,local2"
# The goals: (numerator mode, denominator mode, least ratio of steady items/min, what it says).
GOALS = [("local1", "local1-serial", 1.3, "overlap on / off"), ("local1", "app", 1.0, "batch / the app's serial job"),
         ("local2", "local1", 1.8, "2 GPUs / 1"), ("ray2", "ray1", 1.8, "Ray: 2 GPUs / 1")]
# Small settings for --smoke (a CPU).
SMOKE = ["--steps", "2", "--texture-size", "64", "--set", "bake_views=4", "--set", "bake_resolution=64",
         "--set", "fill_holes=false"]

# Installed into every Python process of a run (driver, workers, Ray workers, the export's children) through
# PYTHONPATH; it acts only in a process that imports the image pipeline.
SITECUSTOMIZE = r'''
import os, sys
if os.environ.get("BATCH_GPU_OBJECT"):
    import importlib.abc, importlib.machinery

    def _realistic(module):
        # app_gpu.py's patch, as its job process applies it: its head (the object's arrays) run here, with the object
        # named as its argument, and the arrays loaded before the worker goes on (they import numpy only).
        import app_gpu
        argv, sys.argv = sys.argv, [sys.argv[0] if sys.argv else "python", os.environ["BATCH_GPU_OBJECT"]]
        scope = {"__name__": "batch_gpu_realistic"}
        try:
            exec(app_gpu.REALISTIC_HEAD, scope)
        finally:
            sys.argv = argv
        scope["_loading"].join()
        scope["patch_pipeline"](module.TrellisImageTo3DPipeline)

    class _Hook(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name != "trellis.pipelines.trellis_image_to_3d":
                return None
            sys.meta_path.remove(self)
            spec = importlib.machinery.PathFinder.find_spec(name, path)
            if spec is None or spec.loader is None:
                return spec
            execute = spec.loader.exec_module

            def exec_module(module):
                execute(module)
                try:
                    _realistic(module)
                except Exception as err:      # said, never fatal: the table's numbers would then be the random case's
                    print(f"batch_gpu sitecustomize: the realistic object was not installed: {err!r}", file=sys.stderr)
            spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, _Hook())
'''


def make_images(folder: Path, count: int) -> list:
    """`count` RGBA test images (a disc of its own size and colours each) in `folder`; their paths."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:768, 0:768] / 767.0
    paths = []
    for i in range(count):
        path = folder / f"item_{i:03d}.png"
        if not path.is_file():
            r = np.hypot(xx - 0.5, yy - 0.55)
            alpha = ((r < 0.30 + 0.004 * i) * 255).astype(np.uint8)
            rgb = np.stack([200 * (1 - yy), (120 + 9 * i) % 256 + 0 * xx, 80 + 150 * (r < 0.2)], -1)
            Image.fromarray(np.dstack([rgb.clip(0, 255).astype(np.uint8), alpha]), "RGBA").save(path)
        paths.append(path)
    return paths


def mode_args(name: str, smoke: bool) -> list:
    """The batch command's options of a mode (on --smoke, the CPU's: --device cpu, --workers, a Ray CPU resource)."""
    if not smoke:
        return MODES[name]
    workers = "2" if name.endswith("2") else "1"
    where = ["--ray", "local", "--ray-resource", "CPU"] if name.startswith("ray") else []
    return [*where, "--device", "cpu", "--workers", workers] + (["--no-overlap"] if "serial" in name else [])


def batch_command(name: str, args, model: Path, images: Path, out: Path) -> list:
    return [sys.executable, "-m", "desktop", "batch", str(images), "-o", str(out), "--model", str(model),
            "--preset", args.preset, "--formats", args.formats, "--seed", "3", "--retries", "0",
            *mode_args(name, args.smoke), *(SMOKE if args.smoke else [])]


def app_command(args, model: Path, image: Path, out: Path) -> list:
    """The app's serial job: app_gpu.job_command (the CLI generator, the realistic object swapped in by the same
    patch) with --items jobs of one image, the batch's preset, formats and seed."""
    from app_gpu import job_command

    cmd = job_command(args.object, image, out, model, args.items, args.preset, formats=args.formats)
    if args.smoke:
        cmd[cmd.index("--device") + 1] = "cpu"
        cmd += SMOKE
    return cmd


def steady(times: list):
    """Items per minute from the first finished to the last (None with fewer than 3)."""
    times = sorted(times)
    return (len(times) - 1) / (times[-1] - times[0]) * 60 if len(times) > 2 and times[-1] > times[0] else None


def run_mode(name: str, args, model: Path, images: list, env: dict) -> dict:
    out = Path(args.work) / f"out-{name}"
    shutil.rmtree(out, ignore_errors=True)
    cmd = app_command(args, model, images[0], out) if name == "app" else \
        batch_command(name, args, model, images[0].parent, out)
    print(f"\n=== {name}: {' '.join(cmd[cmd.index('generate'):] if name == 'app' else cmd[3:])}", flush=True)
    if name == "app":             # its own process applies the realistic object (app_gpu.job_command), not the hook
        env = {k: v for k, v in env.items() if k != "BATCH_GPU_OBJECT"}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    print(proc.stderr[-2500:], flush=True)
    result = {"mode": name, "exit": proc.returncode, "wall_s": wall}
    if args.object != "random" and not name.startswith("ray"):     # the patch says so in each process that samples
        result["structure_replaced"] = "stage 1's structure replaced" in proc.stdout
    folders = sorted(p.parent for p in out.glob("*/timings.json"))
    if not folders:
        return {**result, "error": proc.stderr[-500:]}
    if name == "app":
        ends = [(f / "timings.json").stat().st_mtime for f in folders]
        phases = {}
    else:
        events = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines() if line.strip()]
        done = [e for e in events if e.get("event") == "done"]
        ends = [e["time"] for e in done]
        phases = {k: mean([(e.get("seconds") or {}).get(k) for e in done]) for k in ("sample", "waited", "export")}
    timings = [json.loads((f / "timings.json").read_text()) for f in folders]
    return {**result, "done": len(folders), "items_per_min_wall": len(folders) / wall * 60,
            "items_per_min_steady": steady(ends), **phases,
            "pipeline": mean([t.get("pipeline", {}).get("seconds") for t in timings]),
            "files": mean([t.get("export", {}).get("files_wall") for t in timings]),
            "stages": item_stages(timings)}


def mean(values: list):
    values = [v for v in values if isinstance(v, (int, float))]
    return sum(values) / len(values) if values else None


def item_stages(timings: list) -> dict:
    """Mean seconds per item of every timed stage (each item's timings.json: pipeline, export.*, the bake's
    clean-up / UV / observe / solve), to see where an item's time goes when it overlaps the next one's sampling."""
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

    for t in timings:
        walk("", t)
    return {k: round(sums[k] / counts[k], 3) for k in sorted(sums)}


def table(results: list, info: dict) -> str:
    lines = [f"{info['device']} x{info['gpus']}, torch {info['torch']}, ray {info['ray']}, commit {info['commit']}, "
             f"{info['date']}; {info['items']} items, preset {info['preset']}, formats {info['formats']}, "
             f"object {info['object']}", "",
             "| mode | done | wall s | items/min (wall) | items/min (steady) | pipeline s/item | files s/item | "
             "sample / waited / export s/item |", "|---|---|---|---|---|---|---|---|"]

    def fmt(v, f="{:.1f}"):
        return "-" if v is None else f.format(v)
    for r in results:
        if "skipped" in r:
            lines.append(f"| {r['mode']} | skipped: {r['skipped']} | | | | | | |")
        elif "error" in r:
            lines.append(f"| {r['mode']} | failed (exit {r['exit']}) | {fmt(r['wall_s'])} | | | | | |")
        else:
            phases = " / ".join(fmt(r.get(k), "{:.2f}") for k in ("sample", "waited", "export")) \
                if r["mode"] != "app" else "-"
            lines.append(f"| {r['mode']} | {r['done']}/{info['items']} | {fmt(r['wall_s'])} | "
                         f"{fmt(r['items_per_min_wall'])} | {fmt(r['items_per_min_steady'])} | "
                         f"{fmt(r['pipeline'], '{:.2f}')} | {fmt(r['files'], '{:.2f}')} | {phases} |")
    lines.append("")
    lines += [f"(!) {r['mode']}: app_gpu's patch never said it replaced stage 1's structure: not the app's work"
              for r in results if r.get("structure_replaced") is False]
    lines += ratios(results)
    return "\n".join(lines)


def ratios(results: list) -> list:
    """One line per goal whose two modes both ran: the steady and wall ratios against the goal."""
    by = {r["mode"]: r for r in results if r.get("items_per_min_steady")}
    out = []
    for top, bottom, goal, what in GOALS:
        if top in by and bottom in by:
            s = by[top]["items_per_min_steady"] / by[bottom]["items_per_min_steady"]
            w = by[top]["items_per_min_wall"] / by[bottom]["items_per_min_wall"]
            out.append(f"{what} ({top} / {bottom}): {s:.2f}x steady, {w:.2f}x wall (goal >= {goal}x steady: "
                       f"{'met' if s >= goal else 'NOT met'})")
    return out


def full_pipeline(work: Path, given) -> Path:
    """--model, else app_gpu.py's full-size random-weight folder where it exists, else one written into --work."""
    if given:
        return Path(given)
    for folder in (Path("/tmp/app_gpu/TRELLIS-image-large-random"), work / "TRELLIS-image-large-random"):
        if (folder / "pipeline.json").exists():
            return folder
    from app_gpu import write_full_pipeline

    folder = work / "TRELLIS-image-large-random"
    t0 = time.perf_counter()
    write_full_pipeline(folder)
    print(f"wrote the full-size random pipeline in {time.perf_counter() - t0:.1f} s", flush=True)
    return folder


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="modes: " + ", ".join(MODES))
    ap.add_argument("--work", default="/tmp/batch_gpu")
    ap.add_argument("--items", type=int, default=16, help="items of each batch and jobs of the app (default 16)")
    ap.add_argument("--preset", default="balanced")
    ap.add_argument("--formats", default="glb,ply")
    ap.add_argument("--object", default="bunny", choices=("bunny", "nut", "random"))
    ap.add_argument("--modes", default=DEFAULT_MODES,
                    help=f"comma-separated (default {DEFAULT_MODES}): the overlap on (local1) and off (local1-serial)")
    ap.add_argument("--ray", action="store_true", help="run the Ray modes (needs the ray package)")
    ap.add_argument("--out", default=None, help="JSON results (default WORK/batch_gpu.json)")
    ap.add_argument("--model", default=None, help="a pipeline folder to use instead of the full-size random one")
    ap.add_argument("--smoke", action="store_true", help="run on the CPU (check the script; not a measurement)")
    args = ap.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        ap.error(f"unknown mode(s) {', '.join(unknown)}; choose from {', '.join(MODES)}")
    if args.items < 3:
        ap.error("--items: at least 3 (steady items/min is measured from the first item finished to the last)")
    args.modes = modes
    return args


def run_env(args, work: Path) -> dict:
    """The runs' environment: the repository and benchmarks/ importable, the realistic object's hook (--object)."""
    hook = work / "hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hook), str(ROOT), str(ROOT / "benchmarks"),
                                                         *filter(None, [os.environ.get("PYTHONPATH")])]),
           "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled"), "APP_GPU_STRUCTURE": "object"}
    if args.object != "random":
        env["BATCH_GPU_OBJECT"] = args.object
    return env


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    model = full_pipeline(work, args.model)
    images = make_images(work / f"images-{args.items}", args.items)
    if args.object != "random":
        from realistic_objects import build_arrays

        build_arrays(args.object)                  # into the cache once, before any worker wants it
    env = run_env(args, work)
    try:
        import ray
        ray_version = ray.__version__
    except ImportError:
        ray_version = None
    gpus = torch.cuda.device_count()
    results = []
    for name in args.modes:
        if name.startswith("ray") and not args.ray:
            results.append({"mode": name, "skipped": "no --ray"})
        elif name.startswith("ray") and ray_version is None:
            results.append({"mode": name, "skipped": "ray is not installed"})
        elif name.endswith("2") and gpus < 2 and not args.smoke:
            results.append({"mode": name, "skipped": f"{gpus} GPU(s) here"})
        else:
            results.append(run_mode(name, args, model, images, env))
    from provenance import source_commit

    info = {"device": torch.cuda.get_device_name(0) if gpus else "cpu", "gpus": gpus, "torch": torch.__version__,
            "ray": ray_version, "commit": source_commit(), "date": time.strftime("%Y-%m-%d"), "items": args.items,
            "preset": args.preset, "formats": args.formats, "object": args.object, "smoke": args.smoke}
    text = table(results, info)
    print("\n" + text, flush=True)
    out = Path(args.out) if args.out else work / "batch_gpu.json"
    with contextlib.suppress(OSError):
        out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"info": info, "results": results}, indent=2))
    print(f"\nresults: {out}", flush=True)
    return 0 if all(r.get("exit", 0) == 0 for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
