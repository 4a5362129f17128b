"""Profile of ``to_glb`` at full size on a GPU: per-stage seconds and a torch.profiler table of the
observation/accumulation stage.

    python benchmarks/to_glb_profile.py [--out to_glb_profile.json] [--save-mesh cleaned.npz]

Inputs as in ``benchmarks/export_gpu.py`` (full-size decoders with random weights on the fixed
~20 000-voxel shell). Runs ``to_glb`` once to warm up (2 views and the chart layout unless ``--full-warmup``) and once under timing (stages from
``mesh.export_info``), then replays the observation/accumulation loop alone on the unwrapped mesh
of the timed run: timed, then under torch.profiler (top 25 ops by CUDA and by CPU time). With
``--save-mesh`` the cleaned mesh (input of the UV unwrap) is saved for offline xatlas experiments.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from networks_gpu import build, shell_structure  # noqa: E402
from trellis.export import bake as tb  # noqa: E402
from trellis.export.uv import unwrap as uv_unwrap  # noqa: E402
from trellis.utils import postprocessing_utils  # noqa: E402


def observe_accumulate(gaussian, v, f, uv, nviews=50, res=1024, size=1024):
    ext, intr = tb.observation_cameras(nviews, device="cuda")
    acc = tb.TextureAccumulator(v, f, uv, size, device="cuda")
    for i, (color, mask, depth) in enumerate(tb.render_observations(gaussian, ext, intr, res)):
        acc.add_view(color, mask, ext[i], intr[i], depth=depth)
    torch.cuda.synchronize()
    return acc


@torch.no_grad()
def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="to_glb_profile.json")
    ap.add_argument("--save-mesh", default=None)
    ap.add_argument("--full-warmup", action="store_true", help="warm up with the full to_glb")
    ap.add_argument("--profile-views", type=int, default=50)
    args = ap.parse_args()
    structure = shell_structure(20000)
    gs = build("slat_decoder_gs", "cuda")
    gs.set_torso_dtype(torch.float16)
    gaussian = gs(structure)[0]
    mesh = build("slat_decoder_mesh", "cuda")(structure)[0]
    del gs
    torch.cuda.empty_cache()
    info = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
            "gaussians": len(gaussian), "mesh_faces": int(mesh.faces.shape[0])}
    print(json.dumps(info), flush=True)

    captured = {}
    orig = uv_unwrap.unwrap_uv

    def capture(v, f, *a, **k):
        out = orig(v, f, *a, **k)
        captured["in"] = (np.asarray(v), np.asarray(f))
        captured["out"] = out[:3]
        return out

    uv_unwrap.unwrap_uv = capture
    try:
        t0 = time.perf_counter()
        warm = {} if args.full_warmup else dict(nviews=2, uv_method="charts")  # kernels, not xatlas
        postprocessing_utils.to_glb(gaussian, mesh, verbose=False, **warm)
        torch.cuda.synchronize()
        info["warmup_seconds"] = round(time.perf_counter() - t0, 3)
        print(json.dumps({"warmup_seconds": info["warmup_seconds"]}), flush=True)
        t0 = time.perf_counter()
        glb = postprocessing_utils.to_glb(gaussian, mesh, verbose=False)
        torch.cuda.synchronize()
        info["to_glb_seconds"] = round(time.perf_counter() - t0, 3)
    finally:
        uv_unwrap.unwrap_uv = orig
    info["export_info"] = {k: v for k, v in glb.export_info.items() if not isinstance(v, np.ndarray)}
    print(json.dumps({k: info[k] for k in ("warmup_seconds", "to_glb_seconds", "export_info")}), flush=True)
    if args.save_mesh:
        np.savez(args.save_mesh, vertices=captured["in"][0], faces=captured["in"][1])

    v, f, uv = captured["out"]
    t0 = time.perf_counter()
    observe_accumulate(gaussian, v, f, uv)
    info["observe_accumulate_seconds"] = round(time.perf_counter() - t0, 3)
    # the Gaussian renders alone
    ext, intr = tb.observation_cameras(50, device="cuda")
    t0 = time.perf_counter()
    for _ in tb.render_observations(gaussian, ext, intr, 1024):
        pass
    torch.cuda.synchronize()
    info["renders_alone_seconds"] = round(time.perf_counter() - t0, 3)
    # the mesh rasterisation alone
    m = tb.MeshViews(v, f, uv, 1024, "cuda")
    t0 = time.perf_counter()
    for i in range(50):
        m.raster(ext[i], intr[i], 1024, 1024)
    torch.cuda.synchronize()
    info["raster_alone_seconds"] = round(time.perf_counter() - t0, 3)
    Path(args.out).write_text(json.dumps(info, indent=1, default=str))
    print(json.dumps({k: info[k] for k in ("observe_accumulate_seconds", "renders_alone_seconds",
                                           "raster_alone_seconds")}), flush=True)

    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        observe_accumulate(gaussian, v, f, uv, nviews=args.profile_views)
    ka = prof.key_averages()
    info["by_cuda"] = ka.table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=60)
    info["by_cpu"] = ka.table(sort_by="cpu_time_total", row_limit=25, max_name_column_width=60)
    info["by_self_cpu"] = ka.table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=60)
    Path(args.out).write_text(json.dumps(info, indent=1, default=str))
    print(info["by_cuda"])
    print(info["by_self_cpu"])
    Path(args.out).write_text(json.dumps(info, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
