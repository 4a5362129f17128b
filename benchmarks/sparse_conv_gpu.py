"""The submanifold sparse conv on a GPU: per layer (Triton implicit GEMM vs the NVRTC implicit GEMM, what
Windows without Triton gets, vs the PyTorch twin vs spconv) and in the networks (mesh decoder + FlexiCubes,
one SLat flow forward) per path.

    python benchmarks/sparse_conv_gpu.py [--voxels 20000] [--repeats 20] [--tune] [--tiles] [--out sparse_conv_gpu.json]

Shapes are those of the full-size networks on a ~20 000-voxel shell at 64^3 (random weights; shapes decide
time): the SLat flow's convs at 64^3 and 32^3, the mesh decoder's at 128^3 (~160 k sites) and 256^3
(~1.3 M sites), all fp16 (the shipped torso). Per layer: median seconds over ``--repeats`` (CUDA events,
after a warm-up that compiles), effective TFLOP/s of the dense 27-offset GEMM, peak memory above the
inputs, and the kernel's max difference from the twin relative to max|out|. The neighbour map (shared by
both our paths, cached per structure) is timed on its own. spconv rows appear when spconv imports
(``native`` and ``implicit_gemm`` algorithms, called the way the app calls it).

``--tune`` also sweeps Triton tile sizes per shape and prints the best next to ``pick_blocks``' choice
(paste the lines it prints into ``trellis_triton.sparse_conv.BLOCKS`` where they win clearly); ``--tiles``
times every NVRTC tile shape next to ``pick_tiles``' choice.

The network rows: ``triton`` = TRELLIS_FAST_PATHS=on with SPARSE_BACKEND=torch (the Triton conv, and the flow
blocks' NVRTC norms as a Linux user gets them; ``=triton`` would put those norms on their twins),
``nvrtc`` = TRELLIS_FAST_PATHS=nvrtc (the NVRTC kernel: Windows without Triton), ``twin`` = fast paths off
with SPARSE_BACKEND=torch (a machine without kernels and spconv), ``spconv`` = fast paths off with
SPARSE_BACKEND=spconv (when installed).
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from networks_gpu import build, fresh_structure, inputs, shell_structure  # noqa: E402
from trellis import fastpaths  # noqa: E402
from trellis.core import backends  # noqa: E402
from trellis.modules.sparse import SparseTensor  # noqa: E402
from trellis.modules.sparse.conv import (_spconv, neighbour_map, submanifold_conv3d_spconv,  # noqa: E402
                                         submanifold_conv3d_torch)
from trellis.modules.sparse.spatial import downsample, subdivide  # noqa: E402

# (level, C_in, C_out, where): every 3x3x3 conv of the SLat flow and of the mesh decoder.
SHAPES = [
    ("64", 128, 128, "flow input_blocks.0 (x2)"), ("32", 128, 1024, "flow input_blocks.1.conv1"),
    ("32", 1024, 1024, "flow input_blocks.1.conv2"), ("64", 2048, 128, "flow out_blocks.0.conv1"),
    ("64", 128, 128, "flow out_blocks.*.conv2"), ("64", 256, 128, "flow out_blocks.1.conv1"),
    ("128", 768, 192, "mesh upsample.0 conv 1"), ("128", 192, 192, "mesh upsample.0 conv 2"),
    ("256", 192, 96, "mesh upsample.1 conv 1"), ("256", 96, 96, "mesh upsample.1 conv 2"),
]


def levels(voxels: int) -> dict:
    s64 = shell_structure(voxels)
    s64 = SparseTensor(s64.feats, s64.coords)
    s128 = subdivide(s64)
    return {"64": s64, "32": downsample(s64), "128": s128, "256": subdivide(s128)}


def gpu_seconds(fn, repeats: int) -> float:
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return sorted(times)[len(times) // 2]


def wall_seconds(fn, repeats: int) -> float:
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def peak_above(fn) -> float:
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2 ** 20


def case(x: SparseTensor, c_in: int, c_out: int, seed: int):
    g = torch.Generator(device="cuda").manual_seed(seed)
    feats = torch.randn(x.coords.shape[0], c_in, device="cuda", generator=g).half()
    w = (torch.randn(c_out, 3, 3, 3, c_in, device="cuda", generator=g) / (27 * c_in) ** 0.5).half()
    b = (torch.randn(c_out, device="cuda", generator=g) * 0.1).half()
    return SparseTensor(feats, x.coords, cache=x.cache), w, b


def tune_configs(c_out: int):
    cos = sorted({min(128, max(16, 1 << (c_out - 1).bit_length())), 64, 32} | ({128} if c_out > 128 else set()))
    for bn, bco, bk, warps, stages in itertools.product((64, 128), cos, (32, 64), (4, 8), (3, 4)):
        if bn * bco >= 128 * 128 and warps == 4:
            continue
        yield dict(BLOCK_N=bn, BLOCK_CO=bco, BLOCK_K=bk, num_warps=warps, num_stages=stages)


def layer_rows(lv: dict, repeats: int, tune: bool, tiles_sweep: bool = False) -> list[dict]:
    kernel = fastpaths._import_kernel_module("trellis_triton.sparse_conv")   # installed or in extensions/
    nvrtc = fastpaths._import_kernel_module("trellis_nvrtc.sparse_conv")
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    rows, seen = [], set()
    for i, (name, c_in, c_out, where) in enumerate(SHAPES):
        if (name, c_in, c_out) in seen:
            continue
        seen.add((name, c_in, c_out))
        x, w, b = case(lv[name], c_in, c_out, i)
        n = x.coords.shape[0]
        flops = 2.0 * n * 27 * c_in * c_out
        fresh = SparseTensor(x.feats, x.coords)
        map_s = wall_seconds(lambda: neighbour_map(SparseTensor(fresh.feats, fresh.coords), 3), 3)
        nbr = neighbour_map(x, 3)
        row = {"level": name, "sites": n, "C_in": c_in, "C_out": c_out, "where": where,
               "neighbour_map_s": round(map_s, 5),
               "blocks": kernel.pick_blocks(n, c_in, c_out, x.dtype, x.device),
               "nvrtc_tiles": list(nvrtc.pick_tiles(n, c_out, sms))}
        paths = {"triton": lambda: kernel.implicit_gemm(x.feats, nbr, w, b),
                 "nvrtc": lambda: nvrtc.implicit_gemm(x.feats, nbr, w, b),
                 "twin": lambda: submanifold_conv3d_torch(x, w, b)}
        if _spconv() is not None:
            def spconv_with(algo):
                xs = SparseTensor(x.feats, x.coords)      # its own cache: spconv's index pairs per algorithm

                def run():
                    backends.set_backend("spconv_algo", algo)
                    try:
                        return submanifold_conv3d_spconv(xs, w, b)
                    finally:
                        backends.set_backend("spconv_algo", "auto")
                return run
            paths["spconv_native"] = spconv_with("native")
            paths["spconv_implicit_gemm"] = spconv_with("implicit_gemm")
        for label, fn in paths.items():
            try:
                sec = gpu_seconds(fn, repeats)
                row[f"{label}_s"] = round(sec, 5)
                row[f"{label}_TFLOPs"] = round(flops / sec / 1e12, 1)
                row[f"{label}_peak_MiB"] = round(peak_above(fn), 1)
            except Exception as err:          # spconv without kernels for this GPU, out of memory, ...
                row[f"{label}_error"] = f"{type(err).__name__}: {err}"[:200]
        kern = twin = None
        for label in ("triton", "nvrtc"):
            if f"{label}_s" in row and "twin_s" in row:
                kern, twin = paths[label](), paths["twin"]()
                scale = twin.float().abs().max().item()
                row[f"{label}_vs_twin_max_rel"] = float((kern.float() - twin.float()).abs().max().item() / scale)
        if tiles_sweep:
            for tiles in sorted(nvrtc.TILES):
                sec = gpu_seconds(lambda: nvrtc.implicit_gemm(x.feats, nbr, w, b, tiles=tiles), max(5, repeats // 2))
                row[f"nvrtc_{tiles[0]}x{tiles[1]}_s"] = round(sec, 5)
            best = None
            for cfg in tune_configs(c_out):
                try:
                    sec = gpu_seconds(lambda: kernel.implicit_gemm(x.feats, nbr, w, b, blocks=cfg), max(5, repeats // 2))
                except Exception as err:
                    print(f"  config {cfg}: {type(err).__name__}", flush=True)
                    continue
                if best is None or sec < best[0]:
                    best = (sec, cfg)
            if best is not None:
                row["tuned_s"], row["tuned_blocks"] = round(best[0], 5), best[1]
                print(f"    ({c_in}, {c_out}, torch.float16): {best[1]},   # {best[0] * 1e3:.2f} ms vs "
                      f"{row.get('triton_s', float('nan')) * 1e3:.2f} ms picked", flush=True)
        rows.append(row)
        print(json.dumps(row), flush=True)
        x = w = b = nbr = kern = twin = paths = fresh = None
        torch.cuda.empty_cache()
    return rows


def with_paths(label: str):
    """(TRELLIS_FAST_PATHS, SPARSE_BACKEND) of a network row."""
    return {"triton": ("on", "torch"), "nvrtc": ("nvrtc", "torch"), "twin": ("off", "torch"),
            "spconv": ("off", "spconv")}[label]


def network_rows(voxels: int, repeats: int) -> list[dict]:
    structure = shell_structure(voxels)
    labels = ["triton", "nvrtc", "twin"] + (["spconv"] if _spconv() is not None else [])
    rows = []
    for key in ("slat_decoder_mesh", "slat_flow_model"):
        model = build(key, torch.device("cuda"))
        model.set_torso_dtype(torch.float16)
        for label in labels:
            fast, conv = with_paths(label)
            before = os.environ.get(fastpaths.ENV_VAR)
            os.environ[fastpaths.ENV_VAR] = fast
            backends.set_backend("sparse_conv", conv)
            try:
                row = {"model": key, "conv": label}
                if key == "slat_decoder_mesh":
                    row["network_s"] = round(wall_seconds(
                        lambda: model.decode_features(fresh_structure(structure)), repeats), 4)
                    row["network_plus_flexicubes_s"] = round(wall_seconds(
                        lambda: model(fresh_structure(structure)), repeats), 4)
                    row["peak_above_GiB"] = round(peak_above(lambda: model(fresh_structure(structure))) / 1024, 3)
                else:
                    row["forward_s"] = round(wall_seconds(
                        lambda: model(*inputs(key, fresh_structure(structure), torch.device("cuda"))), repeats), 4)
            finally:
                if before is None:
                    os.environ.pop(fastpaths.ENV_VAR, None)
                else:
                    os.environ[fastpaths.ENV_VAR] = before
                backends.set_backend("sparse_conv", "auto")
            rows.append(row)
            print(json.dumps(row), flush=True)
        model = None
        torch.cuda.empty_cache()
    return rows


def markdown(info: dict) -> str:
    spconv = [p for p in ("spconv_native", "spconv_implicit_gemm") if any(f"{p}_s" in r for r in info["layers"])]
    head = ["where", "sites", "C_in->C_out", "map s", "triton s (TFLOP/s)", "nvrtc s (TFLOP/s)", "twin s (TFLOP/s)"]
    head += [f"{p} s" for p in spconv] + ["triton / nvrtc / twin MiB", "triton / nvrtc vs twin"]
    lines = [f"Device {info['device']}, torch {info['torch']}, triton {info['triton']}, commit {info['commit']}, "
             f"{info['date']}, {info['voxels_64']} voxels at 64^3, fp16", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in info["layers"]:
        cells = [r["where"], str(r["sites"]), f"{r['C_in']}->{r['C_out']}", str(r["neighbour_map_s"])]
        for p in ("triton", "nvrtc", "twin"):
            cells.append(f"{r.get(p + '_s', 'error')} ({r.get(p + '_TFLOPs', '-')})")
        cells += [str(r.get(f"{p}_s", "error")) for p in spconv]
        cells += [" / ".join(str(r.get(f"{p}_peak_MiB", "-")) for p in ("triton", "nvrtc", "twin")),
                  " / ".join(f"{r.get(p + '_vs_twin_max_rel', float('nan')):.1e}" for p in ("triton", "nvrtc"))]
        if "tuned_s" in r:
            cells[4] += f"; tuned {r['tuned_s']}"
        swept = [f"{k[6:-2]} {v}" for k, v in r.items() if k.startswith("nvrtc_") and k.endswith("_s") and "x" in k]
        if swept:
            cells[5] += "; " + ", ".join(swept)
        lines.append("| " + " | ".join(cells) + " |")
    if info["networks"]:
        lines += ["", "| network | sparse conv | network s | + FlexiCubes s | peak above weights GiB |", "|---|---|---|---|---|"]
        for r in info["networks"]:
            lines.append(f"| {r['model']} | {r['conv']} | {r.get('network_s', r.get('forward_s'))} | "
                         f"{r.get('network_plus_flexicubes_s', '-')} | {r.get('peak_above_GiB', '-')} |")
    return "\n".join(lines)


@torch.no_grad()
def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--voxels", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--tune", action="store_true", help="sweep Triton tile sizes per shape")
    ap.add_argument("--tiles", action="store_true", help="time every NVRTC tile shape per layer")
    ap.add_argument("--layers-only", action="store_true", help="skip the whole-network rows")
    ap.add_argument("--out", default="sparse_conv_gpu.json")
    args = ap.parse_args()
    import triton
    from provenance import source_commit

    commit = source_commit()
    lv = levels(args.voxels)
    info = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
            "python": platform.python_version(), "commit": commit, "date": time.strftime("%Y-%m-%d"),
            "voxels_64": int(lv["64"].coords.shape[0]), "sites": {k: int(v.coords.shape[0]) for k, v in lv.items()},
            "spconv": _spconv() is not None, "path": fastpaths.path_of("sparse_conv3d", "cuda"),
            "why_not_triton": fastpaths.reason_off("sparse_conv3d", "cuda")}
    print(json.dumps(info), flush=True)
    info["layers"] = layer_rows(lv, args.repeats, args.tune, args.tiles)
    del lv
    torch.cuda.empty_cache()
    info["networks"] = [] if args.layers_only else network_rows(args.voxels, max(3, args.repeats // 4))
    info["disabled_kernels"] = dict(fastpaths._disabled)
    Path(args.out).write_text(json.dumps(info, indent=1))
    print(markdown(info))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
