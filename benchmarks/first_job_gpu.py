"""Where a fresh process's first job loses its time: TRELLIS-image-large (the full-size random-weight folder of
app_gpu.py) loaded as the app loads it, then the same sampling call three times (the balanced preset's steps, both
decoders, the realistic object's surface voxels as stage 2's structure), each timed per stage; the first two under
cProfile, so that what only the first call pays (libraries' start-up, kernels' first launch, graph capture) stands
out as the difference between their profiles.

    python benchmarks/first_job_gpu.py [--work /tmp/app_gpu] [--object bunny] [--top 40] [--out first_job.json]
        [--prewarm none|beside|graphs]

Run it after app_gpu.py on the same host (the pipeline folder exists and Triton's disk cache is warm, as on a
user's second launch). ``--prewarm beside`` runs ``trellis.pipelines.first_use.warm_libraries`` in a thread beside the
model load, as the app's warm-up does (``desktop.jobs.warmup.warm_libraries_beside``); ``--prewarm graphs`` also makes
the structure flow's kept graphs beside it in a thread of their own (``desktop.jobs.warmup.GraphsBesideLoad``), as the
app's warm-up does on a GPU, then the occupancy decoder's first call.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def stage_seconds(pipeline) -> dict:
    return {s["stage"]: round(s["seconds"], 3) for s in getattr(pipeline, "last_stats", []) if "seconds" in s}


def profile_rows(prof: cProfile.Profile) -> dict:
    """{function: (calls, tottime, cumtime)} of a profile."""
    stats = pstats.Stats(prof, stream=io.StringIO())
    rows = {}
    for (file, line, name), (cc, nc, tt, ct, _callers) in stats.stats.items():
        rows[f"{Path(file).name}:{line}({name})" if file != "~" else name] = (nc, tt, ct)
    return rows


def top_difference(first: dict, second: dict, key: int, top: int) -> list:
    """Functions by how much longer they took in the first call than in the second (key 1: own time, 2: with
    callees)."""
    rows = []
    for name, row in first.items():
        other = second.get(name, (0, 0.0, 0.0))
        rows.append((row[key] - other[key], name, row[0], other[0], row[key], other[key]))
    rows.sort(reverse=True)
    return [{"function": n, "extra_s": round(d, 4), "calls": [c1, c2], "seconds": [round(s1, 4), round(s2, 4)]}
            for d, n, c1, c2, s1, s2 in rows[:top]]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="/tmp/app_gpu")
    ap.add_argument("--object", default="bunny", choices=("bunny", "nut"))
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--prewarm", default="none", choices=("none", "beside", "graphs"))
    ap.add_argument("--out", default="first_job.json")
    ap.add_argument("--model", default=None, help="a pipeline folder (default: WORK/TRELLIS-image-large-random)")
    ap.add_argument("--device", default="cuda", help="cpu: the code path on the tiny pipeline")
    args = ap.parse_args()
    t_start = time.perf_counter()

    # The realistic object's bootstrap of app_gpu.py, applied to the pipeline class as the app imports it.
    import app_gpu
    from provenance import source_commit
    sys.argv.insert(1, args.object)
    exec(compile(app_gpu.REALISTIC_HEAD, "realistic_head", "exec"), globals())
    import torch
    t_torch = time.perf_counter()
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.zeros(1, device=device)
    t_cuda = time.perf_counter()
    result = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu", "torch": torch.__version__,
              "prewarm": args.prewarm, "commit": source_commit(),
              "date": time.strftime("%Y-%m-%d"),
              "fast_paths": os.environ.get("TRELLIS_FAST_PATHS", "on"),
              "import_torch_s": round(t_torch - t_start, 3), "cuda_start_s": round(t_cuda - t_torch, 3)}

    from desktop.jobs.models import load_image_pipeline
    from desktop.settings import GenerationSettings
    from desktop.jobs.sampling import sampler_params
    from trellis.pipelines import trellis_image_to_3d

    patch_pipeline(trellis_image_to_3d.TrellisImageTo3DPipeline)     # noqa: F821 (from the bootstrap)
    t = time.perf_counter()
    primer = graphs = maker = None
    if args.prewarm in ("beside", "graphs"):
        from desktop.jobs.warmup import GraphsBesideLoad, warm_libraries_beside

        primer = warm_libraries_beside(str(device), "auto", lambda: False)
        if args.prewarm == "graphs":
            graphs = GraphsBesideLoad("auto", "auto")
            maker = graphs.start(str(device), lambda: False)
    model = args.model or str(Path(args.work) / "TRELLIS-image-large-random")
    pipeline = load_image_pipeline(model, str(device), graphs.on_model if graphs is not None else None)
    sync()
    result["load_s"] = round(time.perf_counter() - t, 3)
    if graphs is not None:
        graphs.load_ended()
        maker.join()
        result["graphs_kept"] = graphs.made is not None and pipeline.keep_structure_graphs(graphs.made)
    if primer is not None:                                # as the app's warm-up: the job starts after both
        primer.join()
        result["load_and_prewarm_s"] = round(time.perf_counter() - t, 3)
    settings = GenerationSettings.from_preset("balanced", seed=3, randomize_seed=False)
    pipeline.set_memory_policy(precision="auto", offload="auto")
    from PIL import Image

    image = Image.open(ROOT / "assets" / "examples" / "mug.png")
    params = sampler_params(settings)
    runs, profiles = [], []
    for i in range(3):
        prof = cProfile.Profile() if i < 2 else None
        sync()
        t = time.perf_counter()
        if prof:
            prof.enable()
        pipeline.run(image, formats=["gaussian", "mesh"], **params)
        sync()
        if prof:
            prof.disable()
            profiles.append(profile_rows(prof))
        runs.append({"seconds": round(time.perf_counter() - t, 3), "stages": stage_seconds(pipeline)})
        print(f"[first_job] run {i + 1}: " + json.dumps(runs[-1]), flush=True)
    result["runs"] = runs
    result["extra_own_time"] = top_difference(profiles[0], profiles[1], 1, args.top)
    result["extra_with_callees"] = top_difference(profiles[0], profiles[1], 2, args.top)
    print(json.dumps(result, indent=1), flush=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
