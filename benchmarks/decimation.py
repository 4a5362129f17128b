"""Quadric decimation in one pass vs in pieces (``trellis.export.cleanup.decimate.simplify_mesh``): seconds and
distance to the source surface.

    python benchmarks/decimation.py [--shapes bunny nut] [--mesh FILE.npz ...] [--pieces 1 auto 16] [--runs 3]
        [--subdivide 0 1 2]

Meshes: the realistic objects' decoder-like meshes (``benchmarks/realistic_objects.py``, cached) and any
``.npz`` with ``vertices`` / ``faces``; ``--subdivide k`` adds each mesh split k times into four (edge
midpoints) with vertex noise of 0.3 of the new mean edge length: 4^k times the faces, as noisy as a
random-weight decoder's surface (the 6.27 M-face mesh of ``app_gpu.py``'s random weights is
between ``--subdivide 1`` and ``2`` of the bunny's 731 k faces). For each
mesh and piece count: the median seconds of ``simplify_mesh(v, f, --reduction)`` over ``--runs`` runs
(the cores this process may use are printed: pieces run one child process per core), the faces kept,
the mean and 99th-percentile distance (in voxels of 1/256) from 200 k points sampled on the result to a
2 M-point sample of the source surface, and the number of edges not used by exactly two faces (0 for a
closed result of a closed input).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def surface_points(v, f, n, seed):
    rng = np.random.default_rng(seed)
    tri = np.asarray(v, dtype=np.float64)[f]
    area = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    idx = rng.choice(len(f), n, p=area / area.sum())
    r = rng.random((n, 2))
    flip = r.sum(1) > 1
    r[flip] = 1 - r[flip]
    t = tri[idx]
    return t[:, 0] + r[:, :1] * (t[:, 1] - t[:, 0]) + r[:, 1:] * (t[:, 2] - t[:, 0])


def subdivide(v, f, rng):
    """Each face split into four at its edge midpoints, then every vertex moved by Gaussian noise of
    0.3 x the new mean edge length."""
    v = np.asarray(v, dtype=np.float64)
    e = np.sort(np.stack([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]], 1).reshape(-1, 2), axis=1)
    uniq, inv = np.unique(e, axis=0, return_inverse=True)
    mid = len(v) + inv.reshape(-1, 3)
    v = np.concatenate([v, v[uniq].mean(1)])
    a, b, c = f[:, 0], f[:, 1], f[:, 2]
    ab, bc, ca = mid[:, 0], mid[:, 1], mid[:, 2]
    f = np.concatenate([np.stack(t, 1) for t in ((a, ab, ca), (ab, b, bc), (ca, bc, c), (ab, bc, ca))])
    edge = np.linalg.norm(v[f[:, 0]] - v[f[:, 1]], axis=1).mean()
    return (v + rng.normal(0, 0.3 * edge, v.shape)).astype(np.float32), f


def bad_edges(f) -> int:
    e = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    _, counts = np.unique(e, axis=0, return_counts=True)
    return int((counts != 2).sum())


def _subdivided(mesh, k):
    rng = np.random.default_rng(k)
    v, f = mesh
    for _ in range(k):
        v, f = subdivide(v, f, rng)
    return v, f


def main() -> int:
    from trellis.export import cleanup as mc
    from trellis.export import processes

    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", nargs="*", default=["bunny", "nut"])
    ap.add_argument("--mesh", nargs="*", default=[])
    ap.add_argument("--pieces", nargs="*", default=["1", "auto"])
    ap.add_argument("--reduction", type=float, default=0.95)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--subdivide", nargs="*", type=int, default=[0])
    ap.add_argument("--out", default=None)
    ap.add_argument("--timeline", action="store_true",
                    help="also print where one decimation in pieces spends its time (child starts and ends)")
    args = ap.parse_args()

    meshes = {}
    if args.shapes:
        from realistic_objects import build_arrays

        for name in args.shapes:
            arr = build_arrays(name)
            meshes[name] = (arr["vertices"].astype(np.float32), arr["faces"].astype(np.int64))
    for path in args.mesh:
        with np.load(path) as d:
            meshes[Path(path).stem] = (d["vertices"].astype(np.float32), d["faces"].astype(np.int64))
    from scipy.spatial import cKDTree

    meshes = {f"{name}" + (f"_sub{k}" if k else ""): m for name, m in meshes.items() for k, m in
              ((k, _subdivided(m, k)) for k in args.subdivide)}
    print(f"cores for the pieces: {processes.usable_cores()}", flush=True)
    rows = []
    for name, (v, f) in meshes.items():
        tree = cKDTree(surface_points(v, f, 2_000_000, 1))
        for p in args.pieces:
            pieces = None if p == "auto" else int(p)
            times, info = [], {}
            for _ in range(args.runs):
                t0 = time.perf_counter()
                rv, rf = mc.simplify_mesh(v, f, args.reduction, pieces=pieces, info=info)
                times.append(time.perf_counter() - t0)
            d, _ = tree.query(surface_points(rv, rf, 200_000, 0))
            row = {"mesh": name, "faces": int(len(f)), "pieces": pieces or mc.decimation_pieces(len(f)),
                   "seconds": round(statistics.median(times), 3), "all_seconds": [round(t, 3) for t in times],
                   "faces_out": int(len(rf)), "mean_dist_vox": round(float(d.mean()) * 256, 4),
                   "p99_dist_vox": round(float(np.percentile(d, 99)) * 256, 4), "bad_edges": bad_edges(rf)}
            if args.timeline and "timeline" in info:      # the last run's (a decimation in pieces)
                row["timeline"] = info["timeline"]
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
