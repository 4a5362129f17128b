"""The first job's ETA on a machine that has learned nothing: the page's default job on the tiny pipeline, in a new
process with an empty state folder, its ETA against the time really left; then the stage times it measured, as
desktop/jobs/first_estimate.py's REFERENCE_SECONDS takes them, with the probe's seconds.

    python benchmarks/first_eta.py [--work DIR] [--runs 1] [--image IMG]

Run it on the reference machine to write the table (`--table`), anywhere to see the first job's ETA ratio.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="/tmp/first_eta")
    ap.add_argument("--image", default=str(ROOT / "assets" / "examples" / "chair.png"))
    ap.add_argument("--table", action="store_true", help="print the stage times as REFERENCE_SECONDS")
    args = ap.parse_args()
    os.environ["TRELLIS_STATE_DIR"] = tempfile.mkdtemp(prefix="first-eta-state-")

    from cpu_job import eta_accuracy
    from desktop.jobs import JobRunner, JobState
    from desktop.jobs.first_estimate import probe_seconds
    from desktop.settings import GenerationSettings
    from trellis.tools.tiny_pipeline import write_tiny_pipeline

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    model = work / "tiny_pipeline"
    if not (model / "pipeline.json").exists():
        write_tiny_pipeline(str(model), seed=0)
    etas = []

    def record(job, p):
        etas.append((time.perf_counter(), p.fraction, p.eta_s, f"{p.stage}:{p.message}"))

    runner = JobRunner(str(model), work / "outputs", device="cpu", on_progress=record)
    try:
        t0 = time.perf_counter()
        job = runner.submit([args.image], GenerationSettings(seed=3))
        job.wait()
        wall = time.perf_counter() - t0
        if job.state != JobState.DONE:
            print(f"job {job.state}: {job.error}\n{job.detail or ''}")
            return 1
        print(f"first job: {wall:.1f} s, probe {probe_seconds():.3f} s")
        print("ETA / time left:", json.dumps(eta_accuracy(etas, t0 + wall)))
        for t, fraction, eta, stage in etas[:: max(1, len(etas) // 25)]:
            print(f"  {t - t0:7.1f} s  {fraction * 100:5.1f} %  ETA {eta if eta is None else round(eta, 1)}  "
                  f"left {t0 + wall - t:6.1f}  {stage}")
        if args.table:
            worker = runner._workers[0]
            stages = worker.stage_times.snapshot()["stages"]
            print("REFERENCE_PROBE_S =", round(probe_seconds(), 4))
            print("REFERENCE_SECONDS =", json.dumps({k: [round(v[0], 4), v[1]] for k, v in sorted(stages.items())}))
    finally:
        runner.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
