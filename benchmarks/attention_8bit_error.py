"""What 8-bit attention changes per call, beside the noise floor of exact attention in half precision.

    python benchmarks/attention_8bit_error.py [--device cpu|cuda] [--tokens 2048] [--md]

Inputs in the flows' shapes (TRELLIS.2: 12 heads of 128 channels; v1: 16 heads of 64), self-attention over
``--tokens`` tokens and cross-attention onto 1029 condition tokens, random N(0, 1) queries and keys scaled so the
attention is diffuse (temperature 1) or peaked (temperature 3, closer to trained maps), and the same with outliers
as real checkpoints have (random ones do not): a shared offset on every key (|offset| 8 per channel) and two query
channels 20x louder. Each row: relative L2 error and cosine similarity against exact attention in float64:

* ``bf16`` (the noise floor): exact attention on bfloat16 inputs (the naive kernel on the CPU, SDPA on a GPU);
* ``bf16 cuDNN vs FA2`` (GPU only): the two exact kernels the app picks between, on the same bfloat16 inputs;
* ``8-bit``: ``trellis.modules.attention.quantised`` (per-block INT8 Q·Kᵀ, FP8 P·V), on bfloat16 inputs.

Prints JSON lines (device, date, commit) and with ``--md`` a markdown table for docs/benchmarks/attention_8bit.md.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from trellis.modules.attention import dense_attention  # noqa: E402
from trellis.modules.attention.quantised import quantised_dense  # noqa: E402

SHAPES = {"TRELLIS.2 (12 x 128)": (12, 128), "v1 (16 x 64)": (16, 64)}
COND_TOKENS = 1029


def inputs(seed, heads, dim, lq, lk, temperature, outliers, device):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(1, lq, heads, dim, generator=g) * temperature / dim ** 0.25
    k = torch.randn(1, lk, heads, dim, generator=g) / dim ** 0.25
    v = torch.randn(1, lk, heads, dim, generator=g)
    if outliers:
        k = k + 8.0 * torch.randn(1, 1, heads, dim, generator=g)
        q[..., :2] *= 20.0
    return q.to(device), k.to(device), v.to(device)


def score(out, ref):
    a, b = out.double().flatten(), ref.double().flatten()
    return {"rel_l2": float((a - b).norm() / b.norm()), "cosine": float(F.cosine_similarity(a, b, dim=0))}


def exact(q, k, v):
    return dense_attention(q.double(), k.double(), v.double(), backend="naive")


def sdpa_bf16(q, k, v, order=None):
    qt, kt, vt = (t.bfloat16().transpose(1, 2) for t in (q, k, v))
    if order is None:
        return F.scaled_dot_product_attention(qt, kt, vt).transpose(1, 2)
    from torch.nn.attention import sdpa_kernel
    with sdpa_kernel([order]):
        return F.scaled_dot_product_attention(qt, kt, vt).transpose(1, 2)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--md", action="store_true")
    a = ap.parse_args()
    device = torch.device(a.device)
    from provenance import source_commit
    head = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "date": time.strftime("%Y-%m-%d"), "commit": source_commit(), "tokens": a.tokens}
    print(json.dumps(head))
    rows = []
    for shape, (heads, dim) in SHAPES.items():
        for kind, lk in (("self", a.tokens), ("cross", COND_TOKENS)):
            for temperature in (1.0, 3.0):
                for outliers in (False, True):
                    q, k, v = inputs(7, heads, dim, a.tokens, lk, temperature, outliers, device)
                    ref = exact(q, k, v)
                    if device.type == "cuda":
                        floor = score(sdpa_bf16(q, k, v), ref)
                    else:
                        floor = score(dense_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), backend="naive"), ref)
                    row = {"shape": shape, "attention": kind, "temperature": temperature, "outliers": outliers,
                           "bf16": floor, "8-bit": score(quantised_dense(q.bfloat16(), k.bfloat16(), v.bfloat16()),
                                                         ref)}
                    if device.type == "cuda":
                        from torch.nn.attention import SDPBackend
                        try:
                            row["cudnn_vs_fa2"] = score(sdpa_bf16(q, k, v, SDPBackend.CUDNN_ATTENTION),
                                                        sdpa_bf16(q, k, v, SDPBackend.FLASH_ATTENTION))
                        except RuntimeError as err:
                            row["cudnn_vs_fa2"] = str(err).splitlines()[0]
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    if a.md:
        print("\n| shape | attention | peaked | outliers | bf16: rel. L2 / cosine | 8-bit: rel. L2 / cosine |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            f, e = r["bf16"], r["8-bit"]
            print(f"| {r['shape']} | {r['attention']} | {'yes' if r['temperature'] > 1 else 'no'} | "
                  f"{'yes' if r['outliers'] else 'no'} | {f['rel_l2']:.4f} / {f['cosine']:.6f} | "
                  f"{e['rel_l2']:.4f} / {e['cosine']:.6f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
