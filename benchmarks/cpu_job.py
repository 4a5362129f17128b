"""The app's full job on the CPU: the tiny pipeline, every output format, the app's defaults.

    python benchmarks/cpu_job.py [--work DIR] [--preset balanced] [--runs 1] [--threads N]

Writes the tiny random-weight pipeline (`python -m trellis.tools.tiny_pipeline`), builds the job's
settings with the command line's own parser (`python -m desktop generate IMAGE --device cpu --formats
glb,ply,obj,mp4 --seed 3`, so the preset's values and the CPU's `for_device` changes are what a user
gets) and runs them through the same JobRunner as that command, in this process, so that every
progress report can be timed. Prints the job's timings.json (per-stage seconds), the settings used,
the largest gap between two progress reports (over the whole job and within the export) with the
stages around it, and checks every file (the GLB loads with its texture, the mp4 has its frames, the
PLY its Gaussians). Speed is measured here, never in the tests.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def eta_accuracy(etas, end: float) -> dict:
    """How far the job's ETA was from the time really left: the worst ratio (ETA / left, or its inverse when the
    ETA was short) after 5 % of the job and while more than 1 s was left, and the ETA shown at 10 / 50 / 90 %."""
    worst, where, shown = 1.0, None, {}
    for t, fraction, eta, stage in etas:
        left = end - t
        if eta is None or fraction < 0.05 or left < 1.0:
            continue
        ratio = eta / left if eta > left else left / max(eta, 1e-3)
        if ratio > worst:
            worst, where = ratio, [stage, round(fraction, 3), round(eta, 1), round(left, 1)]
        for mark in (0.1, 0.5, 0.9):
            if fraction >= mark and mark not in shown:
                shown[mark] = [round(eta, 1), round(left, 1)]
    return {"worst_ratio": round(worst, 2), "worst_at [stage, fraction, eta, left]": where,
            "at_fraction [eta, left]": shown}


def largest_gaps(events, start: float, k: int = 3) -> list:
    """The k largest gaps between consecutive progress reports after `start`:
    (seconds, (stage, message, step, total) before, the same after)."""
    pts = [(t, key) for t, key in events if t >= start]
    gaps = [(b[0] - a[0], a[1], b[1]) for a, b in zip(pts, pts[1:])]
    return sorted(gaps, key=lambda g: -g[0])[:k]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="/tmp/cpu_job")
    ap.add_argument("--preset", default="balanced")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from app_gpu import check_outputs, test_image
    from desktop import cli
    from desktop.jobs import JobRunner, JobState
    from trellis.tools.tiny_pipeline import write_tiny_pipeline

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    model = work / "tiny_pipeline"
    if not (model / "pipeline.json").exists():
        write_tiny_pipeline(str(model), seed=0)
    image = test_image(work / "object.png")
    out = work / "outputs"
    argv = [str(image), "-o", str(out), "--model", str(model), "--device", "cpu", "--preset", args.preset,
            "--formats", "glb,ply,obj,mp4", "--seed", "3"]
    settings = cli.settings_from_args(cli.build_parser().parse_args(argv))

    events = []        # (time, (stage, message, step, total)) of every progress report
    etas = []          # (time, fraction, eta_s) of every progress report

    def record(job, p):
        events.append((time.perf_counter(), (p.stage, p.message, p.step, p.total)))
        etas.append((time.perf_counter(), p.fraction, p.eta_s, f"{p.stage}:{p.message}"))

    from provenance import source_commit

    commit = source_commit()
    print(f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
          f"{torch.__version__} with {torch.get_num_threads()} threads, commit {commit}, "
          f"{time.strftime('%Y-%m-%d')}", flush=True)
    runner = JobRunner(str(model), out, device="cpu", on_progress=record)
    try:
        for run in range(args.runs):
            events.clear()
            etas.clear()
            t0 = time.perf_counter()
            job = runner.submit([str(image)], settings)
            job.wait()
            wall = time.perf_counter() - t0
            if job.state != JobState.DONE:
                print(f"job {run + 1} {job.state}: {job.error}\n{job.detail or ''}", flush=True)
                return 1
            timings = job.timings
            export_start = next((t for t, key in events if key[0] in ("ply", "video", "bake")), t0)
            export_s = sum(timings.get("export", {}).values())
            used = job.used_settings
            print(f"\njob {run + 1}: {wall:.1f} s wall, pipeline {timings['pipeline']['seconds']:.1f} s, "
                  f"export {export_s:.1f} s", flush=True)
            print("settings used:", json.dumps({k: getattr(used, k) for k in (
                "preset", "texture_size", "bake_views", "bake_resolution", "video_frames", "video_resolution",
                "fill_holes", "simplify")}), flush=True)
            print("export seconds:", json.dumps({k: round(v, 2) for k, v in timings.get("export", {}).items()}))
            bake = timings.get("export_bake_stages", {})
            print("bake stages:", json.dumps({k: bake.get(k) for k in ("seconds", "cleanup", "observations",
                                                                          "uv_method", "faces")}), flush=True)
            print(f"progress reports: {len(events)}")
            print("ETA / time left:", json.dumps(eta_accuracy(etas, t0 + wall)), flush=True)
            for label, start in (("whole job", t0), ("export", export_start)):
                for gap, before, after in largest_gaps(events, start):
                    print(f"  largest gaps, {label}: {gap:.2f} s between {before} and {after}")
            print("files:", json.dumps(check_outputs(Path(job.out_dir)), default=str)[:1500], flush=True)
    finally:
        runner.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
