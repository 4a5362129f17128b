"""``prepare_ovoxel_mesh`` on the CPU on the realistic O-Voxels of ``pbr_fidelity`` (a perfect decoder's 1024^3
dual-grid mesh of each ``pbr_truth`` shape, cached under ``.cache/pbr_fidelity``): seconds per step, and the
prepared arrays saved for a before / after bit-identity check.

    python benchmarks/pbr_prepare_cpu.py [--shapes torus goblet bunny nut blob] [--res 1024] [--repeat 3]
    python benchmarks/pbr_prepare_cpu.py --save before.npz          # the prepared arrays of every shape
    python benchmarks/pbr_prepare_cpu.py --compare before.npz       # ... checked bit for bit against a saved run
    python benchmarks/pbr_prepare_cpu.py --profile prof.out --shapes bunny     # cProfile of one run
    python benchmarks/pbr_prepare_cpu.py --cpu-seconds        # the preparing thread's CPU seconds per step

The face target is the app's Balanced preset's (``pbr_fidelity.pbr_settings("balanced")``: 2.5 % of the decoder's
faces; ``--target``: another), the texture its 1024 square. "blob": the random-weight decoder's open sheets
(``tests/helpers/ovoxel_blobs.random_blob``; 10 000 tokens at 1024^3 give the 3.2 M faces of a ``1024_cascade``
job; ``--target 159000``: the app's face count). The mesh stays on the CPU: on a GPU the clustering, refinement
and edge tables run on CUDA tensors; the hole filler's loops, the orientation and the UV layout (xatlas in a child
process) are numpy there as well.
"""
from __future__ import annotations

import argparse
import cProfile
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pbr_fidelity import ROOT, cached_ovoxel, pbr_settings  # noqa: E402
from trellis.export.pbr.prepare import prepare_ovoxel_mesh  # noqa: E402


def load(name: str, res: int, blob_tokens: int):
    """The CPU O-Voxel of a ``pbr_truth`` shape, or "blob": the random-weight decoder's open sheets
    (``ovoxel_blobs.random_blob``, ``blob_tokens`` latent voxels of a (res / 16)^3 grid)."""
    if name == "blob":
        sys.path.insert(0, str(ROOT))
        from tests.helpers.ovoxel_blobs import random_blob
        return random_blob(blob_tokens, latent=res // 16)
    return cached_ovoxel(name, res, "cpu")[0]


def run(mesh, options, profile=None, target=None, uv_budget=None):
    info: dict = {}
    target = options.face_target(int(mesh.faces.shape[0])) if target is None else target
    uv_budget = options.uv_time_budget_s if uv_budget is None else uv_budget
    prof = cProfile.Profile() if profile else None
    t0 = time.perf_counter()
    if prof:
        prof.enable()
    out = prepare_ovoxel_mesh(mesh, target, options.texture_size, options.max_hole_perimeter, options.uv_method,
                              uv_budget, info=info)
    if prof:
        prof.disable()
        prof.dump_stats(profile)
    info["total_seconds"] = round(time.perf_counter() - t0, 3)
    info["target"] = target
    return out, info


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", nargs="+", default=["torus", "goblet", "bunny", "nut"])
    ap.add_argument("--res", type=int, default=1024)
    ap.add_argument("--blob-tokens", type=int, default=10_000, help="the blob's latent voxels (10 000: ~3.2 M faces)")
    ap.add_argument("--target", type=int, default=None, help="the face target (default: Balanced's share)")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--uv-budget", type=float, default=None, help="the UV layout's budget (default: the app's)")
    ap.add_argument("--cpu-seconds", action="store_true",
                    help="one torch thread, every step's seconds this thread's CPU seconds (the xatlas child's "
                         "own time is then outside uv_unwrap)")
    ap.add_argument("--save", help="npz to save the prepared arrays of each shape in")
    ap.add_argument("--compare", help="npz of a saved run the prepared arrays must equal bit for bit")
    ap.add_argument("--profile", help="cProfile output of the last run of the last shape")
    ap.add_argument("--json", help="where to write the per-step seconds")
    args = ap.parse_args(argv)
    if args.threads or args.cpu_seconds:
        torch.set_num_threads(1 if args.cpu_seconds else args.threads)
    if args.cpu_seconds:
        time.perf_counter = time.thread_time        # the library's step clocks read it
    options = pbr_settings("balanced")
    saved, rows, same = {}, {}, True
    want = np.load(args.compare) if args.compare else None
    for name in args.shapes:
        mesh = load(name, args.res, args.blob_tokens)
        runs = []
        for i in range(args.repeat):
            last = name == args.shapes[-1] and i == args.repeat - 1
            out, info = run(mesh, options, args.profile if last else None, args.target, args.uv_budget)
            runs.append(info)
        steps = {k: round(statistics.median(r["prepare_seconds"].get(k, 0.0) for r in runs), 3)
                 for k in runs[0]["prepare_seconds"]}
        total = round(statistics.median(r["total_seconds"] for r in runs), 3)
        rows[name] = {"input_faces": runs[0]["input_faces"], "target": runs[0]["target"], "faces": runs[0]["faces"],
                      "uv_method": runs[0]["uv_method"], "total": total, "steps": steps,
                      "totals": [r["total_seconds"] for r in runs]}
        print(name, json.dumps(rows[name]), flush=True)
        arrays = {"vertices": out.vertices, "faces": out.faces, "uvs": out.uvs}
        for key, a in arrays.items():
            saved[f"{name}/{key}"] = a
            if want is not None:
                ref = want[f"{name}/{key}"]
                ok = ref.dtype == a.dtype and ref.shape == a.shape and np.array_equal(ref, a)
                same &= ok
                print(f"  {key}: {'identical' if ok else 'DIFFERENT'} {a.shape} {a.dtype}", flush=True)
    if args.save:
        np.savez(args.save, **saved)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    if want is not None:
        print("bit-identical" if same else "NOT bit-identical")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
