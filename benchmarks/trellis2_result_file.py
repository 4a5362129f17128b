"""TRELLIS.2's kept result (result.npz) of the random-weight blob: its size, the seconds to write and to read it, and
Export again (read + the PBR export of ``trellis.export.pbr.ovoxel_to_glb``), for the O-Voxel as decoded ("exact")
and rounded by ``trellis.export.light_ovoxel`` ("light", where the code has it), and for the first layout ("first":
every array as it is, floats stored, integers deflated; written by tests/helpers/ovoxel_first_layout.py, read by the
loader, which still reads it). Each
GLB made from the read file is compared byte for byte with the GLB of the O-Voxel it was written from.

    python benchmarks/trellis2_result_file.py [--folder /tmp/trellis2_full] [--runs 3] [--export-runs 2]
        [--variants first,exact,light] [--out result_file.json]
    python benchmarks/trellis2_result_file.py --device cpu --export-tokens 2000 --faces 48000 --texture 1024   # a CPU

The O-Voxel is made as ``trellis2_export_gpu.py`` makes it: with ``--folder`` (a full-size random-weight pipeline
folder) by one ``1024_cascade`` run (``--seed``), else synthetically (``--tokens`` latent voxels as 16 x 16 sheets;
19 788 gives the measured blob's 5.07 M fine voxels); never read from an earlier file. The export is timed on that
O-Voxel, or with ``--export-tokens`` on a smaller synthetic one (a CPU's size; the file's size and read time are
still the full blob's). Every file is written and read ``--runs`` times, the variants alternating; then each is
exported again ``--export-runs`` times. ``--repo PATH`` imports ``trellis`` from another checkout (``git archive REV
| tar -x -C PATH``): the same measurements of an earlier checkout. The JSON is rewritten after each row.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--folder", default=None, help="make the O-Voxel with this full-size random-weight pipeline")
    ap.add_argument("--tokens", type=int, default=19788, help="the synthetic blob's latent voxels (no --folder)")
    ap.add_argument("--export-tokens", type=int, default=None, help="time the export on a synthetic blob this size")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--faces", type=int, default=500_000)
    ap.add_argument("--texture", type=int, default=2048)
    ap.add_argument("--runs", type=int, default=3, help="writes and reads of each variant's file (alternating)")
    ap.add_argument("--export-runs", type=int, default=2, help="Export again runs of each variant (0: none)")
    ap.add_argument("--device", default=None, help="cuda (default where there is one) or cpu")
    ap.add_argument("--repo", default=str(HERE.parent), help="the checkout whose trellis is measured")
    ap.add_argument("--variants", default="first,exact,light", help="which of first, exact, light to measure")
    ap.add_argument("--out", default="result_file.json")
    ap.add_argument("--commit", default=None, help="commit id to record (default: provenance.source_commit(--repo))")
    return ap.parse_args(argv)


args = parse() if __name__ == "__main__" else None
REPO = Path(args.repo if args else HERE.parent).resolve()
sys.path.insert(0, str(REPO))
sys.path.insert(1, str(HERE))

import torch  # noqa: E402

from trellis.export import load_ovoxel_result, save_ovoxel_result  # noqa: E402
from trellis.export.pbr import ovoxel_to_glb  # noqa: E402

try:
    from trellis.export.ovoxel_result import light_ovoxel  # noqa: E402
except ImportError:                          # a checkout from before the light layout
    light_ovoxel = None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_ovoxel(a, device: torch.device, tokens: int):
    """The O-Voxel of one 1024_cascade run of --folder's pipeline, else the synthetic blob of ``tokens``."""
    if a.folder:
        import trellis2_pipeline_gpu as t2

        folder = t2.ensure_folder(a.folder, tiny=False)
        pipe = t2.load(folder, device, t2.parse_config("default/on"))
        mesh = pipe.run(t2.object_image(1024), seed=a.seed, pipeline_type="1024_cascade", preprocess_image=False)[0]
        del pipe
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return mesh, f"pipeline {folder} 1024_cascade seed {a.seed}"
    sys.path.insert(0, str(HERE.parent))     # tests/helpers of this checkout: the same blob whatever --repo
    from tests.helpers.ovoxel_blobs import random_blob

    return random_blob(tokens, seed=a.seed).to(device), f"random_blob({tokens}, seed={a.seed})"


def writer(name: str):
    """The first layout's writer (tests/helpers of this checkout) or the measured code's."""
    if name != "first":
        return save_ovoxel_result
    sys.path.insert(0, str(HERE.parent))
    from tests.helpers.ovoxel_first_layout import write_first_layout

    return write_first_layout


def bits(t: torch.Tensor) -> torch.Tensor:
    """Integers of a tensor's values (a float's bit pattern: -0.0 is not 0.0), on the CPU."""
    t = t.detach().cpu().contiguous()
    return t.view(torch.int32) if t.dtype == torch.float32 else t.long()


def file_row(mesh, device: torch.device, folder: str, name: str) -> dict:
    """Write and read ``mesh``'s result.npz once: seconds, bytes, and whether it came back bit for bit."""
    path = os.path.join(folder, f"{name}.npz")
    sync(device)
    t0 = time.perf_counter()
    writer(name)(path, mesh, {"made_by": "benchmarks/trellis2_result_file.py"})
    write = time.perf_counter() - t0
    t0 = time.perf_counter()
    back = load_ovoxel_result(path, device)
    sync(device)
    read = time.perf_counter() - t0
    same = all(torch.equal(bits(getattr(back, k)), bits(getattr(mesh, k))) for k in ("vertices", "faces", "coords",
                                                                               "attrs"))
    return {"bytes": os.path.getsize(path), "MB": round(os.path.getsize(path) / 1e6, 1), "write_s": round(write, 2),
            "read_s": round(read, 2), "same_arrays": same}


def export_again(mesh, device: torch.device, a, folder: str, name: str, reference: bytes | None) -> dict:
    """Export again: read ``mesh``'s result.npz and export it; seconds of each and whether the GLB is the one of
    ``mesh`` itself (``reference``)."""
    path = os.path.join(folder, f"{name}-export.npz")
    writer(name)(path, mesh)
    sync(device)
    t0 = time.perf_counter()
    back = load_ovoxel_result(path, device)
    sync(device)
    read = time.perf_counter() - t0
    glb = os.path.join(folder, f"{name}-again.glb")
    ovoxel_to_glb(back, glb, target_faces=a.faces, texture_size=a.texture)
    sync(device)
    total = time.perf_counter() - t0
    data = Path(glb).read_bytes()
    return {"read_s": round(read, 2), "export_again_s": round(total, 2), "glb_bytes": len(data),
            "same_glb": None if reference is None else data == reference}


def main() -> int:
    a = args or parse()
    device = torch.device(a.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    commit = a.commit
    if commit is None:
        from provenance import source_commit

        commit = source_commit(REPO)
    mesh, made = make_ovoxel(a, device, a.tokens)
    small = make_ovoxel(a, device, a.export_tokens)[0] if a.export_tokens else mesh
    wanted = a.variants.split(",")
    variants = {name: (mesh, small) for name in ("first", "exact") if name in wanted}
    if light_ovoxel is not None and "light" in wanted:
        variants["light"] = (light_ovoxel(mesh), light_ovoxel(small))
    info = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else
            f"CPU, {os.cpu_count()} cores ({platform.processor() or platform.machine()})", "commit": commit,
            "repo": str(REPO), "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
            "ovoxel": {"made_by": made, "voxels": int(mesh.coords.shape[0]), "faces": int(mesh.faces.shape[0]),
                       "res": mesh.res},
            "export_ovoxel": {"voxels": int(small.coords.shape[0]), "faces": int(small.faces.shape[0])},
            "target_faces": a.faces, "texture_size": a.texture, "runs": []}
    out = Path(a.out)
    print(json.dumps({k: v for k, v in info.items() if k != "runs"}), flush=True)

    def save(row: dict) -> None:
        info["runs"].append(row)
        print(json.dumps(row), flush=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(info, indent=1))
        os.replace(tmp, out)

    with tempfile.TemporaryDirectory() as folder:
        for run in range(a.runs):
            for name, (m, _) in variants.items():
                save({"run": run, "variant": name, **file_row(m, device, folder, name)})
        references = {}
        # the GLB of each O-Voxel itself (also a first, untimed export)
        for name, (_, m) in variants.items() if a.export_runs else ():
            if name == "first" and "exact" in variants:
                continue                            # the same O-Voxel as exact's
            glb = os.path.join(folder, f"{name}.glb")
            ovoxel_to_glb(m, glb, target_faces=a.faces, texture_size=a.texture)
            references[name] = Path(glb).read_bytes()
        if "first" in variants and "exact" in variants:
            references["first"] = references["exact"]
        for run in range(a.export_runs):
            for name, (_, s) in variants.items():
                save({"run": run, "variant": name, "export": export_again(s, device, a, folder, name,
                                                                          references[name])})
    print(f"wrote {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
