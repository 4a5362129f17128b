"""The UV unwrap of TRELLIS.2's PBR export on the CPU: the random-weight blob (tests/helpers/ovoxel_blobs.py) reduced
as the export reduces it (``pbr.reduce.reduce_to_target``, then ``orientation.unify_orientation``), then unwrapped by
each route of ``trellis.export.uv.unwrap``: seconds (wall, and CPU of this process and of its children), the route
"auto" takes, and the atlas's quality (``uv.stats.atlas_stats``: charts, single-triangle charts, texel use, overlapping
texels).

    python benchmarks/uv_unwrap_blob.py [--tokens 19788] [--faces 500000] [--texture 2048] [--budget 10]
        [--routes auto,groups,whole-budget,charts,whole] [--mesh /tmp/uv_blob_mesh.npz] [--out uv_unwrap_blob.json]

Routes: "auto" (``unwrap_uv`` as the export calls it), "groups" (``xatlas_groups.group_layout``, every usable core;
``--workers`` to pin), "whole-budget" ("auto" as it was before the groups: one xatlas atlas within the budget, then
the chart layout), "charts" (``axis_charts``), "whole" (one xatlas atlas, no budget). The reduced mesh is kept in
``--mesh`` (made when missing: the 19 788-token blob takes ~30 s to make and reduce on one core). For timings on one
core: OMP_NUM_THREADS=1 and ``--workers 1``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trellis.export.uv import axis_charts, xatlas, xatlas_groups  # noqa: E402
from trellis.export.uv.stats import atlas_stats  # noqa: E402
from trellis.export.uv.unwrap import unwrap_uv, xatlas_route  # noqa: E402


def reduced_blob(path: str, tokens: int, faces: int):
    """(vertices, faces) of the blob reduced to ``faces`` and oriented, from ``path`` (made and saved when missing)."""
    if os.path.isfile(path):
        with np.load(path) as d:
            if int(d["tokens"]) == tokens and int(d["target"]) == faces:
                return d["vertices"], d["faces"]
    from tests.helpers.ovoxel_blobs import random_blob
    from trellis.export.pbr.orientation import unify_orientation
    from trellis.export.pbr.prepare import dense_mesh
    from trellis.export.pbr.reduce import reduce_to_target
    from trellis.export.pbr.small_holes import MAX_HOLE_PERIMETER

    t0 = time.perf_counter()
    mesh = random_blob(tokens, seed=1)
    v, f = dense_mesh(mesh)
    v, f = reduce_to_target(v, f, faces, mesh.voxel_size, MAX_HOLE_PERIMETER, None, None, {})
    f = unify_orientation(v, f)
    np.savez(path, vertices=v, faces=f, tokens=tokens, target=faces)
    print(f"made {path}: {len(f)} faces in {time.perf_counter() - t0:.0f} s", flush=True)
    return v, f


def cpu_seconds():
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, kids.ru_utime + kids.ru_stime


def one_route(route, v, f, args) -> dict:
    """Unwrap by ``route``; its seconds, record and atlas stats."""
    info: dict = {}
    size, budget = args.texture, args.budget
    c0, t0 = cpu_seconds(), time.perf_counter()
    try:
        if route == "auto":
            out = unwrap_uv(v, f, time_budget_s=budget, texture_size=size, info=info)
        elif route == "groups":
            out = xatlas_groups.group_layout(v, f, 600, size, 2, None, None, workers=args.workers, info=info)
        elif route == "whole-budget":
            try:
                out = xatlas.xatlas_layout(v, f, budget, size, 2, None, None)
                info["method"] = "xatlas"
            except TimeoutError:
                out = axis_charts.chart_layout(v, f, texture_size=size, padding=2)
                info["method"] = "charts"
        elif route == "charts":
            out = axis_charts.chart_layout(v, f, texture_size=size, padding=2)
        elif route == "whole":
            out = xatlas.xatlas_layout(v, f, 600, size, 2, None, None)
        else:
            raise ValueError(f"unknown route {route!r}")
    except Exception as err:              # recorded: the other routes still count
        return {"route": route, "error": f"{type(err).__name__}: {str(err)[:300]}"}
    seconds = time.perf_counter() - t0
    c1 = cpu_seconds()
    return {"route": route, "seconds": round(seconds, 3), "cpu_seconds": round(c1[0] - c0[0], 3),
            "children_cpu_seconds": round(c1[1] - c0[1], 3), "info": info,
            "stats": atlas_stats(out[1], out[2], size)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=19788)
    ap.add_argument("--faces", type=int, default=500_000)
    ap.add_argument("--texture", type=int, default=2048)
    ap.add_argument("--budget", type=float, default=10.0)
    ap.add_argument("--workers", type=int, default=None, help="children of the groups route (default: every core)")
    ap.add_argument("--routes", default="auto,groups,whole-budget,charts,whole")
    ap.add_argument("--mesh", default=os.path.join(tempfile.gettempdir(), "uv_blob_mesh.npz"))
    ap.add_argument("--out", default="uv_unwrap_blob.json")
    args = ap.parse_args(argv)
    v, f = reduced_blob(args.mesh, args.tokens, args.faces)
    info = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "omp_threads": os.environ.get("OMP_NUM_THREADS"), "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d"), "tokens": args.tokens, "faces": int(len(f)),
            "texture_size": args.texture, "budget": args.budget,
            "auto_route": xatlas_route(len(f), args.budget), "runs": []}
    for route in args.routes.split(","):
        row = one_route(route.strip(), v, f, args)
        info["runs"].append(row)
        s = row.get("stats", {})
        print(f"{row['route']:>12}: {row.get('seconds', float('nan')):7.2f} s (cpu {row.get('cpu_seconds', 0):.1f} + "
              f"children {row.get('children_cpu_seconds', 0):.1f}) charts {s.get('charts')} texel_use "
              f"{s.get('texel_use', float('nan')):.4f} overlap {s.get('overlap_texels')} "
              f"{row.get('info', {}).get('method', '')} {row.get('error', '')}", flush=True)
        Path(args.out).write_text(json.dumps(info, indent=1))
    print(f"wrote {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
