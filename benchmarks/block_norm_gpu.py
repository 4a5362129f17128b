"""The flow blocks' norm kernels (NVRTC) against their PyTorch twins, per call and in a whole block.

    python benchmarks/block_norm_gpu.py [--rows 4096,10000] [--calls 200] [--compare MODULE] [--out F]

For each token count (per CFG item, batch 2, 1024 channels, 16 heads as the image flows): GPU time per call
(a CUDA graph of ``--calls`` back-to-back calls, replayed) and host time per call (the Python time to enqueue
them, no synchronisation: what makes an eager pass CPU-bound; also without the dispatcher) of ``norm_modulate`` in
the blocks' three uses and of ``head_rms_norm`` on a self-attention's q/k views, kernel vs. twin; then a dense
modulated block (fp16, q/k RMS norm) with the kernels on and off: GPU and host time per call. Each kernel's
effective bandwidth (the bytes it must read and write once, per GPU second) is printed beside a plain copy's
(``torch.Tensor.copy_`` of the same activation: what the memory gives). ``--compare MODULE`` also times another
module's ``norm_modulate`` / ``head_rms_norm`` with the same arguments (an A/B of two kernel versions in one
process).
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trellis import fastpaths  # noqa: E402
from trellis.modules.norm import LayerNorm32, MultiHeadRMSNorm  # noqa: E402
from trellis.modules.transformer import (ModulatedTransformerCrossBlock, head_rms_norm,  # noqa: E402
                                         head_rms_norm_torch, norm_modulate, norm_modulate_torch)


def timed(fn, calls):
    """(GPU ms per call, host ms per call) over ``calls`` calls after 3 warm-up calls. The GPU time is that of a
    CUDA graph of the calls replayed (the launches' host time cannot hide it, as it does for calls that take less
    GPU time than enqueuing them); the host time is that of enqueuing them eagerly."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    host = (time.perf_counter() - t0) / calls * 1e3
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    graph.replay()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    graph.replay()
    b.record()
    torch.cuda.synchronize()
    del graph
    return a.elapsed_time(b) / calls, host


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", default="4096,10000")
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--compare", default="", help="a module with norm_modulate / head_rms_norm to time too")
    ap.add_argument("--out", default="block_norm_gpu.json")
    args = ap.parse_args()
    dev, C, H = torch.device("cuda"), 1024, 16
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
              "paths": {n: fastpaths.path_of(n, dev) for n in ("norm_modulate", "head_rms_norm")}, "rows": {}}
    torch.manual_seed(0)
    n1 = LayerNorm32(C, elementwise_affine=False, eps=1e-6).to(dev)
    n2 = LayerNorm32(C, elementwise_affine=True, eps=1e-6).to(dev).half()
    qn, kn = MultiHeadRMSNorm(C // H, H).to(dev).half(), MultiHeadRMSNorm(C // H, H).to(dev).half()
    block = ModulatedTransformerCrossBlock(C, C, H, qk_rms_norm=True).to(dev).half().eval()
    other = importlib.import_module(args.compare) if args.compare else None
    # the kernel module called directly: its host time without the dispatcher's
    kernels = fastpaths._import_kernel_module(fastpaths.KERNELS["norm_modulate"][0].module)
    for L in (int(r) for r in args.rows.split(",")):
        x = torch.randn(2, L, C, device=dev).half()
        y = torch.randn_like(x)
        six = [m[:, None] for m in torch.randn(2, 6 * C, device=dev).half().chunk(6, dim=-1)]
        q, k, _ = torch.randn(2, L, 3 * C, device=dev).half().unflatten(-1, (3, H, C // H)).unbind(-3)
        emb = torch.randn(2, C, device=dev).half()
        ctx = torch.randn(2, 1374, C, device=dev).half()
        cases = {
            "norm1 (LN + modulate)": (x, None, None, n1, six[0], six[1]),
            "norm2 (x + gate*y, affine LN)": (x, y, six[2], n2, None, None),
            "norm3 (x + y, LN + modulate)": (x, y, None, n1, six[3], six[4]),
        }
        row = {}
        act = x.numel() * x.element_size()             # bytes of one [2, L, C] activation
        with torch.no_grad():
            out = torch.empty_like(x)
            copy = timed(lambda: out.copy_(x), args.calls)
            row["copy (bandwidth reference)"] = {"gpu_ms": copy[0], "GBps": 2 * act / copy[0] / 1e6}
            for name, (a, b, g, n, sh, sc) in cases.items():
                fast = timed(lambda: norm_modulate(a, b, g, n, sh, sc), args.calls)
                twin = timed(lambda: norm_modulate_torch(a, b, g, n.weight, n.bias, n.eps, sh, sc), args.calls)
                direct = timed(lambda: kernels.norm_modulate(a, b, g, n.weight, n.bias, n.eps, sh, sc), args.calls)
                moved = (4 if b is not None else 2) * act      # x (and y) in, h (and x') out
                row[name] = {"kernel_gpu_ms": fast[0], "kernel_host_ms": fast[1], "kernel_GBps": moved / fast[0] / 1e6,
                             "direct_host_ms": direct[1],
                             "twin_gpu_ms": twin[0], "twin_host_ms": twin[1]}
                if other is not None:
                    row[name]["compare_gpu_ms"] = timed(
                        lambda: other.norm_modulate(a, b, g, n.weight, n.bias, n.eps, sh, sc), args.calls)[0]
            fast = timed(lambda: head_rms_norm(q, k, qn, kn), args.calls)
            twin = timed(lambda: head_rms_norm_torch(q, k, qn.gamma, kn.gamma, qn.scale), args.calls)
            row["q/k RMS norm"] = {"kernel_gpu_ms": fast[0], "kernel_host_ms": fast[1],
                                   "kernel_GBps": 4 * act / fast[0] / 1e6, "twin_gpu_ms": twin[0],
                                   "twin_host_ms": twin[1]}
            if other is not None:
                row["q/k RMS norm"]["compare_gpu_ms"] = timed(
                    lambda: other.head_rms_norm(q, k, qn.gamma, kn.gamma, qn.scale), args.calls)[0]
            for label, flag in (("block, kernels on", True), ("block, kernels off", False)):
                fastpaths.set_enabled(flag)
                try:
                    gpu, host = timed(lambda: block(x, emb, ctx), max(20, args.calls // 10))
                finally:
                    fastpaths.set_enabled(None)
                row[label] = {"gpu_ms": gpu, "host_ms": host}
        result["rows"][L] = row
        print(f"== {L} tokens x 2 (CFG), {C} channels")
        for name, r in row.items():
            print(f"  {name:34s} " + "  ".join(f"{k} {v:.4f}" for k, v in r.items()), flush=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
