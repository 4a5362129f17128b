"""Whether the TRELLIS.2 PBR preparation keeps a closed input closed, and what it costs: per shape and setting the
boundary / non-manifold edges of the dense mesh, after plain clustering, after refinement and hole filling, of the
reduced mesh and after orientation, with the seconds of each step (``reduce_to_target``'s record).

    python benchmarks/pbr_closed.py [--res 512] [--shapes sphere torus cup blob] [--device cpu]
        [--settings default game app] [--blob-tokens N] [--prepare] [--cpu-seconds]

Shapes: ``tests/helpers/ovoxel_shapes.py`` (closed SDF solids as perfect O-Voxels; the cup's wall 2.5 voxels thick)
and the random-weight ``blob`` (open sheets, ``ovoxel_blobs.random_blob`` at (res / 16)^3 latent, as many tokens as
fill the same share of it as the measured 1024^3 blob, or ``--blob-tokens``: 10 000 at 1024^3 give the 3.2 M faces of a
``1024_cascade`` job). Settings: ``PbrOptions()``, the game destination's, and the app's ("app": no face target,
Simplify's 5 %: a ``1024_cascade`` job's 159 k faces).

``--prepare`` runs the whole ``prepare_ovoxel_mesh`` (UV layout included, its budget 120 s so that the layout does not
depend on the machine's load) and prints its ``prepare_seconds``. ``--cpu-seconds``: one torch thread, and every
step's seconds are this thread's CPU seconds (``time.thread_time``), which a busy shared machine disturbs far less
than the wall clock (the xatlas child's own time is then outside "uv_unwrap")."""
import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.helpers import ovoxel_shapes  # noqa: E402
from tests.helpers.ovoxel_blobs import random_blob  # noqa: E402
from trellis.export.options import PbrOptions  # noqa: E402
from trellis.export.pbr.manifold import edge_counts  # noqa: E402
from trellis.export.pbr.orientation import unify_orientation  # noqa: E402
from trellis.export.pbr.prepare import dense_mesh, prepare_ovoxel_mesh  # noqa: E402
from trellis.export.pbr.reduce import reduce_to_target  # noqa: E402

SETTINGS = {"default": PbrOptions(), "game": PbrOptions(target_faces=None, destination="game"),
            "app": PbrOptions(target_faces=None)}


def make(shape: str, res: int, device: str, blob_tokens: int | None = None):
    if shape == "blob":
        latent = res // 16
        tokens = blob_tokens if blob_tokens else int(19_800 * (latent / 64) ** 2)
        return random_blob(tokens, latent=latent, device=device)
    mesh = getattr(ovoxel_shapes, f"{shape}_ovoxel")(res)
    mesh.vertices, mesh.faces = mesh.vertices.to(device), mesh.faces.to(device)
    return mesh


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--res", type=int, default=512)
    ap.add_argument("--shapes", nargs="+", default=["sphere", "torus", "cup", "blob"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--settings", nargs="+", default=["default", "game"], choices=sorted(SETTINGS))
    ap.add_argument("--blob-tokens", type=int, default=None)
    ap.add_argument("--prepare", action="store_true")
    ap.add_argument("--cpu-seconds", action="store_true")
    a = ap.parse_args()
    if a.cpu_seconds:
        torch.set_num_threads(1)
        time.perf_counter = time.thread_time        # the library's step clocks read it
    for shape in a.shapes:
        mesh = make(shape, a.res, a.device, a.blob_tokens)
        v, f = dense_mesh(mesh)
        for name in a.settings:
            options = SETTINGS[name]
            target = options.face_target(int(f.shape[0]))
            if a.prepare:
                info: dict = {}
                t0 = time.perf_counter()
                prepare_ovoxel_mesh(mesh, target, uv_time_budget_s=120.0, info=info, dense=(v, f))
                print(json.dumps({"shape": shape, "res": a.res, "setting": name, "dense_faces": int(f.shape[0]),
                                  "target": target, "faces": info["faces"], "uv_method": info["uv_method"],
                                  "seconds": round(time.perf_counter() - t0, 2), "steps": info["prepare_seconds"]}),
                      flush=True)
                continue
            info: dict = {}
            t0 = time.perf_counter()
            rv, rf = reduce_to_target(v, f, target, mesh.voxel_size, info=info)
            reduce_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            oriented = unify_orientation(rv, rf)
            row = {"shape": shape, "res": a.res, "setting": name, "dense_faces": int(f.shape[0]), "target": target,
                   "faces": int(len(rf)), "topology": info["topology"], "oriented": edge_counts(oriented),
                   "reduce_s": round(reduce_s, 2), "orient_s": round(time.perf_counter() - t0, 2),
                   "seconds": info["seconds"], "refine": info.get("refine")}
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
