"""What a CUDA graph of the SLat flow made for one run costs (MemoryPolicy cuda_graphs=True): the first eager call on
a new structure (it builds the cached maps), the capture's host time, its instantiation, replays; then 10 steps on
one structure eager against GraphedFlow (one eager call, a capture, replays), with and without a sync per step.

    python benchmarks/graph_cost_gpu.py

Full-size SLat flow, random weights, fp16 torso, the batched CFG pair on the ~20 k-voxel shell (a few voxels
dropped per round, so every round is a new structure).
"""
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from networks_gpu import build, shell_pair
from trellis.pipelines.samplers import cuda_graph as cg

dev = "cuda"
model = build("slat_flow_model", dev); model.set_torso_dtype(torch.float16)
cond = torch.randn(2, 1374, 1024, device=dev)
t = torch.full((2,), 500.0, device=dev)

def pair(n, drop=0):
    return shell_pair(n, model.in_channels, drop, device=dev)

def ms(a, b): return (b - a) * 1e3
with torch.no_grad():
    x = pair(20000); model(x, t, cond); model(x, t, cond); torch.cuda.synchronize()
    for label, pool in (("new pool", None), ("new pool", None)):
        x = pair(20000, drop=37 * (1 + len(label)))     # fresh tensor (new caches) each time
        torch.cuda.synchronize(); t0 = time.perf_counter()
        model(x, t, cond); torch.cuda.synchronize(); t1 = time.perf_counter()     # builds the caches
        g = torch.cuda.CUDAGraph()
        s = cg._CAPTURE_STREAMS.setdefault(0, torch.cuda.Stream())
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            if pool is None: g.capture_begin(capture_error_mode="thread_local")
            else: g.capture_begin(pool, capture_error_mode="thread_local")
            model(x, t, cond)
            t2 = time.perf_counter()
            g.capture_end()
        t3 = time.perf_counter()
        torch.cuda.current_stream().wait_stream(s)
        g.replay(); t4 = time.perf_counter(); torch.cuda.synchronize(); t5 = time.perf_counter()
        g.replay(); torch.cuda.synchronize(); t6 = time.perf_counter()
        del g; torch.cuda.synchronize(); t7 = time.perf_counter()
        print(f"{label}: eager(first, caches) {ms(t0,t1):.1f} | capture host {ms(t1,t2):.1f} | capture_end {ms(t2,t3):.1f} | "
              f"replay1 launch {ms(t3,t4):.1f} done {ms(t3,t5):.1f} | replay2 {ms(t5,t6):.1f} | del {ms(t6,t7):.1f} | "
              f"reserved {torch.cuda.memory_reserved()/2**30:.2f} GiB")
    # a 10-step loop on one structure: eager vs graphed (one eager call, capture, replays), shared pool
    x = pair(20000, drop=500); model(x, t, cond); torch.cuda.synchronize()
    for rnd in range(3):
        torch.cuda.synchronize(); t0 = time.perf_counter()
        for _ in range(10): model(x, t, cond)
        torch.cuda.synchronize(); t1 = time.perf_counter()
        x2 = pair(20000, drop=600 + rnd)
        torch.cuda.synchronize(); t2 = time.perf_counter()
        gf = cg.GraphedFlow(model)
        marks = []
        for k in range(10):
            gf.steps_left = 11 - k
            gf(x2, t, cond); marks.append(time.perf_counter())
        torch.cuda.synchronize(); t3 = time.perf_counter()
        host = " ".join(f"{ms(a, b):.0f}" for a, b in zip([t2] + marks[:-1], marks))
        print(f"10 steps: eager {ms(t0,t1):.0f} ms, graphed (fresh structure, {len(gf.graphs)} graph) {ms(t2,t3):.0f} ms;"
              f" host per call {host}; reserved {torch.cuda.memory_reserved()/2**30:.2f} GiB")
        del gf
    for rnd in range(2):     # the same, a sync after each call (where the time goes)
        x2 = pair(20000, drop=700 + rnd)
        gf = cg.GraphedFlow(model); marks = []
        torch.cuda.synchronize(); t2 = time.perf_counter()
        for k in range(10):
            gf.steps_left = 11 - k
            gf(x2, t, cond); torch.cuda.synchronize(); marks.append(time.perf_counter())
        print("synced steps:", " ".join(f"{ms(a, b):.0f}" for a, b in zip([t2] + marks[:-1], marks)))
        del gf
