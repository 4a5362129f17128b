"""TRELLIS.2's full-size networks on a GPU with random weights: one forward's time and peak memory per network and
token count (TRELLIS.2 facts §3, §6, §14).

    python benchmarks/trellis2_networks.py [--networks ss_flow,shape_flow_1024] [--tokens 32768,49152]
                                           [--repeats 3] [--fast-paths off] [--out trellis2_networks.json]
                                           [--profile]   # + each forward's GPU kernels, by kind (matmul, attention, rest)

Shapes, not values, decide time and memory, so each network is built from its manifest's ckpt JSON
(tests/data/state_dict_trellis2) straight on the GPU without PyTorch's initialisation, in the checkpoints' dtypes
(bf16 flow torsos), and filled with small random values. Token counts are the published ones: condition tokens 1029
(DINOv3 at 512) or 4101 (at 1024); the structure flow's 16^3 = 4096 tokens; the shape / texture flows at 8192
tokens on the 512 model's 32^3 grid and 32768 / 49152 (the cascade's cap) on the 1024 model's 64^3 grid. Stages the
sampler runs with CFG batch 2 (structure, shape); the texture flow (guidance 1) batch 1. The SC-VAE decoders (fp16
torsos) decode 8192 / 32768 latent voxels of 64^3 to the 1024^3 grid, the texture decoder along a random subdivision.

Adding a network is one ``Network`` row: its manifest stem, its token counts, its CFG batch and a function that
makes one forward's inputs (``inputs(tokens, batch, device) -> (args, kwargs)``).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import trellis.models as models  # noqa: E402
from trellis import fastpaths  # noqa: E402
from trellis.modules.sparse import SparseTensor  # noqa: E402

MANIFESTS = Path(__file__).resolve().parents[1] / "tests" / "data" / "state_dict_trellis2"
COND_512, COND_1024 = 1029, 4101


def condition(tokens: int, batch: int, device) -> torch.Tensor:
    g = torch.Generator(device=device).manual_seed(1)
    return torch.randn(batch, tokens, 1024, device=device, generator=g)


def timesteps(batch: int, device) -> torch.Tensor:
    return torch.full((batch,), 750.0, device=device)


def latent_voxels(tokens: int, grid: int, batch: int, channels: int, device) -> SparseTensor:
    """`tokens` distinct voxels of a grid^3 latent (a fixed random set, row-major order), repeated for each batch
    item as the sampler repeats its CFG pair; random features."""
    g = torch.Generator().manual_seed(0)
    cells = torch.randperm(grid ** 3, generator=g)[:tokens].sort().values
    xyz = torch.stack([cells // grid ** 2, cells // grid % grid, cells % grid], 1)
    coords = torch.cat([torch.cat([torch.full((tokens, 1), b), xyz], 1) for b in range(batch)]).int().to(device)
    feats = torch.randn(coords.shape[0], channels, generator=g).to(device)
    return SparseTensor(feats, coords)


def structure_inputs(tokens: int, batch: int, device):
    g = torch.Generator(device=device).manual_seed(2)
    x = torch.randn(batch, 8, 16, 16, 16, device=device, generator=g)
    return (x, timesteps(batch, device), condition(COND_512, batch, device)), {}


def shape_inputs(grid: int, cond: int) -> Callable:
    def make(tokens: int, batch: int, device):
        x = latent_voxels(tokens, grid, batch, 32, device)
        return (x, timesteps(batch, device), condition(cond, batch, device)), {}
    return make


def texture_inputs(grid: int, cond: int) -> Callable:
    def make(tokens: int, batch: int, device):
        x = latent_voxels(tokens, grid, batch, 32, device)
        shape = x.replace(torch.randn_like(x.feats))          # the normalised shape latent, appended in the model
        return (x, timesteps(batch, device), condition(cond, batch, device)), {"concat_cond": shape}
    return make


def decoder_inputs(tokens: int, batch: int, device):
    """An SC-VAE decoder's latent: `tokens` voxels of the 1024 model's 64^3 grid (fine voxels on 1024^3)."""
    return (latent_voxels(tokens, 64, batch, 32, device),), {}


def guided_decoder_inputs(tokens: int, batch: int, device):
    """The texture decoder's latent and a subdivision to follow (it predicts none): random logits at each of the
    four C2S levels, about half the children kept, as the shape decoder's random weights keep."""
    from trellis.models.trellis2.sc_vae_blocks import child_coords, subdivision_children

    x = latent_voxels(tokens, 64, batch, 32, device)
    g = torch.Generator(device=device).manual_seed(3)
    coords, subs = x.coords, []
    for _ in range(4):
        logits = torch.randn(coords.shape[0], 8, device=device, generator=g)
        subs.append(SparseTensor(logits, coords))
        coords = child_coords(coords, *subdivision_children(logits))
    return (x,), {"guide_subs": subs}


@dataclass(frozen=True)
class Network:
    stem: str                       # manifest / checkpoint stem
    tokens: tuple[int, ...]         # latent tokens per batch item to time
    batch: int                      # 2 where the sampler batches a CFG pair
    inputs: Callable                # (tokens, batch, device) -> (args, kwargs)


NETWORKS = {
    "ss_flow": Network("ss_flow_img_dit_1_3B_64_bf16", (4096,), 2, structure_inputs),
    "shape_flow_512": Network("slat_flow_img2shape_dit_1_3B_512_bf16", (8192,), 2, shape_inputs(32, COND_512)),
    "shape_flow_1024": Network("slat_flow_img2shape_dit_1_3B_1024_bf16", (32768, 49152), 2,
                               shape_inputs(64, COND_1024)),
    "tex_flow_512": Network("slat_flow_imgshape2tex_dit_1_3B_512_bf16", (8192,), 1, texture_inputs(32, COND_512)),
    "tex_flow_1024": Network("slat_flow_imgshape2tex_dit_1_3B_1024_bf16", (32768, 49152), 1,
                             texture_inputs(64, COND_1024)),
    # the SC-VAE decoders (fp16 torso) at the 1024 model's latent sizes; stages in benchmarks/trellis2_decoders.py
    "shape_dec": Network("shape_dec_next_dc_f16c32_fp16", (8192, 32768), 1, decoder_inputs),
    "tex_dec": Network("tex_dec_next_dc_f16c32_fp16", (8192, 32768), 1, guided_decoder_inputs),
}


def build(stem: str, device) -> torch.nn.Module:
    """The network of a manifest's ckpt JSON on `device`, in its checkpoint dtypes, with small random weights."""
    config = json.loads(json.loads((MANIFESTS / f"{stem}.json").read_text())["ckpt_json_text"])
    torch.manual_seed(0)
    with models.skipped_init(), torch.device(device):
        model = models.from_config(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("gamma", "norm.weight", "norm1.weight", "norm2.weight")):
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02)
    return model.eval()


# Kernel kinds by name: the matrix products (cuBLAS / CUTLASS / Triton matmuls), the attention kernels, the rest
# (norms, RoPE, modulation, activations, copies: what fusing could still shorten).
KINDS = (("attention", ("flash", "fmha", "cudnn", "attention", "sdpa")),
         ("matmul", ("gemm", "xmma", "cutlass", "nvjet", "matmul", "_mm_")))


def kind_of(kernel: str) -> str:
    low = kernel.lower()
    return next((kind for kind, keys in KINDS if any(k in low for k in keys)), "rest")


def kernel_profile(fn, top: int = 15) -> dict:
    """One call of `fn` under torch.profiler: GPU milliseconds per kernel kind and the `top` kernels."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    rows = [(e.key, e.self_device_time_total / 1e3, e.count) for e in prof.key_averages()
            if e.self_device_time_total > 0]
    kinds: dict = {}
    for name, ms, _ in rows:
        kinds[kind_of(name)] = kinds.get(kind_of(name), 0.0) + ms
    rows.sort(key=lambda r: -r[1])
    return {"ms_by_kind": {k: round(v, 2) for k, v in kinds.items()},
            "top": [{"kernel": n[:90], "ms": round(ms, 2), "calls": c, "kind": kind_of(n)} for n, ms, c in rows[:top]]}


def output_tensor(out) -> torch.Tensor:
    return out.feats if isinstance(out, SparseTensor) else out


def timed(fn, repeats: int):
    """Median seconds of `fn()` after a warm-up, peak allocated / reserved bytes over the timed calls, last output."""
    fn()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times, out = [], None
    for _ in range(repeats):
        out = None                                    # the previous output is not kept through the next call
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2], torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved(), out


@torch.no_grad()
def run_network(name: str, net: Network, tokens: list[int] | None, repeats: int, device,
                profiled: bool = False) -> list[dict]:
    model = build(net.stem, device)
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    rows = []
    for n in tokens or net.tokens:
        args, kwargs = net.inputs(n, net.batch, device)
        try:
            sec, alloc, reserved, out = timed(lambda: model(*args, **kwargs), repeats)
            row = {"network": name, "tokens": n, "batch": net.batch, "seconds": round(sec, 4),
                   "peak_alloc_GiB": round(alloc / 2 ** 30, 3), "peak_reserved_GiB": round(reserved / 2 ** 30, 3),
                   "weights_GiB": round(weights / 2 ** 30, 3),
                   "finite": bool(torch.isfinite(output_tensor(out)).all())}
            if profiled:
                out = None
                row["profile"] = kernel_profile(lambda: model(*args, **kwargs))
        except torch.cuda.OutOfMemoryError as err:
            row = {"network": name, "tokens": n, "batch": net.batch, "error": f"out of memory: {err}"[:200]}
        args = kwargs = out = None
        torch.cuda.empty_cache()
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--networks", default=",".join(NETWORKS), help=f"comma-separated, of: {', '.join(NETWORKS)}")
    ap.add_argument("--tokens", default=None, help="comma-separated token counts per item (default: each network's)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--fast-paths", choices=("on", "off"), default="on",
                    help="off: the PyTorch twins only (trellis.fastpaths.set_enabled(False))")
    ap.add_argument("--profile", action="store_true", help="also each forward's GPU kernels by kind (torch.profiler)")
    ap.add_argument("--out", default="trellis2_networks.json")
    ap.add_argument("--commit", default=None, help="commit id to record (default: provenance.source_commit())")
    args = ap.parse_args()
    names = [n for n in args.networks.split(",") if n]
    unknown = sorted(set(names) - set(NETWORKS))
    if unknown:
        ap.error(f"unknown networks {unknown}; known: {', '.join(NETWORKS)}")
    if not torch.cuda.is_available():
        print("needs a CUDA GPU", file=sys.stderr)
        return 2
    tokens = [int(t) for t in args.tokens.split(",")] if args.tokens else None
    fastpaths.set_enabled(args.fast_paths == "on")
    commit = args.commit
    if commit is None:
        from provenance import source_commit

        commit = source_commit()
    info = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "python": platform.python_version(),
            "commit": commit, "date": time.strftime("%Y-%m-%d"), "fast_paths": args.fast_paths, "rows": []}
    print(json.dumps({k: v for k, v in info.items() if k != "rows"}), flush=True)
    dev = torch.device("cuda")
    for name in names:
        info["rows"] += run_network(name, NETWORKS[name], tokens, args.repeats, dev, args.profile)
        torch.cuda.empty_cache()
    Path(args.out).write_text(json.dumps(info, indent=1))
    print(markdown(info))
    return 0


def markdown(info: dict) -> str:
    lines = [f"Device {info['device']}, torch {info['torch']}, commit {info['commit']}, {info['date']}, fast paths "
             f"{info['fast_paths']}", "",
             "| network | tokens per item | batch | forward s | peak alloc GiB | peak reserved GiB | weights GiB |",
             "|---|---|---|---|---|---|---|"]
    for r in info["rows"]:
        if "error" in r:
            lines.append(f"| {r['network']} | {r['tokens']} | {r['batch']} | {r['error']} | | | |")
        else:
            lines.append(f"| {r['network']} | {r['tokens']} | {r['batch']} | {r['seconds']} | {r['peak_alloc_GiB']} | "
                         f"{r['peak_reserved_GiB']} | {r['weights_GiB']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
