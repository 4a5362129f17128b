"""8-bit attention's speed per call on the GPU beside the exact path the flows take, at the flows' shapes.

    python benchmarks/attention_8bit_speed_gpu.py [--tokens 4096,8192,19772] [--out attention_8bit_speed.json]

Self-attention of a CFG pair (two sequences of N tokens, 12 heads x 128, bf16: TRELLIS.2's flows; 19 772 tokens is the
1024 flow's), through: the exact path as the flows call it (``varlen_attention``: cuDNN above TUNING.cudnn_min_tokens),
the 8-bit path (``quantise`` + the Triton kernel), the kernel alone on quantised inputs and ``quantise`` alone. Median
of --repeats timed calls after --warmup, CUDA events; each row's relative RMS distance from fp32 exact attention
beside it.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from trellis import fastpaths  # noqa: E402
from trellis.modules.attention import attention_precision, varlen_attention  # noqa: E402
from trellis.modules.attention.quantised import quantise  # noqa: E402


def timed(fn, warmup: int, repeats: int) -> float:
    """Median seconds of ``fn()`` on the GPU."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / 1000)
    return statistics.median(times)


def rel_rms(a, b) -> float:
    a, b = a.double(), b.double()
    return float((a - b).pow(2).mean().sqrt() / b.pow(2).mean().sqrt())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", default="4096,8192,19772")
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--out", default="attention_8bit_speed.json")
    args = ap.parse_args(argv)
    from provenance import source_commit

    kernel = fastpaths.KERNELS["attention_8bit"][0].load()
    info = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "commit": source_commit(),
            "date": time.strftime("%Y-%m-%d"), "heads": args.heads, "dim": args.dim, "rows": []}
    g = torch.Generator(device="cuda").manual_seed(0)
    for n in (int(t) for t in args.tokens.split(",")):
        lengths = [n, n]
        q, k, v = (torch.randn(2 * n, args.heads, args.dim, device="cuda", generator=g).bfloat16() for _ in range(3))
        exact32 = varlen_attention(q.float(), k.float(), v.float(), lengths, lengths, backend="sdpa")
        row = {"tokens": n}
        out = varlen_attention(q, k, v, lengths, lengths)
        row["exact_s"] = timed(lambda: varlen_attention(q, k, v, lengths, lengths), args.warmup, args.repeats)
        row["exact_err"] = rel_rms(out, exact32)
        with attention_precision("8bit"):
            out8 = varlen_attention(q, k, v, lengths, lengths)
            row["eight_bit_s"] = timed(lambda: varlen_attention(q, k, v, lengths, lengths), args.warmup,
                                       args.repeats)
        row["eight_bit_err"] = rel_rms(out8, exact32)
        parts = quantise(q, k, v, tuple(lengths), tuple(lengths)) + (tuple(lengths), tuple(lengths), q.dtype)
        row["quantise_s"] = timed(lambda: quantise(q, k, v, tuple(lengths), tuple(lengths)), args.warmup,
                                  args.repeats)
        row["kernel_s"] = timed(lambda: kernel(*parts), args.warmup, args.repeats)
        flops = 4 * 2 * n * n * args.heads * args.dim
        row["exact_tflops"] = flops / row["exact_s"] / 1e12
        row["kernel_tflops"] = flops / row["kernel_s"] / 1e12
        info["rows"].append(row)
        print(json.dumps(row), flush=True)
        Path(args.out).write_text(json.dumps(info, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
