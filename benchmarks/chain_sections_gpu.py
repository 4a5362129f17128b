"""Where the chain's time goes, section by section, on the GPU's own clock (CUDA events around modules).

    python benchmarks/chain_sections_gpu.py [--presets "fp16 eager,fp16 compiled"] [--kernels 25] [--out F]

Builds the same full-size random-weight pipeline as ``pipeline_gpu.py`` (12 + 12 steps, CFG 7.5 / 3, interval
[0.5, 1], stage 2 on the fixed ~20 000-voxel shell), runs the chain once to warm up, then once more with a
CUDA event before and after every top-level piece of each network (the flows' input / transformer / output
blocks, the decoders) and reports, per stage, the GPU time inside each piece (gaps between its kernels
included) and what is left outside every piece (sampler arithmetic, the stage-1 decoder's argwhere, idle GPU
while Python runs). With ``--kernels N`` it also prints torch.profiler's top-N CUDA kernels of one stage-2
forward at the CFG batch of 2.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from networks_gpu import shell_structure  # noqa: E402
from pipeline_gpu import PRESETS, build_pipeline, one_run  # noqa: E402


class Sections:
    """CUDA events around modules; durations are read after the run (one synchronise at the end)."""

    def __init__(self):
        self.pending: list[tuple[str, torch.cuda.Event, torch.cuda.Event]] = []
        self.handles = []
        self.open: dict[int, torch.cuda.Event] = {}
        self.stage = "?"

    def watch(self, module: torch.nn.Module, name: str) -> None:
        def pre(mod, args):
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            self.open[id(mod)] = ev

        def post(mod, args, out):
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            self.pending.append((f"{self.stage}/{name}", self.open.pop(id(mod)), ev))
        self.handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]

    def totals(self) -> dict:
        torch.cuda.synchronize()
        out: dict = defaultdict(lambda: [0.0, 0])
        for key, a, b in self.pending:
            out[key][0] += a.elapsed_time(b) / 1000
            out[key][1] += 1
        return dict(out)

    def close(self):
        for h in self.handles:
            h.remove()


def watch_pipeline(pipe, sec: Sections) -> None:
    for key, model in pipe.models.items():
        sec.watch(model, f"{key} (whole)")
        for group in ("input_blocks", "blocks", "out_blocks"):
            for child in getattr(model, group, []):
                sec.watch(child, f"{key}.{group}")
    sec.watch(pipe.image_cond_model, "image_cond_model (whole)")


def kernel_table(pipe, coords, rows: int) -> str:
    from trellis.modules.sparse import SparseTensor

    flow = pipe.models["slat_flow_model"]
    g = torch.Generator(device="cuda").manual_seed(0)
    coords = coords.cpu()
    n = coords.shape[0]
    batch = torch.cat([torch.zeros(n, 1, dtype=torch.int32), coords[:, 1:]], 1)
    both = torch.cat([batch, torch.cat([torch.ones(n, 1, dtype=torch.int32), coords[:, 1:]], 1)]).cuda()
    x = SparseTensor(torch.randn(2 * n, flow.in_channels, device="cuda", generator=g), both)
    t = torch.full((2,), 500.0, device="cuda")
    cond = torch.randn(2, 1374, 1024, device="cuda", generator=g)
    with torch.no_grad():
        for _ in range(2):
            flow(x, t, cond)
        torch.cuda.synchronize()
        acts = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
        with torch.profiler.profile(activities=acts) as prof:
            flow(x, t, cond)
            torch.cuda.synchronize()
    return prof.key_averages().table(sort_by="cuda_time_total", row_limit=rows)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", default="fp16 eager,fp16 compiled")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--voxels", type=int, default=20000)
    ap.add_argument("--kernels", type=int, default=0)
    ap.add_argument("--out", default="chain_sections_gpu.json")
    args = ap.parse_args()
    pipe = build_pipeline().to("cuda")
    coords = shell_structure(args.voxels).coords
    image = torch.rand(1, 3, 518, 518, generator=torch.Generator().manual_seed(0))
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
              "presets": {}}
    by_name = {p[0]: p for p in PRESETS}
    for name in [n.strip() for n in args.presets.split(",")]:
        _, precision, offload, cfg_batch, graphs, compiled = by_name[name]
        pipe.set_memory_policy(precision=precision, offload=offload, cfg_batch=cfg_batch, cuda_graphs=graphs,
                               compile=compiled)
        one_run(pipe, image, coords, args)                  # warm-up
        plain, stages, _ = one_run(pipe, image, coords, args)
        sec = Sections()
        watch_pipeline(pipe, sec)
        import pipeline_gpu
        original = pipeline_gpu.StageTracker.stage

        def stage(self, label, _orig=original):        # tag events with the pipeline stage
            sec.stage = label
            return _orig(self, label)
        pipeline_gpu.StageTracker.stage = stage
        try:
            hooked, hstages, _ = one_run(pipe, image, coords, args)
        finally:
            pipeline_gpu.StageTracker.stage = original
            sec.close()
        entry = {"total_s": plain, "stages_s": {s["stage"]: s["seconds"] for s in stages},
                 "hooked_total_s": hooked, "sections": {k: {"seconds": v[0], "calls": v[1]}
                                                        for k, v in sec.totals().items()}}
        report["presets"][name] = entry
        print(f"== {name}: total {plain:.3f} s (with hooks {hooked:.3f} s)")
        for st, s in entry["stages_s"].items():
            print(f"  stage {st}: {s:.3f} s")
            inside = 0.0
            for key, v in entry["sections"].items():
                if key.startswith(st + "/"):
                    print(f"    {key[len(st) + 1:]:<48} {v['seconds']:.4f} s  ({v['calls']} calls)")
                    if "(whole)" in key:
                        inside += v["seconds"]
            if inside:
                print(f"    {'outside every network':<48} {hstages_get(hstages, st) - inside:.4f} s")
        sys.stdout.flush()
        if args.kernels:
            entry["kernels"] = kernel_table(pipe, coords, args.kernels)
            print(entry["kernels"], flush=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    return 0


def hstages_get(stages, name):
    return next((s["seconds"] for s in stages if s["stage"] == name), float("nan"))


if __name__ == "__main__":
    raise SystemExit(main())
