"""What the export's fixed-order sums by index cost on the GPU (``trellis.core.segment_sum``) against the atomic
``index_add_`` they replaced, A B A B on one host.

    python benchmarks/ordered_sums_gpu.py [--runs 3] [--out ordered_sums_gpu.json]

Two exports, each timed whole (seconds, after one warm-up of each variant): v1's bake of a noisy ~1.4 M-face sphere
with 40 000 Gaussians (the GPU export tests' input: decimation, UVs, 16 views at 256², a 512² texture) and a PBR
export of a random O-Voxel blob (400 latent voxels of a 32³ grid, 20 000 faces, a 512² texture with a normal map).
"atomic" puts ``Tensor.index_add_`` back in the modules that call the fixed-order sum.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

MODULES = ("trellis.export.bake.least_squares", "trellis.export.bake.near_surface", "trellis.export.bake.normal_map",
           "trellis.export.pbr.cluster", "trellis.export.pbr.dense_normals")


def atomic(out, index, values):
    return out.index_add_(0, index, values)


def use(variant: str) -> None:
    from trellis.core.segment_sum import index_add_in_order_

    for name in MODULES:
        module = __import__(name, fromlist=["index_add_in_order_"])
        module.index_add_in_order_ = atomic if variant == "atomic" else index_add_in_order_


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", default="ordered_sums_gpu.json")
    args = ap.parse_args(argv)
    from provenance import source_commit
    from tests.gpu.test_export_gpu import sphere_bake_inputs
    from tests.helpers.ovoxel_blobs import random_blob
    from trellis.export.pbr.export import ovoxel_to_glb
    from trellis.utils.postprocessing_utils import bake_textured_mesh

    _, gaussian, mesh, kw = sphere_bake_inputs()
    blob = random_blob(400, latent=32, seed=3, device="cuda")
    folder = Path(tempfile.mkdtemp())

    def v1():
        bake_textured_mesh(gaussian, mesh, **kw)

    def pbr():
        ovoxel_to_glb(blob, folder / "x.glb", target_faces=20000, texture_size=512, normal_map=True)

    seconds = {f"{job}:{variant}": [] for job in ("v1_bake", "pbr_export") for variant in ("ordered", "atomic")}
    for i in range(args.runs + 1):
        for variant in ("ordered", "atomic"):
            use(variant)
            for job, fn in (("v1_bake", v1), ("pbr_export", pbr)):
                torch.cuda.synchronize()
                t = time.perf_counter()
                fn()
                torch.cuda.synchronize()
                if i:                                       # the first round warms both up
                    seconds[f"{job}:{variant}"].append(time.perf_counter() - t)
    use("ordered")
    info = {"device": torch.cuda.get_device_name(), "commit": source_commit(), "date": time.strftime("%Y-%m-%d"),
            "seconds": seconds, "median": {k: statistics.median(v) for k, v in seconds.items()}}
    Path(args.out).write_text(json.dumps(info, indent=1))
    print(json.dumps(info["median"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
