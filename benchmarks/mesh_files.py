"""The job's mesh files from one baked mesh: the GLB and the OBJ alone, and side by side as the app writes them, with
the texture's PNG encoded once for both (one ``TexturedMesh``) or once per file (two of them, as before). The mesh is
the realistic nut at the balanced budget with our layout, the texture a smooth 1024² image with noise.

    python benchmarks/mesh_files.py [--runs 7]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import realistic_objects as ro  # noqa: E402
from trellis.export.cleanup import decimate  # noqa: E402
from trellis.export.formats import write  # noqa: E402
from trellis.export.normals import SharedSplit  # noqa: E402
from trellis.export.textured import TexturedMesh  # noqa: E402
from trellis.export.uv.geometric import geometric_layout  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args(argv)
    arr = ro.build_arrays("nut", verbose=False)
    v, f = decimate.simplify_mesh(arr["vertices"], arr["faces"], 1 - 27396 / len(arr["faces"]))
    lv, lf, uv, _ = geometric_layout(np.asarray(v), np.asarray(f), 1024, 2)
    y, x = np.mgrid[0:1024, 0:1024] / 1024.0
    tex = np.stack([128 + 100 * np.sin(6 * x + 3 * y), 128 + 90 * np.cos(5 * y), 128 + 60 * np.sin(9 * x * y)], -1)
    tex = np.clip(tex + np.random.default_rng(0).normal(0, 6, tex.shape), 0, 255).astype(np.uint8)
    split = SharedSplit(lv, lf, 60.0)
    split.value()
    out = tempfile.mkdtemp(prefix="mesh_files_")

    def mesh():
        m = TexturedMesh(lv, lf, uv, tex, {})
        m.split = split
        return m

    def side_by_side(shared: bool):
        a = mesh()
        b = a if shared else mesh()
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda job: write(job[0], os.path.join(out, "model." + job[1])), [(a, "glb"), (b, "obj")]))

    def median(fn):
        fn()
        times = []
        for _ in range(args.runs):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return statistics.median(times)

    print(f"{len(lf)} faces, {os.cpu_count()} cores")
    print(f"GLB alone {median(lambda: write(mesh(), os.path.join(out, 'model.glb'))):.4f} s")
    print(f"OBJ alone {median(lambda: write(mesh(), os.path.join(out, 'model.obj'))):.4f} s")
    for _ in range(2):
        print(f"side by side, one encode per file {median(lambda: side_by_side(False)):.4f} s; "
              f"one encode shared {median(lambda: side_by_side(True)):.4f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
