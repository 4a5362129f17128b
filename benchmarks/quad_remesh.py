"""Quad remeshing on the realistic objects' source surfaces (benchmarks/realistic_objects.py: bunny, nut): quad
share, faces made vs asked, non-manifold and boundary edges, Hausdorff distance (share of the bounding-box
diagonal) and seconds, one row per shape and target (docs/benchmarks/export.md#quad-remeshing).

    python benchmarks/quad_remesh.py [--shapes bunny nut] [--targets 2000 10000] [--no-fit]
    python benchmarks/quad_remesh.py --full-size        # the remesher's input of a full-size export

``--full-size``: the decoder-like mesh at 256³ (``realistic_objects.build_arrays``, cached) as a full-size export
hands it to the remesher at the balanced preset: its outer sheet (the export's visibility removes the inner one)
decimated to ``REMESH_INPUT_FACTOR`` triangles per quad asked, the quads asked being the preset's face budget.
The seconds of each stage (remesh, corners set onto the source, fit, measure) follow each row.

The remesher (Instant Meshes) runs on the CPU whatever the device: no GPU command is needed.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from realistic_objects import build_arrays, prepare_source

from trellis.export.quads import edge_counts, remesh_quads

# The balanced preset's share of the decoder's faces removed (``cleanup.chain.face_budget``).
BALANCED_SIMPLIFY = 0.975


def full_size_source(name: str):
    """(vertices, faces, quads asked) of ``name`` as a full-size export gives them to the remesher."""
    from trellis.export.cleanup.chain import face_budget
    from trellis.export.cleanup.decimate import simplify_mesh
    from trellis.export.quads.bake import REMESH_INPUT_FACTOR

    arr = build_arrays(name, resolution=256, num_gaussians=1000, verbose=False)
    target = face_budget(len(arr["faces"]), BALANCED_SIMPLIFY)
    faces = np.asarray(arr["faces"], np.int64)[arr["outer"]]
    keep = REMESH_INPUT_FACTOR * target
    v, f = simplify_mesh(arr["vertices"], faces, 1.0 - keep / len(faces), pieces=1)
    return np.asarray(v, np.float64), np.asarray(f, np.int64), target


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", nargs="+", default=["bunny", "nut"])
    p.add_argument("--targets", nargs="+", type=int, default=[2000, 10000])
    p.add_argument("--full-size", action="store_true", help="the decoder-like mesh at the preset's target")
    p.add_argument("--no-fit", action="store_true", help="corners only set onto the source (the fit's baseline)")
    args = p.parse_args(argv)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}, "
          f"commit {commit}")
    print("| shape | source faces (boundary edges) | quads asked | faces made | quad share | non-manifold edges | "
          "boundary edges | Hausdorff / diagonal | seconds (remesh) |")
    for name in args.shapes:
        if args.full_size:
            v, f, target = full_size_source(name)
            runs = [(v, f, target)]
        else:
            v, f = prepare_source(name)
            runs = [(v, f, target) for target in args.targets]
        for v, f, target in runs:
            source_boundary = edge_counts(f)[1]
            r = remesh_quads(v, f, target, fit=not args.no_fit).report
            print(f"| {name} | {len(f)} ({source_boundary}) | {target} | {r.faces_made} | {100 * r.quad_share:.1f} % "
                  f"| {r.non_manifold_edges} | {r.boundary_edges} | {100 * r.hausdorff:.2f} % | {r.seconds:.2f} |",
                  flush=True)
            print("  stages: " + ", ".join(f"{k} {s:.2f} s" for k, s in r.stage_seconds.items()), flush=True)
            for w in r.warnings:
                print(f"  warning: {w}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
