"""The SLat flow's eager forward: host time against GPU time, where the host's time goes, and the attention
call's host cost (issue 14: the eager steps of stage 2 wait on the host on most of the lent machines).

    python benchmarks/slat_host_gpu.py [--quick]

Full-size SLat flow, random weights, fp16 torso, the batched CFG pair (B = 2) on the 20 k-voxel shell and on a
1 500-voxel one (where the GPU needs ~10 ms: the host alone). Per structure: the host's time until a forward
returns (synchronised before), the synchronised wall, and the GPU time of a CUDA-graph replay of the same
forward; then the same with the sampler's context cache (condition-only keys and values made once). Without
--quick also cProfile of 5 forwards (by own time and by cumulative time) and the attention
operator's host and GPU time per call, with its result compared to the batched path's.
"""
import cProfile
import io
import pstats
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from networks_gpu import build, shell_pair
from trellis.modules.attention import functional as fn
from trellis.modules.attention.functional import SeqLens
from trellis.modules.context_cache import context_cache

dev = "cuda"
model = build("slat_flow_model", dev); model.set_torso_dtype(torch.float16)

def pair(n):
    return shell_pair(n, model.in_channels, device=dev)

cond = torch.randn(2, 1374, 1024, device=dev)
t = torch.full((2,), 500.0, device=dev)
with torch.no_grad():
    for n in (20000, 1500):
        x = pair(n)
        for _ in range(3):
            model(x, t, cond)
        torch.cuda.synchronize()
        # With the sampler's per-run context cache (the pipeline's resident runs): the cast condition and the 24
        # cross-attentions' keys / values made at the first forward only.
        with context_cache() as cached:
            model(x, t, cond)
            torch.cuda.synchronize()
            ch, cw = [], []
            for _ in range(15):
                torch.cuda.synchronize(); t0 = time.perf_counter()
                model(x, t, cond); t1 = time.perf_counter(); torch.cuda.synchronize(); t2 = time.perf_counter()
                ch.append((t1 - t0) * 1e3); cw.append((t2 - t0) * 1e3)
            assert cached.hits >= 15 * 24, cached.hits
        hs, ws = [], []
        for _ in range(15):
            torch.cuda.synchronize(); t0 = time.perf_counter()
            model(x, t, cond); t1 = time.perf_counter(); torch.cuda.synchronize(); t2 = time.perf_counter()
            hs.append((t1 - t0) * 1e3); ws.append((t2 - t0) * 1e3)
        g = torch.cuda.CUDAGraph()
        s = torch.cuda.Stream(); s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            g.capture_begin(); model(x, t, cond); g.capture_end()
        torch.cuda.current_stream().wait_stream(s)
        torch.cuda.synchronize(); t0 = time.perf_counter()
        for _ in range(8): g.replay()
        torch.cuda.synchronize(); gpu = (time.perf_counter() - t0) / 8 * 1e3
        print(f"voxels {n}x2: host per forward {sorted(hs)[7]:.1f} ms, wall (synced) {sorted(ws)[7]:.1f} ms, "
              f"graph replay (GPU) {gpu:.1f} ms; with the context cache: host {sorted(ch)[7]:.1f} ms, "
              f"wall {sorted(cw)[7]:.1f} ms")
        del g
    if "--quick" in sys.argv:
        raise SystemExit(0)
    x = pair(20000)
    model(x, t, cond); torch.cuda.synchronize()
    pr = cProfile.Profile(); pr.enable()
    for _ in range(5):
        model(x, t, cond)
    pr.disable(); torch.cuda.synchronize()
    out = io.StringIO(); pstats.Stats(pr, stream=out).sort_stats("tottime").print_stats(40); print(out.getvalue()[-8000:])
    out = io.StringIO(); pstats.Stats(pr, stream=out).sort_stats("cumulative").print_stats(60); print(out.getvalue()[-11000:])

    # attention variants: packed [N, H, D] from a qkv projection, B=2 uniform
    B, L, H, D = 2, 3928, 16, 64
    qkv = torch.randn(B * L, 3, H, D, device=dev, dtype=torch.float16)
    q, k, v = qkv.unbind(1)
    sl = SeqLens([L] * B, dev)
    ref = torch.ops.aten._scaled_dot_product_flash_attention(
        q.view(B, L, H, D).transpose(1, 2), k.view(B, L, H, D).transpose(1, 2), v.view(B, L, H, D).transpose(1, 2)
    )[0].transpose(1, 2).reshape(B * L, H, D)
    def direct():
        return torch.ops.aten._flash_attention_forward(q, k, v, sl.cu, sl.cu, sl.max, sl.max, 0.0, False, False)[0]
    out_d = direct()
    print("flash operator on the packed tensors equal to the batched operator:", torch.equal(out_d, ref))
    for name, f in (("varlen_attention", lambda: fn.varlen_attention(q, k, v, sl, sl)), ("the operator alone", direct)):
        for _ in range(5): f()
        torch.cuda.synchronize(); t0 = time.perf_counter()
        for _ in range(200): f()
        t1 = time.perf_counter(); torch.cuda.synchronize(); t2 = time.perf_counter()
        print(f"{name}: host {(t1 - t0) / 200 * 1e6:.1f} us/call, GPU {(t2 - t0) / 200 * 1e6:.1f} us/call")
