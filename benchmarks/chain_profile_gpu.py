"""Where the chain's GPU time goes, per stage and per kind of kernel (issue 14: resident fp16 <= 0.8 s).

    python benchmarks/chain_profile_gpu.py [--preset "fp16 eager"] [--out chain_profile.json]

The full-size random-weight pipeline of ``pipeline_gpu.py`` (12 + 12 steps, CFG 7.5 / 3, interval [0.5, 1],
stage 2 on the fixed ~20 000-voxel shell). One warm-up run, one timed run, then each stage once more under
torch.profiler: its wall seconds, the summed GPU kernel time (busy; wall - busy is time the GPU waited for the
host), that time by kind of kernel (GEMM, attention, sparse conv, the blocks' fused norms, other elementwise,
copies) and the top kernels, and on the host's side the operators and runtime calls with the most self CPU time.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from networks_gpu import shell_structure  # noqa: E402
from pipeline_gpu import PRESETS, build_pipeline, one_run  # noqa: E402

KINDS = [("attention", r"flash|fmha|attention|cudnn.*sdpa|sdpa"),
         ("gemm", r"gemm|xmma|cutlass|nvjet|sm90_|sm80_|ampere_|hopper"),
         ("sparse conv", r"subm_conv|conv3d|implicit|_conv_"),
         ("fused norms", r"norm_modulate|head_rms|block_norm|layer_norm|rms"),
         ("copy / cast", r"copy|cast|cat|Cat|fill|index|gather|scatter"),
         ("elementwise", r"elementwise|vectorized|reduce|softmax|gelu|silu")]


TOP_PRINTED = 20       # kernels listed per stage on stdout (the JSON keeps 30)


def kind_of(name: str) -> str:
    for kind, pattern in KINDS:
        if re.search(pattern, name, re.IGNORECASE):
            return kind
    return "other"


def profiled(fn):
    from torch.profiler import ProfilerActivity, profile
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        wall = time.perf_counter() - t0
    by_kind, by_name, calls, launches = defaultdict(float), defaultdict(float), defaultdict(int), 0
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            us = e.device_time if hasattr(e, "device_time") else e.cuda_time
            by_kind[kind_of(e.name)] += us / 1e3
            by_name[e.name[:90]] += us / 1e3
            calls[e.name[:90]] += 1
            launches += 1
    busy = sum(by_kind.values())
    top = sorted(by_name.items(), key=lambda kv: -kv[1])[:30]
    # the host's side: the operators and runtime calls with the most self CPU time (a wait for the GPU shows as a
    # synchronising call: cudaStreamSynchronize, cudaMemcpyAsync to the host, aten::item / _local_scalar_dense)
    cpu = sorted(((a.key, a.self_cpu_time_total / 1e3, a.count) for a in prof.key_averages()),
                 key=lambda r: -r[1])[:15]
    return {"wall_ms_profiled": round(wall * 1e3, 2), "gpu_busy_ms": round(busy, 2), "kernels": launches,
            "by_kind_ms": {k: round(v, 2) for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])},
            "top_ms": [[n, round(v, 2), calls[n]] for n, v in top],
            "cpu_self_top_ms": [[n[:80], round(ms, 2), c] for n, ms, c in cpu]}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="fp16 eager")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--voxels", type=int, default=20000)
    ap.add_argument("--out", default="chain_profile.json")
    args = ap.parse_args()
    preset = next(p for p in PRESETS if p[0] == args.preset)
    _, precision, offload, cfg_batch, graphs, compiled = preset
    pipe = build_pipeline()
    pipe.set_memory_policy(precision=precision, offload=offload, cfg_batch=cfg_batch, cuda_graphs=graphs,
                           compile=compiled)
    pipe = pipe.to("cuda")
    coords = shell_structure(args.voxels).coords
    image = torch.rand(1, 3, 518, 518, generator=torch.Generator().manual_seed(0))
    one_run(pipe, image, coords, args)                 # warm-up
    total, stages, _ = one_run(pipe, image, coords, args)
    info = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "preset": args.preset,
            "total_s": round(total, 3), "stages_s": {s["stage"]: round(s["seconds"], 4) for s in stages}}
    print(json.dumps(info), flush=True)
    ss = {"steps": args.steps, "cfg_strength": 7.5, "cfg_interval": [0.5, 1.0], "rescale_t": 3.0}
    slat = {"steps": args.steps, "cfg_strength": 3.0, "cfg_interval": [0.5, 1.0], "rescale_t": 3.0}
    with torch.no_grad():
        cond = pipe.get_cond(image)
        latent = pipe.sample_slat(cond, coords, slat, torch.Generator().manual_seed(1))

        def stage1():
            try:
                pipe.sample_sparse_structure(cond, 1, ss, torch.Generator().manual_seed(1))
            except ValueError:
                pass

        info["profile"] = {
            "sparse_structure": profiled(stage1),
            "slat": profiled(lambda: pipe.sample_slat(cond, coords, slat, torch.Generator().manual_seed(1))),
            "decode_mesh": profiled(lambda: pipe.decode_slat(latent, ("mesh",))),
            "decode_gaussian+rf": profiled(lambda: pipe.decode_slat(latent, ("gaussian", "radiance_field"))),
        }
    for name, p in info["profile"].items():
        print(name, json.dumps({k: p[k] for k in ("wall_ms_profiled", "gpu_busy_ms", "kernels", "by_kind_ms")}))
        for n, v, c in p["top_ms"][:TOP_PRINTED]:
            print(f"    {v:9.2f} ms  {c:6d} x  {n}")
        for n, v, c in p["cpu_self_top_ms"][:10]:
            print(f"    host {v:9.2f} ms  {c:6d} x  {n}")
    Path(args.out).write_text(json.dumps(info, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
