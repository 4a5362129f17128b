"""The quad export's re-baked texture against the triangle export's, both against the same ideal: the realistic
objects (benchmarks/realistic_objects.py: bunny, nut; decoder-like mesh and surface Gaussians with a known pattern)
exported twice with the app's balanced preset, once as triangles and once as quads (``topology="quads"``: the same
face target, counted in quads), each GLB rendered at held-out views and its texture compared with the pattern's
truth at each pixel's surface point (``realistic_objects.glb_quality``: PSNR inside the object), with the ceiling of
each one's own mesh and atlas (``ideal_texture``: perfect texels). One row per shape and topology, then the quad
export's PSNR minus the triangle export's (issue 78's goal: within 1 dB) (docs/benchmarks/export.md#quad-remeshing).

    python benchmarks/quad_texture.py [--shapes bunny nut] [--device cuda]
    python benchmarks/quad_texture.py --device cpu --resolution 128 --gaussians 200000     # the CPU's run

On a CPU the bake's views are the library's for a CPU (``options.observation_settings``: 24 at 512²) instead of the
preset's; the remesher runs on the CPU on every machine.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from realistic_objects import glb_quality, ideal_texture, realistic_object


def export_options(topology: str, device: str, target_faces, texture_size):
    """The app's balanced preset as the job runner hands it to the export (desktop.jobs.mesh_files)."""
    from desktop.jobs.mesh_files import export_options as job_options
    from desktop.settings import GenerationSettings

    changes = {"topology": topology}
    if target_faces:
        changes["target_faces"] = int(target_faces)
    if texture_size:
        changes["texture_size"] = int(texture_size)
    options = dataclasses.replace(job_options(GenerationSettings.from_preset("balanced", **changes)), device=device)
    if device == "cpu":         # the library's views for a CPU (options.observation_settings), not a GPU's 1024²
        options = dataclasses.replace(options, nviews=None, render_resolution=None)
    return options


def one_export(gaussian, mesh, options, device: str, resolution: int, views: int, view_res: int, folder: str):
    from trellis.export import bake_textured_mesh

    start = time.perf_counter()
    textured = bake_textured_mesh(gaussian, mesh, options)
    seconds = time.perf_counter() - start
    import trimesh
    glb = trimesh.load(textured.save(os.path.join(folder, f"{options.topology}.glb")))      # the file, read back
    got = glb_quality(glb, device, views=views, resolution=view_res, pattern_res=resolution)
    ideal = glb_quality(glb, device, views=views, resolution=view_res, pattern_res=resolution,
                        texture=ideal_texture(glb, device, resolution))
    quads = textured.info.get("quads") or {}
    return {"faces": int(len(textured.faces)), "quads": quads.get("quads"), "psnr": got["psnr_db"],
            "ssim": got["ssim"], "ideal": ideal["psnr_db"], "seconds": seconds,
            "textured_quads": textured.info.get("textured_quads"), "texture": int(textured.texture.shape[0])}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", nargs="+", default=["bunny", "nut"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--resolution", type=int, default=256, help="the decoder-like mesh's grid")
    p.add_argument("--gaussians", type=int, default=500_000)
    p.add_argument("--target-faces", type=int, default=None, help="both exports' face target (default: the preset's)")
    p.add_argument("--texture-size", type=int, default=None, help="default: the preset's")
    p.add_argument("--views", type=int, default=8, help="held-out views of the quality measure")
    p.add_argument("--view-resolution", type=int, default=512)
    args = p.parse_args(argv)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, device {args.device}, "
          f"{time.strftime('%Y-%m-%d')}, commit {commit}; grid {args.resolution}^3, {args.gaussians} Gaussians, "
          f"balanced preset{' (CPU views)' if args.device == 'cpu' else ''}, "
          f"texture {args.texture_size or 'the preset'}, "
          f"target {args.target_faces or 'the preset'}, quality at {args.views} views of {args.view_resolution}^2")
    print("| shape | topology | file triangles (quads; kept whole in the textured file) | texture | PSNR dB | SSIM | "
          "ideal on its atlas dB | export s |")
    deltas = []
    for name in args.shapes:
        gaussian, mesh = realistic_object(name, args.device, resolution=args.resolution,
                                          num_gaussians=args.gaussians, verbose=False)
        rows = {}
        with tempfile.TemporaryDirectory(prefix="quad_texture_") as folder:
            for topology in ("triangles", "quads"):
                options = export_options(topology, args.device, args.target_faces, args.texture_size)
                r = one_export(gaussian, mesh, options, args.device, args.resolution, args.views,
                               args.view_resolution, folder)
                rows[topology] = r
                quads = f" ({r['quads']}; {r['textured_quads']})" if r["quads"] is not None else ""
                print(f"| {name} | {topology} | {r['faces']}{quads} | {r['texture']}² | {r['psnr']:.2f} | "
                      f"{r['ssim']:.3f} | {r['ideal']:.2f} | {r['seconds']:.1f} |", flush=True)
        delta = rows["quads"]["psnr"] - rows["triangles"]["psnr"]
        deltas.append((name, delta, rows["quads"]["ideal"] - rows["triangles"]["ideal"]))
    for name, delta, ideal_delta in deltas:
        print(f"# {name}: quads - triangles {delta:+.2f} dB (ideal on each atlas {ideal_delta:+.2f} dB): "
              f"{'within' if delta >= -1.0 else 'NOT within'} 1 dB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
