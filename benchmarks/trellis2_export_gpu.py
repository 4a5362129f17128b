"""TRELLIS.2's PBR export (``trellis.export.pbr.ovoxel_to_glb``) of the random-weight blob, stage by stage: seconds
and peak allocated / reserved GPU memory of each stage the export reports (cluster, fill_holes, simplify /
final_simplify where the quadric trim runs, orient, uv_unwrap, bake, project, normal_map, assemble), plus the
export's own record (the reduction's steps and face counts).

    python benchmarks/trellis2_export_gpu.py [--result /tmp/trellis2_blob.npz] [--folder /tmp/trellis2_full]
        [--tokens 19788] [--faces 500000] [--texture 2048] [--runs 2] [--warmup 1] [--out trellis2_export.json]
    python benchmarks/trellis2_export_gpu.py --device cpu --tokens 2000 --faces 48000 --texture 1024   # a CPU size

The O-Voxel comes from ``--result`` (a kept TRELLIS.2 result, ``trellis.export.save_ovoxel_result``) when that file
exists; else it is made and saved there, so that the three columns (separate processes) export the same object:
with ``--folder`` (a full-size random-weight pipeline folder, benchmarks/trellis2_pipeline_gpu.py) by one
``1024_cascade`` run of the pipeline (``--seed``), else synthetically (tests/helpers/ovoxel_blobs.random_blob: the
same structure, ``--tokens`` latent voxels as 16 x 16 sheets; 19 788 gives the measured blob's 5.07 M fine voxels).
The column is the process's: fast paths as TRELLIS_FAST_PATHS says, Triton importable or not (gpu_session.sh step
trellis2-export runs all three). ``--warmup`` untimed runs first (kernel compiles), then ``--runs`` timed ones; the
JSON is rewritten after every run.
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

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from trellis import fastpaths  # noqa: E402
from trellis.export import load_ovoxel_result, save_ovoxel_result  # noqa: E402
from trellis.export.pbr import ovoxel_to_glb  # noqa: E402

GiB = 2 ** 30


def make_ovoxel(args, device: torch.device):
    """The O-Voxel of ``--result`` (made and saved there first when missing) on ``device``, and where it came from."""
    path = args.result
    if os.path.isfile(path):
        return load_ovoxel_result(path, device), f"the kept result {path}"
    t0 = time.perf_counter()
    if args.folder:
        import trellis2_pipeline_gpu as t2

        folder = t2.ensure_folder(args.folder, tiny=False)
        pipe = t2.load(folder, device, t2.parse_config("default/on"))
        mesh = pipe.run(t2.object_image(1024), seed=args.seed, pipeline_type="1024_cascade",
                        preprocess_image=False)[0]
        made = f"pipeline {folder} 1024_cascade seed {args.seed}"
        del pipe
    else:
        from tests.helpers.ovoxel_blobs import random_blob

        mesh, made = random_blob(args.tokens, seed=args.seed), f"random_blob({args.tokens}, seed={args.seed})"
    save_ovoxel_result(path, mesh, {"made_by": made})
    print(f"made {path} ({made}) in {time.perf_counter() - t0:.0f} s", flush=True)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return mesh.to(device), made


class StageClock:
    """A progress callback that times the export's stages: at each change of stage the device is synchronised, the
    time since the last change and the peak memory since then go to the stage that ended (stages that come back,
    such as "bake" around "project", add up; their peak is the largest)."""

    def __init__(self, device: torch.device):
        self.device, self.stages, self.current = device, {}, None
        self._restart()

    def _restart(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        self.t0 = time.perf_counter()

    def _close(self):
        if self.current is None:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        row = self.stages.setdefault(self.current, {"seconds": 0.0})
        row["seconds"] = round(row["seconds"] + time.perf_counter() - self.t0, 4)
        if self.device.type == "cuda":
            for key, value in (("peak_allocated_GiB", torch.cuda.max_memory_allocated(self.device)),
                               ("peak_reserved_GiB", torch.cuda.max_memory_reserved(self.device))):
                row[key] = round(max(row.get(key, 0.0), value / GiB), 3)

    def __call__(self, stage, done, total):
        if stage != self.current:
            self._close()
            self.current = stage
            self._restart()

    def finish(self) -> dict:
        self._close()
        self.current = None
        return self.stages


def one_export(mesh, args, device: torch.device) -> dict:
    """One ``ovoxel_to_glb`` of ``mesh``: its seconds, per-stage rows, face count and record."""
    path = os.path.join(tempfile.gettempdir(), "trellis2_export_benchmark.glb")
    clock = StageClock(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    row: dict = {}
    try:
        textured = ovoxel_to_glb(mesh, path, target_faces=args.faces, texture_size=args.texture, progress=clock)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        info = textured.info
        row.update(faces=int(len(textured.faces)), target_faces=args.faces,
                   off_target=round(len(textured.faces) / args.faces - 1, 4), bytes=os.path.getsize(path),
                   export_seconds=info.get("seconds"), prepare_seconds=info.get("prepare_seconds"),
                   reduce=info.get("reduce"), uv_method=info.get("uv_method"), uv_groups=info.get("uv_groups"),
                   projection=info.get("projection"))
    except Exception as err:                 # recorded: the other runs still count
        row["error"] = f"{type(err).__name__}: {str(err)[:400]}"
    row["seconds"] = round(time.perf_counter() - t0, 3)
    row["stages"] = clock.finish()
    if device.type == "cuda":
        row["peak_allocated_GiB"] = round(torch.cuda.max_memory_allocated(device) / GiB, 3)
        row["peak_reserved_GiB"] = round(torch.cuda.max_memory_reserved(device) / GiB, 3)
    return row


def column_name(device: torch.device) -> str:
    """Which column this process is: fast paths off, Triton, or Windows without Triton (NVRTC kernels)."""
    if device.type != "cuda":
        return "cpu"
    if not fastpaths.enabled():
        return "fast-paths-off"
    return "triton" if fastpaths.triton_importable() else "windows-no-triton"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--result", default=os.path.join(tempfile.gettempdir(), "trellis2_blob.npz"))
    ap.add_argument("--folder", default=None, help="make the O-Voxel with this full-size random-weight pipeline")
    ap.add_argument("--tokens", type=int, default=19788, help="the synthetic blob's latent voxels (no --folder)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--faces", type=int, default=500_000)
    ap.add_argument("--texture", type=int, default=2048)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default="trellis2_export.json")
    ap.add_argument("--commit", default=None, help="commit id to record (default: provenance.source_commit())")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    commit = args.commit
    if commit is None:
        from provenance import source_commit

        commit = source_commit()
    mesh, made = make_ovoxel(args, device)
    info = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
            "column": column_name(device), "raster_path": fastpaths.path_of("mesh_raster", device),
            "torch": torch.__version__, "python": platform.python_version(), "commit": commit,
            "date": time.strftime("%Y-%m-%d"), "ovoxel": {"made_by": made, "voxels": int(mesh.coords.shape[0]),
                                                          "faces": int(mesh.faces.shape[0]), "res": mesh.res},
            "target_faces": args.faces, "texture_size": args.texture, "warmup": [], "runs": []}
    out = Path(args.out)

    def save():
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(info, indent=1))
        os.replace(tmp, out)

    print(json.dumps({k: v for k, v in info.items() if k not in ("warmup", "runs")}), flush=True)
    for i in range(args.warmup + args.runs):
        kind = "warmup" if i < args.warmup else "runs"
        row = one_export(mesh, args, device)
        info[kind].append(row)
        stages = " | ".join(f"{k} {v['seconds']:.2f}s" + (f" {v['peak_reserved_GiB']:.1f}G" if "peak_reserved_GiB" in v
                                                            else "") for k, v in row["stages"].items())
        print(f"{info['column']} {kind} {row['seconds']:.2f} s, {row.get('faces')} faces "
              f"{row.get('error', '')}\n    {stages}", flush=True)
        save()
    print(f"wrote {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
