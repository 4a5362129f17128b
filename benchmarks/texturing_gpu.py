"""TRELLIS.2 texturing, mesh in -> GLB out, at full size with random weights (issue 76: 100 k faces at R = 1024).

    python benchmarks/texturing_gpu.py --device cuda [--folder /tmp/trellis2_full] [--mesh bunny | --faces 200000]
                                       [--resolution 1024] [--texture-size 2048] [--limit-gib 8] [--runs 2]
    python benchmarks/texturing_gpu.py --tiny             # the tiny random-weight folder on the CPU (a check)

The folder: a full-size random-weight TRELLIS.2 folder (``trellis.tools.tiny_pipeline --trellis2 --full-size``),
written there when it has no pipeline.json. The mesh: the realistic bunny (99 785 faces, benchmarks/
realistic_objects.py's source) or a latitude-longitude sphere of about ``--faces`` faces; placed off the origin
at its own scale (the result keeps it). ``--limit-gib``: a VRAM budget (``set_memory_budget``) after loading,
as an 8 GiB card (the pipeline offloads by itself below its resident budget). Each run: ``run`` (stage times
from ``last_stats``), ``bake_onto_user_mesh`` (new UVs: the bunny has none), GLB written; the last run is
printed as one JSON line with the process's peak reserved GPU memory.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch
import trimesh

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from trellis.core.device import set_memory_budget  # noqa: E402
from trellis.export.pbr.onto_mesh import bake_onto_user_mesh  # noqa: E402
from trellis.pipelines.trellis2_texturing import Trellis2TexturingPipeline  # noqa: E402

GiB = 2 ** 30


def user_mesh(name: str | None, faces: int):
    if name:
        from realistic_objects import load_source
        v, f = load_source(name)
    else:
        n = max(8, int(round((faces / 4) ** 0.5)))
        m = trimesh.creation.uv_sphere(radius=1.0, count=[n, n])
        v, f = np.asarray(m.vertices), np.asarray(m.faces)
    return v * 3.0 + np.array([10.0, -2.0, 5.0]), f          # the user's own place and scale


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--folder", default=None)
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--mesh", default="bunny")
    ap.add_argument("--faces", type=int, default=None, help="a sphere of about this many faces instead")
    ap.add_argument("--resolution", type=int, default=1024)
    ap.add_argument("--texture-size", type=int, default=2048)
    ap.add_argument("--limit-gib", type=float, default=None)
    ap.add_argument("--runs", type=int, default=2)
    a = ap.parse_args()
    device = torch.device("cpu" if a.tiny else a.device)
    from trellis2_pipeline_gpu import ensure_folder, object_image
    folder = ensure_folder(a.folder, a.tiny)
    t0 = time.perf_counter()
    pipe = Trellis2TexturingPipeline.from_pretrained(folder, device=device)
    load_s = time.perf_counter() - t0
    if a.limit_gib and device.type == "cuda":
        set_memory_budget(device, int(a.limit_gib * GiB))
    v, f = user_mesh(None if a.faces else a.mesh, a.faces or 0)
    image = object_image(1024)
    out_dir = tempfile.mkdtemp(prefix="texturing_")
    row = {}
    for i in range(a.runs):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        result = pipe.run((v, f), image, seed=42, resolution=a.resolution, texture_size=a.texture_size,
                          preprocess_image=False)
        t1 = time.perf_counter()
        textured = bake_onto_user_mesh(result)
        t2 = time.perf_counter()
        path = textured.save(os.path.join(out_dir, f"run{i}.glb"))
        t3 = time.perf_counter()
        row = {"run": i, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
               "faces": int(len(f)), "resolution": a.resolution, "texture_size": a.texture_size,
               "voxels": result.info["voxels"], "tokens": result.info["tokens"], "limit_gib": a.limit_gib,
               "policy": {"precision": pipe.memory_policy.precision, "offload": pipe.memory_policy.offload},
               "stages_s": {s["stage"]: round(s["seconds"], 3) for s in pipe.last_stats},
               "run_s": round(t1 - t0, 3), "bake_s": round(t2 - t1, 3), "glb_s": round(t3 - t2, 3),
               "total_s": round(t3 - t0, 3), "load_s": round(load_s, 1), "uv": textured.info["uv"],
               "glb_bytes": os.path.getsize(path)}
        if device.type == "cuda":
            row["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved(device) / GiB, 3)
            row["peak_allocated_gib"] = round(torch.cuda.max_memory_allocated(device) / GiB, 3)
        print(json.dumps(row), flush=True)
    back = trimesh.load(path, process=False, force="mesh")
    assert len(back.faces) == len(f), "the GLB lost faces"
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
