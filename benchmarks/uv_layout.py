"""UV layouts on meshes of 20 k, 100 k and 500 k faces: texel use, seconds, charts, faces with a texel centre.

    .venv/bin/python benchmarks/uv_layout.py [--shapes sphere torus blob bunny] [--faces 20000 100000 500000]
        [--sizes 1024 2048] [--methods grouped charts] [--budget 10]

Shapes: "sphere" and "torus" (iso-surfaces of their distance fields at 512^3, reduced), "blob" (``tests/helpers/ovoxel_blobs.py``'s
random-weight O-Voxel through ``pbr.reduce.reduce_to_target``, the export's own path), "bunny" (the realistic
bunny of ``realistic_objects.py``, subdivided and reduced to the face count). Methods are ``unwrap_uv``'s ("auto"
with ``--budget``). Meshes are cached under /tmp/trellis_uv_layout. Results in docs/benchmarks/export.md#uv-unwrap.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

from trellis.export.uv.stats import atlas_stats, row_spans  # noqa: E402
from trellis.export.uv.unwrap import unwrap_uv  # noqa: E402

CACHE = Path(os.environ.get("TRELLIS_UV_CACHE", "/tmp/trellis_uv_layout"))


def sdf_surface(kind: str, faces: int, resolution: int = 512):
    """A sphere or torus as an O-Voxel's mesh would be: the iso-surface of its distance field at ``resolution``^3
    (scikit-image's marching cubes, benchmark only) reduced to ``faces`` by the export's reduction."""
    import torch
    from skimage.measure import marching_cubes
    from trellis.export.pbr.reduce import reduce_to_target
    x = (np.arange(resolution, dtype=np.float32) + 0.5) / resolution - 0.5
    X, Y, Z = np.meshgrid(x, x, x, indexing="ij", sparse=True)
    if kind == "torus":
        d = np.sqrt((np.sqrt(X ** 2 + Y ** 2) - 0.3) ** 2 + Z ** 2) - 0.12
    else:
        d = np.sqrt(X ** 2 + Y ** 2 + Z ** 2) - 0.45
    v, f, _, _ = marching_cubes(d, 0.0)
    v = v / resolution - 0.5
    f = f[:, ::-1].copy()                                  # outward winding
    return reduce_to_target(torch.from_numpy(v.astype(np.float32)), torch.from_numpy(f.astype(np.int64)), faces,
                            1.0 / resolution)


def blob_mesh(faces: int):
    """The random-weight blob's dense mesh reduced to ``faces`` faces by the export's reduction."""
    from helpers.ovoxel_blobs import random_blob
    from trellis.export.pbr.prepare import dense_mesh
    from trellis.export.pbr.reduce import reduce_to_target
    m = random_blob(max(4000, faces // 100), seed=0)
    v, f = dense_mesh(m)
    return reduce_to_target(v, f, faces, m.voxel_size)


def bunny_mesh(faces: int):
    """The realistic bunny, subdivided (midpoints) past ``faces`` and reduced to it by the export's reduction."""
    import torch
    from realistic_objects import prepare_source
    from trellis.export.pbr.reduce import reduce_to_target
    v, f = prepare_source("bunny")
    while len(f) < 1.5 * faces:
        e = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), 1)
        uniq, inv = np.unique(e, axis=0, return_inverse=True)
        mid = len(v) + inv.reshape(3, -1).T                    # the midpoints of edges 01, 12, 20
        v = np.concatenate([v, v[uniq].mean(1)])
        a, b, c = f.T
        m01, m12, m20 = mid.T
        f = np.concatenate([np.stack(t, 1) for t in ((a, m01, m20), (m01, b, m12), (m20, m12, c), (m01, m12, m20))])
    voxel = float(np.ptp(v, 0).max()) / 1024
    return reduce_to_target(torch.from_numpy(v).float(), torch.from_numpy(f), faces, voxel)


def mesh(shape: str, faces: int):
    path = CACHE / f"{shape}_{faces}.npz"
    if path.exists():
        with np.load(path) as z:
            return z["v"], z["f"]
    v, f = sdf_surface(shape, faces) if shape in ("sphere", "torus") else \
        blob_mesh(faces) if shape == "blob" else bunny_mesh(faces)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(path, v=np.asarray(v, np.float32), f=np.asarray(f, np.int64))
    return np.asarray(v, np.float32), np.asarray(f, np.int64)


def measure(v, f, size: int, method: str, budget: float) -> dict:
    info: dict = {}
    t0 = time.perf_counter()
    vv, ff, uv, vm = unwrap_uv(v, f, time_budget_s=budget, texture_size=size, method=method, info=info)
    seconds = time.perf_counter() - t0
    st = atlas_stats(ff, uv, size)
    tri = row_spans(ff, uv, size, 1e-4)[0]
    covered = np.zeros(len(ff), bool)
    covered[tri] = True
    return {"method": info.get("method"), "seconds": round(seconds, 2), "texel_use": round(st["texel_use"], 3),
            "charts": st["charts"], "faces_with_texel": round(float(covered.mean()), 3),
            "overlap_texels": st["overlap_texels"], "outside": st["outside"], "faces": len(ff)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shapes", nargs="+", default=["sphere", "torus", "blob", "bunny"])
    p.add_argument("--faces", nargs="+", type=int, default=[20_000, 100_000, 500_000])
    p.add_argument("--sizes", nargs="+", type=int, default=[1024, 2048])
    p.add_argument("--methods", nargs="+", default=["grouped"])
    p.add_argument("--budget", type=float, default=10.0)
    a = p.parse_args(argv)
    print("| shape | faces | texture | method | seconds | texel use | charts | faces with a texel | overlaps |")
    print("|---|---|---|---|---|---|---|---|---|")
    for shape in a.shapes:
        for n in a.faces:
            v, f = mesh(shape, n)
            for size in a.sizes:
                for method in a.methods:
                    r = measure(v, f, size, method, a.budget)
                    print(f"| {shape} | {r['faces']} | {size} | {r['method']} | {r['seconds']} | {r['texel_use']} | "
                          f"{r['charts']} | {r['faces_with_texel']} | {r['overlap_texels']} |", flush=True)


if __name__ == "__main__":
    main()
