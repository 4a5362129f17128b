"""Whether the TRELLIS.2 PBR preparation keeps a closed input closed, and what it costs: per shape and setting the
boundary / non-manifold edges of the dense mesh, after plain clustering, after refinement and hole filling, of the
reduced mesh and after orientation, with the seconds of each step (``reduce_to_target``'s record).

    python benchmarks/pbr_closed.py [--res 512] [--shapes sphere torus cup blob] [--device cpu]

Shapes: ``tests/helpers/ovoxel_shapes.py`` (closed SDF solids as perfect O-Voxels; the cup's wall 2.5 voxels thick)
and the random-weight ``blob`` (open sheets, ``ovoxel_blobs.random_blob`` at (res / 16)^3 latent, as many tokens as
fill the same share of it as the measured 1024^3 blob). Settings: ``PbrOptions()`` and the game destination's."""
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
from trellis.export.pbr.prepare import dense_mesh  # noqa: E402
from trellis.export.pbr.reduce import reduce_to_target  # noqa: E402

SETTINGS = {"default": PbrOptions(), "game": PbrOptions(target_faces=None, destination="game")}


def make(shape: str, res: int, device: str):
    if shape == "blob":
        latent = res // 16
        return random_blob(int(19_800 * (latent / 64) ** 2), latent=latent, device=device)
    mesh = getattr(ovoxel_shapes, f"{shape}_ovoxel")(res)
    mesh.vertices, mesh.faces = mesh.vertices.to(device), mesh.faces.to(device)
    return mesh


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--res", type=int, default=512)
    ap.add_argument("--shapes", nargs="+", default=["sphere", "torus", "cup", "blob"])
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    for shape in a.shapes:
        mesh = make(shape, a.res, a.device)
        v, f = dense_mesh(mesh)
        for name, options in SETTINGS.items():
            target = options.face_target(int(f.shape[0]))
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
