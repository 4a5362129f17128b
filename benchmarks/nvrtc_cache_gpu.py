"""What the NVRTC kernels cost a fresh process before their first launch, without and with the PTX disk cache
(``trellis_nvrtc.cache_dir``; issue 14 §5, launch -> first asset on a machine without Triton).

    python benchmarks/nvrtc_cache_gpu.py [--out nvrtc_cache_gpu.json]

Three fresh processes in a row, each building (compile or read, then load) every NVRTC kernel the app uses
(the flow blocks' norms: a block's three ``norm_modulate`` variants and the q/k RMS norm; the Gaussian
compositor, the mesh rasteriser, the sparse conv's fp16 tile shapes): the cache switched off (``TRELLIS_KERNEL_CACHE=off``: what every process paid before), an empty
cache folder (the first start: compile and write), the same folder again (every later start). The driver's
own cache of machine code (``~/.nv/ComputeCache``) stays as the machine has it, as for a user.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
sys.path.insert(0, {ext!r})
import torch
torch.cuda.init()
torch.zeros(1, device="cuda")
import trellis_nvrtc
from trellis_nvrtc import block_norm, gaussian_composite, mesh_raster, sparse_conv
kernels = [block_norm.norm_source(1024, 8, 0), block_norm.norm_source(1024, 7, 1), block_norm.norm_source(1024, 9, 0),
           block_norm.rms_source(16, 64, 0, 1), (gaussian_composite._SOURCE, "trellis_gaussian_composite"), (mesh_raster._SOURCE, "trellis_raster_keys")]
for bm, bn in sorted(sparse_conv.TILES):
    source, name, _ = sparse_conv._source(bm, bn, False, False)
    kernels.append((source, name))
times = {{}}
t0 = time.perf_counter()
for source, name in kernels:
    t = time.perf_counter()
    trellis_nvrtc.compiled(source, name, "cuda")
    times[name] = round(time.perf_counter() - t, 3)
print("RESULT " + json.dumps({{"total_s": round(time.perf_counter() - t0, 3), "kernels": times,
                               "stats": trellis_nvrtc.stats}}))
"""


def child(cache: str) -> dict:
    env = dict(os.environ, TRELLIS_KERNEL_CACHE=cache)
    code = CHILD.format(ext=str(ROOT / "extensions" / "trellis_nvrtc"))
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    wall = time.perf_counter() - t0
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    if done.returncode or not lines:
        raise SystemExit(f"child failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    got = json.loads(lines[-1][7:])
    got["process_wall_s"] = round(wall, 3)
    return got


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="nvrtc_cache_gpu.json")
    args = ap.parse_args()
    import torch
    from provenance import source_commit

    commit = source_commit()
    info = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "commit": commit,
            "date": time.strftime("%Y-%m-%d %H:%M")}
    with tempfile.TemporaryDirectory() as folder:
        info["runs"] = {"cache off": child("off"), "empty cache (first start)": child(folder),
                        "warm cache (later starts)": child(folder)}
        info["cache_files"] = sorted(p.name for p in Path(folder).iterdir())
    Path(args.out).write_text(json.dumps(info, indent=1))
    print(json.dumps(info, indent=1))
    for label, r in info["runs"].items():
        print(f"| {label} | {r['total_s']} s | {r['stats']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
