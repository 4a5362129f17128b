"""Mesh -> O-Voxel (trellis.representations.ovoxel.mesh_to_ovoxel, the PyTorch twin) time and peak memory.

    python benchmarks/ovoxel_voxelize_gpu.py --device cuda [--faces 200000] [--resolution 1024] [--mesh PATH]
                                             [--limit-gib 8] [--chunk N]

The mesh: ``--mesh`` (any file trimesh reads; put in the unit cube as the texturing pipeline does), else a
latitude-longitude sphere of diameter 0.99999 with about ``--faces`` faces. With the sphere at R = 1024 the voxel
count is checked against the facts' analytic 4,940,816 (TRELLIS2_TEXTURING_FACTS.md §10, §12.11; a tessellated
sphere lands a little under). ``--limit-gib``: the process is capped at that much GPU memory first
(``torch.cuda.set_per_process_memory_fraction``), as an 8 GiB card would be. Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import resource
import os
import sys
import time

import numpy as np
import torch
import trimesh

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from trellis.representations.ovoxel import mesh_to_ovoxel  # noqa: E402
from trellis.representations.ovoxel.voxelize import DEFAULT_CHUNK  # noqa: E402

SPHERE_VOXELS_1024 = 4_940_816


def sphere(faces: int):
    n = max(8, int(round((faces / 4) ** 0.5)))            # uv_sphere(count=[n, n]) has about 4 n^2 faces
    m = trimesh.creation.uv_sphere(radius=0.999990 / 2, count=[n, n])
    return np.asarray(m.vertices), np.asarray(m.faces)


def unit_cube(path: str):
    m = trimesh.load(path, force="mesh", process=False)
    v = np.asarray(m.vertices, np.float64)
    lo, hi = v.min(0), v.max(0)
    return (v - (lo + hi) / 2) * (0.99999 / (hi - lo).max()), np.asarray(m.faces)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--faces", type=int, default=200_000)
    ap.add_argument("--resolution", type=int, default=1024)
    ap.add_argument("--mesh", default=None)
    ap.add_argument("--limit-gib", type=float, default=None)
    ap.add_argument("--chunk", type=int, default=DEFAULT_CHUNK)
    a = ap.parse_args()
    device = torch.device(a.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())     # the memory cap needs an index
    if device.type == "cuda" and a.limit_gib:
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, a.limit_gib * 2 ** 30 / total), device)
    v, f = unit_cube(a.mesh) if a.mesh else sphere(a.faces)
    vt, ft = torch.as_tensor(v, device=device), torch.as_tensor(f, device=device)
    if device.type == "cuda":
        mesh_to_ovoxel(vt[:3], ft[:1], 16)              # warm-up: kernels loaded outside the timing
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    grid = mesh_to_ovoxel(vt, ft, a.resolution, chunk=a.chunk)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    out = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
           "faces": int(len(f)), "resolution": a.resolution, "voxels": int(grid.coords.shape[0]),
           "latent_tokens": int(torch.unique(grid.coords.long() // 16, dim=0).shape[0]),
           "seconds": round(seconds, 3), "chunk": a.chunk, "limit_gib": a.limit_gib}
    if device.type == "cuda":
        out["peak_allocated_gib"] = round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 3)
    else:
        out["max_rss_growth_gib"] = round((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 2 ** 20, 3)
    if not a.mesh and a.resolution == 1024:
        out["sphere_voxels_vs_facts"] = round(out["voxels"] / SPHERE_VOXELS_1024, 5)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
