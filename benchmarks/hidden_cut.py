"""The hidden-face cut's minimum cut (``hidden_faces.source_side``) against the plain solve over every face
(``source_side_whole_graph``), on the mesh ``to_glb`` gives it: a realistic object's decoder-like mesh after the first
decimation, its visibility from ``face_visibility`` (the reference's 1000 views at 1024² on a GPU, the CPU's own
settings without one).

    python benchmarks/hidden_cut.py [--shape nut] [--runs 5] [--simplify 0.975]

Prints the faces, the components and what each holds, the seconds of both solves (alternated, median) and of the whole
``invisible_face_mask``, and checks that both solves give the same faces.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import realistic_objects as ro  # noqa: E402
from trellis.export.cleanup import hidden_faces, visibility  # noqa: E402
from trellis.export.mesh_graph import components, dual_arcs, edges  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="nut")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--simplify", type=float, default=0.975)
    args = ap.parse_args(argv)
    v, f = ro.first_decimation(args.shape, args.simplify)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    vis = np.asarray(visibility.face_visibility(torch.as_tensor(v, device=dev), torch.as_tensor(f, device=dev),
                                                device=dev), np.float64)
    e, ends, _ = edges(f, len(v))
    fa, fb, fe = dual_arcs(e, len(f))
    n_comp, comp = components(len(f), fa, fb)
    q75 = hidden_faces.group_quantile(vis, comp, n_comp, 0.75)
    outer = vis > np.minimum(np.maximum(q75, 0.25), 0.5)[comp]
    inner = vis == 0
    arc_cap = np.rint(np.linalg.norm(v[ends[fe, 0]] - v[ends[fe, 1]], axis=1) * 1000.0 * 1024)
    info = {"device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu", "shape": args.shape,
            "faces": int(len(f)), "components": [
                {"faces": int((comp == c).sum()), "hidden": int((inner & (comp == c)).sum()),
                 "well_seen": int((outer & (comp == c)).sum())} for c in range(min(n_comp, 8))]}
    times = {"source_side": [], "source_side_whole_graph": [], "invisible_face_mask": []}
    same = True
    for _ in range(args.runs):
        for name, solve in (("source_side", lambda: hidden_faces.source_side(len(f), fa, fb, arc_cap, comp, inner,
                                                                             outer)),
                            ("source_side_whole_graph", lambda: hidden_faces.source_side_whole_graph(
                                len(f), fa, fb, arc_cap, inner, outer)),
                            ("invisible_face_mask", lambda: hidden_faces.invisible_face_mask(v, f, vis))):
            t0 = time.perf_counter()
            out = solve()
            times[name].append(time.perf_counter() - t0)
            if name == "source_side":
                first = out
            elif name == "source_side_whole_graph":
                same &= bool(np.array_equal(first, out))
    info["median_s"] = {k: round(statistics.median(t), 4) for k, t in times.items()}
    info["same_faces"] = same
    print(json.dumps(info), flush=True)
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
