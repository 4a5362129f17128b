"""Stage 2 alone for every published SLat flow on one structure: why a text flow costs what it costs.

    python benchmarks/slat_flow_sizes_gpu.py [--models image-L,text-B,text-L,text-XL] [--voxels 20000]
        [--steps 12] [--runs 3] [--profile text-XL,image-L] [--out slat_flow_sizes.json]

Each flow is built from its manifest (random weights, the published config and dtypes) straight on the GPU and
sampled as the pipeline samples stage 2 when the flows stay resident: `FlowEulerGuidanceIntervalSampler`, CFG
batched, the condition's keys and values cached for the run, no CUDA graphs, on a fixed shell of `--voxels`
voxels at 64^3 (or as many scattered at random: `--structure scattered`); the condition is random tokens of the model's own shape (image: 1374 x 1024 DINOv2 tokens, text: 77
x 768 CLIP tokens). Reported per flow: seconds (median of --runs warm runs), the forwards' FLOPs counted by
torch.utils.flop_counter, and TFLOP/s. `--profile` adds, per named flow, a torch.profiler breakdown of one run's
CUDA time by kernel family (attention, GEMM, sparse conv gather / scatter, norms, elementwise) and the top kernels.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from mesh_memory_gpu import scattered_structure  # noqa: E402
from networks_gpu import MANIFESTS, shell_structure  # noqa: E402

TEXT_MANIFESTS = ROOT / "tests" / "data" / "state_dict_text"
FLOWS = {"image-L": (MANIFESTS / "slat_flow_model.json", "ckpt_json_text", (1374, 1024)),
         **{f"text-{s}": (TEXT_MANIFESTS / f"text_slat_flow_txt_dit_{s}_64l8p2_fp16.json", "ckpt_json_text_assumed",
                          (77, 768)) for s in ("B", "L", "XL")}}
FAMILIES = (("attention", ("flash", "fmha", "attention", "sdpa", "softmax")),
            ("gemm", ("gemm", "sm90", "cutlass", "cublas", "xmma", "ampere", "hopper", "nvjet")),
            ("conv gather / scatter", ("gather", "scatter", "index", "conv", "implicit")),
            ("norm", ("norm", "rms", "welford")),
            ("elementwise / copy", ("elementwise", "vectorized", "copy", "cat", "fill", "reduce", "unrolled")))


def build(name: str, device: torch.device):
    """The flow of `name` from its manifest, random weights (N(0, 0.02)), on `device` in its checkpoint dtypes."""
    from trellis.models import from_config

    path, field, cond_shape = FLOWS[name]
    config = json.loads(json.loads(path.read_text())[field])
    torch.manual_seed(0)
    with torch.device(device):
        model = from_config(config)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.02)
    return model.eval(), cond_shape, config["args"]


def sample(model, coords, cond, neg, steps: int):
    from trellis.modules.sparse import SparseTensor
    from trellis.pipelines.samplers import FlowEulerGuidanceIntervalSampler

    g = torch.Generator(device=coords.device).manual_seed(1)
    noise = SparseTensor(torch.randn(coords.shape[0], model.in_channels, device=coords.device, generator=g), coords)
    return FlowEulerGuidanceIntervalSampler(1e-5).sample(
        model, noise, cond, neg, steps=steps, rescale_t=3.0, cfg_strength=3.0, cfg_interval=(0.5, 1.0),
        verbose=False, cfg_batch=True, cuda_graph=False, cache_context=True).samples


def family(kernel: str) -> str:
    k = kernel.lower()
    for fam, words in FAMILIES:
        if any(w in k for w in words):
            return fam
    return "other"


def profile(model, coords, cond, neg, steps: int, top: int = 25) -> dict:
    from torch.profiler import ProfilerActivity, profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
        sample(model, coords, cond, neg, steps)
        torch.cuda.synchronize()
    kernels = defaultdict(lambda: [0.0, 0])
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            kernels[e.name][0] += e.device_time_total / 1e6
            kernels[e.name][1] += 1
    fams = defaultdict(float)
    for name, (sec, _) in kernels.items():
        fams[family(name)] += sec
    total = sum(fams.values())
    ranked = sorted(kernels.items(), key=lambda kv: -kv[1][0])[:top]
    return {"gpu_busy_seconds": round(total, 4),
            "families": {k: round(v, 4) for k, v in sorted(fams.items(), key=lambda kv: -kv[1])},
            "top": [{"kernel": n[:160], "seconds": round(s, 4), "calls": c, "family": family(n)}
                    for n, (s, c) in ranked]}


def flops(model, coords, cond, neg, steps: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        sample(model, coords, cond, neg, steps)
    return counter.get_total_flops()


@torch.no_grad()
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="image-L,text-B,text-L,text-XL")
    ap.add_argument("--voxels", type=int, default=20000)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--profile", default="image-L,text-XL")
    ap.add_argument("--structure", default="shell", choices=("shell", "scattered"),
                    help="a thick spherical shell (a surface, as stage 1 makes) or voxels scattered at random")
    ap.add_argument("--out", default="slat_flow_sizes.json")
    args = ap.parse_args()
    device = torch.device("cuda")
    make = shell_structure if args.structure == "shell" else scattered_structure
    coords = make(args.voxels, device=device).coords
    from provenance import source_commit

    commit = source_commit()
    info = {"device": torch.cuda.get_device_name(device), "torch": torch.__version__, "commit": commit,
            "date": time.strftime("%Y-%m-%d"), "structure": args.structure, "voxels": int(coords.shape[0]),
            "tokens": int(torch.unique(coords[:, 1:] // 2, dim=0).shape[0]), "steps": args.steps, "flows": {}}
    for name in args.models.split(","):
        model, (tokens, width), margs = build(name, device)
        g = torch.Generator(device=device).manual_seed(2)
        cond = torch.randn(1, tokens, width, device=device, generator=g)
        neg = torch.zeros_like(cond)
        sample(model, coords, cond, neg, args.steps)                       # warm-up
        times = []
        for _ in range(args.runs):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            sample(model, coords, cond, neg, args.steps)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        sec = statistics.median(times)
        total_flops = flops(model, coords, cond, neg, args.steps)
        row = {"args": {k: margs[k] for k in ("model_channels", "num_blocks", "num_heads", "io_block_channels",
                                               "num_io_res_blocks")},
               "seconds": round(sec, 4), "runs": [round(t, 4) for t in times], "tflop": round(total_flops / 1e12, 2),
               "tflop_per_s": round(total_flops / 1e12 / sec, 1),
               "peak_allocated_GiB": round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 2)}
        if name in args.profile.split(","):
            row["profile"] = profile(model, coords, cond, neg, args.steps)
        info["flows"][name] = row
        print(json.dumps({name: row}, indent=1), flush=True)
        del model
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    Path(args.out).write_text(json.dumps(info, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
