"""Quad remeshing on the realistic objects' source surfaces (benchmarks/realistic_objects.py: bunny, nut): quad
share, faces made vs asked, non-manifold and boundary edges, Hausdorff distance (share of the bounding-box
diagonal) and seconds, one row per shape and target (docs/benchmarks/export.md#quad-remeshing).

    python benchmarks/quad_remesh.py [--shapes bunny nut] [--targets 2000 10000] [--no-fit]

The remesher (Instant Meshes) runs on the CPU whatever the device: no GPU command is needed.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from realistic_objects import prepare_source

from trellis.export.quads import edge_counts, remesh_quads


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", nargs="+", default=["bunny", "nut"])
    p.add_argument("--targets", nargs="+", type=int, default=[2000, 10000])
    p.add_argument("--no-fit", action="store_true", help="corners only set onto the source (the fit's baseline)")
    args = p.parse_args(argv)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}, "
          f"commit {commit}")
    print("| shape | source faces (boundary edges) | quads asked | faces made | quad share | non-manifold edges | "
          "boundary edges | Hausdorff / diagonal | seconds (remesh) |")
    for name in args.shapes:
        v, f = prepare_source(name)
        source_boundary = edge_counts(f)[1]
        for target in args.targets:
            r = remesh_quads(v, f, target, fit=not args.no_fit).report
            print(f"| {name} | {len(f)} ({source_boundary}) | {target} | {r.faces_made} | {100 * r.quad_share:.1f} % "
                  f"| {r.non_manifold_edges} | {r.boundary_edges} | {100 * r.hausdorff:.2f} % | {r.seconds:.2f} |",
                  flush=True)
            for w in r.warnings:
                print(f"  warning: {w}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
