"""Where the model load's seconds go: TRELLIS-image-large (the full-size random-weight folder of app_gpu.py) loaded in a
fresh process, built and filled on the GPU (the app's route) and built on the CPU then moved (the plain route), with
the parts of each: PyTorch's import, CUDA's start, each network's build, read and fill, and a profile of the whole.

    python benchmarks/model_load_gpu.py [--work /tmp/app_gpu] [--runs 2] [--out model_load.json]

Each run is a fresh process (what an app start sees: the page cache warm, nothing else). Prints one JSON line per run
and a summary.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

CHILD = r"""
import cProfile, io, json, pstats, sys, time
t0 = time.perf_counter()
import torch
t_import = time.perf_counter() - t0
route, folder = sys.argv[1], sys.argv[2]
t = time.perf_counter(); torch.empty(1, device="cuda"); torch.cuda.synchronize(); t_cuda = time.perf_counter() - t
from trellis.models import device_load
parts = {"build": 0.0, "read": 0.0}
build_on, read_to = device_load.build_on, device_load.read_safetensors_to
def timed(fn, key):
    def run(*a, **k):
        t = time.perf_counter(); r = fn(*a, **k); torch.cuda.synchronize(); parts[key] += time.perf_counter() - t
        return r
    return run
device_load.build_on = timed(build_on, "build")
device_load.read_safetensors_to = timed(read_to, "read")
from trellis.pipelines import TrellisImageTo3DPipeline
prof = cProfile.Profile()
t = time.perf_counter()
prof.enable()
if route == "device":
    p = TrellisImageTo3DPipeline.from_pretrained(folder, device="cuda")
else:
    p = TrellisImageTo3DPipeline.from_pretrained(folder).to("cuda")
torch.cuda.synchronize()
prof.disable()
t_load = time.perf_counter() - t
s = io.StringIO(); pstats.Stats(prof, stream=s).sort_stats("cumulative").print_stats(30)
print(json.dumps({"route": route, "import_torch_s": round(t_import, 3), "cuda_start_s": round(t_cuda, 3),
                  "load_s": round(t_load, 3), "build_s": round(parts["build"], 3), "read_s": round(parts["read"], 3),
                  "allocated_gib": round(torch.cuda.memory_allocated() / 2**30, 3)}))
print(s.getvalue()[:6000], file=sys.stderr)
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default="/tmp/app_gpu")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    from app_gpu import write_full_pipeline

    folder = Path(args.work) / "TRELLIS-image-large-random"
    if not (folder / "pipeline.json").exists():
        write_full_pipeline(folder)
    import os

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    rows = []
    for _ in range(args.runs):
        for route in ("device", "plain"):
            t = time.perf_counter()
            proc = subprocess.run([sys.executable, "-c", CHILD, route, str(folder)], cwd=ROOT, env=env,
                                  capture_output=True, text=True)
            if proc.returncode:
                print(proc.stderr[-3000:], file=sys.stderr)
                return 1
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            row["process_s"] = round(time.perf_counter() - t, 3)
            rows.append(row)
            print(json.dumps(row), flush=True)
            print(proc.stderr, file=sys.stderr, flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
