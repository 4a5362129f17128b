"""The flows' MLP (Linear -> tanh-GELU -> Linear) with the GELU in the first GEMM's epilogue (cuBLASLt, through
``torch._addmm_activation``) against Linear + GELU: GPU time per call and the difference in values.

    python benchmarks/mlp_gelu_gpu.py [--rows 8192,40000] [--out F]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from block_norm_gpu import timed      # GPU ms per call of a replayed CUDA graph of the calls (and host ms)


def graph_ms(fn, calls=50):
    return timed(fn, calls)[0]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", default="8192,40000")
    ap.add_argument("--out", default="mlp_gelu_gpu.json")
    args = ap.parse_args()
    torch.manual_seed(0)
    C, Hd = 1024, 4096
    w1 = (torch.randn(Hd, C, device="cuda") / C ** 0.5).half()
    b1 = (torch.randn(Hd, device="cuda") * 0.1).half()
    w2 = (torch.randn(C, Hd, device="cuda") / Hd ** 0.5).half()
    b2 = (torch.randn(C, device="cuda") * 0.1).half()
    res = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
           "rows": {}}
    for n in (int(r) for r in args.rows.split(",")):
        x = torch.randn(n, C, device="cuda").half()
        with torch.no_grad():
            ref32 = F.gelu(F.linear(x.float(), w1.float(), b1.float()), approximate="tanh")
            twin = F.gelu(F.linear(x, w1, b1), approximate="tanh")
            epi = torch._addmm_activation(b1, x, w1.t(), use_gelu=True)
            erf = F.gelu(F.linear(x, w1, b1))

            def err(t):
                return float((t.float() - ref32).pow(2).mean().sqrt() / ref32.pow(2).mean().sqrt())

            row = {"twin_rel_rms_vs_fp32": err(twin), "epilogue_rel_rms_vs_fp32": err(epi),
                   "erf_gelu_rel_rms_vs_fp32": err(erf),
                   "epilogue_max_abs_vs_twin": float((epi.float() - twin.float()).abs().max()),
                   "linear_ms": graph_ms(lambda: F.linear(x, w1, b1)),
                   "linear_gelu_ms": graph_ms(lambda: F.gelu(F.linear(x, w1, b1), approximate="tanh")),
                   "epilogue_ms": graph_ms(lambda: torch._addmm_activation(b1, x, w1.t(), use_gelu=True)),
                   "mlp_twin_ms": graph_ms(lambda: F.linear(F.gelu(F.linear(x, w1, b1), approximate="tanh"), w2, b2)),
                   "mlp_epilogue_ms": graph_ms(
                       lambda: F.linear(torch._addmm_activation(b1, x, w1.t(), use_gelu=True), w2, b2))}
            # the path without cuBLASLt (a bias that is not contiguous): which GELU does it apply?
            b1s = torch.stack([b1, b1], 1)[:, 0]
            fb = torch._addmm_activation(b1s, x, w1.t(), use_gelu=True)
            row["non_lt_rel_rms_vs_tanh_fp32"] = err(fb)
            row["non_lt_equals_twin"] = bool(torch.equal(fb, twin))
        res["rows"][n] = row
        print(n, json.dumps(row), flush=True)
    Path(args.out).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
