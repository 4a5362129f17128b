"""TRELLIS.2's whole app job on a GPU at full size: image -> PBR GLB (+ preview) through the app's own JobRunner, per
pipeline type and preset, the timed jobs second jobs of one process.

    python benchmarks/trellis2_app_gpu.py [--folder /tmp/trellis2_full] [--types 1024_cascade[,512,1536_cascade]]
        [--presets balanced,low-vram] [--caps 512=6,1024=6,1024_cascade=6,1536_cascade=8] [--formats glb,mp4]
        [--runs 2] [--deadline-s 540] [--out trellis2_app_gpu.json]
    python benchmarks/trellis2_app_gpu.py --tiny        # the script's logic on the tiny folder (CPU is fine)

The folder is `python -m trellis.tools.tiny_pipeline --trellis2 DIR --full-size` (random weights: shapes decide time
and memory; written there when DIR has no pipeline.json, 17 GB, kept for the next call). One JobRunner (the worker
the page, REST API and CLI use) runs, per preset and pipeline type, `--runs` jobs of an RGBA test image (no
background removal), each with a new seed: the first of each pair pays the kernels' compiles and the policy's
moves, the last is the figure. The low-VRAM preset runs under the VRAM budget of `--caps` for its type (the job's
own vram_budget setting: core.device.set_memory_budget while it runs, as the app holds it); the other presets run
without one.

`--formats`: asked for, then cut to what a TRELLIS.2 job accepts (``desktop.families.check`` per format: a preview
video where the app makes one for TRELLIS.2), the JSON says which were asked and which ran.

Per job: its state (or error), wall seconds, and from its timings.json the sampling stages (seconds, peak reserved
GiB each), the files' parts (bake, glb, mp4, ...), the bake's own stages and the job's peak allocated / reserved
memory; the GLB is read back (faces, PBR textures, normal map). The JSON is rewritten after every job, and no job
starts past `--deadline-s`, so a command cut off at its time limit still leaves its results.

`--object bunny|goblet|torus|nut`: every job's decoded shape is replaced by that object's O-Voxel (``pbr_fidelity``'s
perfect decode of the truth shape at 1024^3, built on the GPU once and cached under .cache/, with its true colours),
so the files are made from a realistic surface: random weights decode noisy sheets that fall apart into tens of
thousands of UV charts, which a trained model's surfaces do not. The sampling, the decoders and the dual-grid meshing
still run on the random structure (their time stays in the job); only their mesh is swapped. 1024^3 types only.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import struct
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from app_gpu import job_summary, test_image  # noqa: E402
from trellis2_pipeline_gpu import TYPES, ensure_folder  # noqa: E402

from desktop.jobs import JobRunner  # noqa: E402
from desktop.jobs.job import JobState  # noqa: E402
from desktop.families import FAMILIES, check  # noqa: E402
from desktop.settings import PRESETS, GenerationSettings  # noqa: E402
from trellis import fastpaths  # noqa: E402

GiB = 2 ** 30
# issue 65's caps for the low-VRAM preset's whole job (GiB), per pipeline type
DEFAULT_CAPS = "512=6,1024=6,1024_cascade=6,1536_cascade=8"
# The tiny folder's cheap job: one step per flow, a small texture, a seed whose tiny mesh unwraps into charts.
TINY = {"ss_steps": 1, "slat_steps": 1, "texture_size": 64, "target_faces": 100_000}
TINY_SEED = 1022908287


def accepted_formats(asked: list) -> list:
    """The formats of `asked` a TRELLIS.2 job takes (each tried alone, as the runner checks a submitted job)."""
    kept = []
    for kind in asked:
        try:
            settings, _ = check(FAMILIES["trellis2"], GenerationSettings(formats=(kind,)))
        except ValueError:
            continue
        if kind in settings.formats:
            kept.append(kind)
    return kept


def parse_caps(text: str) -> dict:
    """"TYPE=GIB,..." -> {type: GiB}; ValueError names a bad entry."""
    caps = {}
    for part in filter(None, text.split(",")):
        kind, sep, gib = part.partition("=")
        if not sep or kind not in TYPES:
            raise ValueError(f"--caps entry {part!r}: expected TYPE=GIB with TYPE one of {', '.join(TYPES)}")
        caps[kind] = float(gib)
    return caps


OBJECTS = ("random", "bunny", "goblet", "torus", "nut")


def swap_in_object(name: str, device: str) -> dict:
    """From now on the TRELLIS.2 pipeline's meshes are `name`'s O-Voxel (see the module docstring): ``to_meshes``
    still meshes the decoder's output (its time counts), then hands out a copy of the object, whose attributes
    ``attach_attributes`` keeps. The object's facts."""
    from pbr_fidelity import cached_ovoxel
    from trellis.pipelines import trellis2_image_to_3d as t2
    from trellis.representations.ovoxel import MeshWithVoxel

    obj = cached_ovoxel(name, 1024, device)[0]
    meshed, attach = t2.Trellis2ImageTo3DPipeline.to_meshes, t2.attach_attributes
    swapped: set = set()

    def to_meshes(self, shape_out, tex, res):
        if res != obj.res:
            raise ValueError(f"--object {name}: a {obj.res}^3 object, the job meshes at {res}^3")
        n = len(meshed(self, shape_out, tex, res))
        out = [MeshWithVoxel(obj.vertices.clone(), obj.faces.clone(), obj.coords.clone(), obj.res,
                             obj.attrs.clone()) for _ in range(n)]
        swapped.update(id(m) for m in out)
        return out

    def attach_attributes(meshes, tex):
        if not all(id(m) in swapped for m in meshes):
            attach(meshes, tex)

    t2.Trellis2ImageTo3DPipeline.to_meshes = to_meshes
    t2.attach_attributes = attach_attributes
    return {"object": name, "faces": int(obj.faces.shape[0]), "voxels": int(obj.coords.shape[0]),
            "res": int(obj.res)}


def job_settings(preset: str, kind: str, formats: list, seed: int, cap, tiny: bool) -> GenerationSettings:
    """The job's settings: the preset's values, the pipeline type and formats, the cap as the job's VRAM budget."""
    extra = dict(TINY) if tiny else {}
    if cap is not None:
        extra["vram_budget"] = cap
    return GenerationSettings.from_preset(preset, pipeline_type=kind, formats=tuple(formats), seed=seed,
                                          randomize_seed=False, **extra)


def glb_facts(path: Path) -> dict:
    """What the GLB holds, from its JSON chunk: faces, the material's PBR textures, a normal map, tangents."""
    data = path.read_bytes()
    n = struct.unpack_from("<I", data, 12)[0]
    doc = json.loads(data[20:20 + n])
    prim = doc["meshes"][0]["primitives"][0]
    material = doc["materials"][prim["material"]] if "material" in prim else {}
    pbr = material.get("pbrMetallicRoughness", {})
    return {"bytes": len(data), "faces": doc["accessors"][prim["indices"]]["count"] // 3,
            "base_colour": "baseColorTexture" in pbr, "metallic_roughness": "metallicRoughnessTexture" in pbr,
            "normal_map": "normalTexture" in material, "tangents": "TANGENT" in prim["attributes"],
            "alpha_mode": material.get("alphaMode", "OPAQUE")}


def job_row(job, wall: float) -> dict:
    """One finished job's row (its state, error, seconds per part and stage, peaks, files)."""
    row = {"state": job.state, "wall": round(wall, 3), "warnings": list(job.warnings)}
    if job.state != JobState.DONE:
        row["error"] = (job.error or "")[:800]
        row["detail"] = (job.detail or "")[-1500:] if getattr(job, "detail", None) else None
    timings = job.timings or {}
    row.update(job_summary(timings))
    row["stages"] = [{"stage": s.get("stage"), "seconds": round(s.get("seconds", 0.0), 3),
                      **({"peak_reserved_gib": round(s["peak_reserved_bytes"] / GiB, 2)}
                         if s.get("peak_reserved_bytes") is not None else {})}
                     for s in (timings.get("pipeline") or {}).get("stages") or []]
    row["memory_policy"] = timings.get("memory_policy")
    row["lean"] = timings.get("lean")
    files = {kind: Path(p) for kind, p in job.files.items() if isinstance(p, (str, os.PathLike))}
    row["files"] = {kind: p.stat().st_size for kind, p in files.items() if p.is_file()}
    if job.state == JobState.DONE and "glb" in files:
        row["glb_file"] = glb_facts(files["glb"])
    if job.state == JobState.DONE and "mp4" in files:
        try:
            import imageio_ffmpeg

            row["mp4_frames"] = imageio_ffmpeg.count_frames_and_secs(str(files["mp4"]))[0]
        except Exception as err:            # reported, not hidden: the timings still count
            row["mp4_frames"] = f"unreadable: {type(err).__name__}: {err}"
    return row


def line(name: str, row: dict) -> str:
    stages = " | ".join(f"{s['stage']} {s['seconds']:.2f}s" + (f" {s['peak_reserved_gib']:.1f}G"
                                                             if "peak_reserved_gib" in s else "")
                        for s in row["stages"])
    peak = row.get("peak_reserved_gib")
    head = f"{name}: {row['state']} {row['wall']:.2f} s wall, total {row.get('total')}, pipeline {row.get('pipeline')}"
    head += f", files {row.get('files_wall')}" + (f", peak reserved {peak:.2f} GiB" if peak is not None else "")
    head += f", lean {row['lean']}" if row.get("lean") else ""
    return head + (f" ERROR {row['error']}" if "error" in row else "") + f"\n    {stages}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--folder", default=None, help="the random-weight TRELLIS.2 folder to reuse or write "
                                                   "(default /tmp/trellis2_full; --tiny: a temporary one)")
    ap.add_argument("--tiny", action="store_true", help="the tiny folder on the CPU: checks this script's logic")
    ap.add_argument("--types", default="1024_cascade", help=f"comma-separated, of: {', '.join(TYPES)}")
    ap.add_argument("--presets", default="balanced,low-vram", help=f"comma-separated, of: {', '.join(PRESETS)}")
    ap.add_argument("--caps", default=DEFAULT_CAPS, help="the low-VRAM preset's VRAM budget per type, TYPE=GIB,...")
    ap.add_argument("--formats", default="glb,mp4", help="asked for; cut to what a TRELLIS.2 job accepts")
    ap.add_argument("--runs", type=int, default=2, help="jobs per preset and type (the last is the figure)")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--object", default="random", choices=OBJECTS,
                    help="the shape the files are made from: the random weights' own, or a realistic object's")
    ap.add_argument("--deadline-s", type=float, default=540.0, help="no new job starts after this many seconds")
    ap.add_argument("--work", default=None, help="the jobs' outputs folder (default: a temporary one)")
    ap.add_argument("--out", default="trellis2_app_gpu.json")
    ap.add_argument("--commit", default=None, help="commit id to record (default: provenance.source_commit())")
    args = ap.parse_args(argv)
    started = time.perf_counter()
    types = [t for t in args.types.split(",") if t]
    presets = [p for p in args.presets.split(",") if p]
    if set(types) - set(TYPES) or set(presets) - set(PRESETS) or args.runs < 1:
        ap.error(f"types among {', '.join(TYPES)}, presets among {', '.join(PRESETS)}, --runs at least 1")
    try:
        caps = parse_caps(args.caps)
    except ValueError as err:
        ap.error(str(err))
    asked = [f for f in args.formats.split(",") if f]
    formats = accepted_formats(asked)
    if not formats:
        ap.error(f"a TRELLIS.2 job takes none of --formats {args.formats}")
    device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    if device != "cuda" and not args.tiny:
        print("needs a CUDA GPU (or --tiny)", file=sys.stderr)
        return 2
    commit = args.commit
    if commit is None:
        from provenance import source_commit

        commit = source_commit()
    import tempfile

    work = Path(args.work or tempfile.mkdtemp(prefix="trellis2_app_"))
    info = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "torch": torch.__version__,
            "python": platform.python_version(), "commit": commit, "date": time.strftime("%Y-%m-%d"),
            "tiny": args.tiny, "types": types, "presets": presets, "caps_gib": caps, "runs": args.runs,
            "formats_asked": asked, "formats": formats, "fast_paths": fastpaths.describe(device),
            "object": args.object, "jobs": []}
    print(json.dumps({k: v for k, v in info.items() if k != "jobs"}), flush=True)
    if formats != asked:
        print(f"formats: {','.join(asked)} asked, a TRELLIS.2 job takes {','.join(formats)}", flush=True)
    out = Path(args.out)

    def save():
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(info, indent=1, default=str))
        os.replace(tmp, out)

    folder = ensure_folder(args.folder, args.tiny)
    info["folder"] = folder
    if args.object != "random":
        info["object"] = swap_in_object(args.object, device)
        print(json.dumps(info["object"]), flush=True)
    image = str(test_image(work / "object.png"))
    runner = JobRunner(folder, work / "outputs", device=device)
    seed = TINY_SEED if args.tiny else args.seed
    try:
        for preset in presets:
            for kind in types:
                cap = caps.get(kind) if preset == "low-vram" else None
                for i in range(args.runs):
                    if time.perf_counter() - started > args.deadline_s:
                        info.setdefault("skipped", []).append(f"{preset} {kind} job {i + 1}: deadline reached")
                        continue
                    settings = job_settings(preset, kind, formats, seed, cap, args.tiny)
                    seed += 0 if args.tiny else 1            # a new structure per job, as the app's jobs bring
                    t0 = time.perf_counter()
                    job = runner.submit([image], settings)
                    job.wait()
                    row = {"preset": preset, "pipeline_type": kind, "job": i + 1, "timed": i == args.runs - 1,
                           "cap_gib": cap, **job_row(job, time.perf_counter() - t0)}
                    info["jobs"].append(row)
                    print(line(f"{preset} {kind} job {i + 1}" + (f" (cap {cap:g} GiB)" if cap else ""), row),
                          flush=True)
                    save()
    finally:
        runner.shutdown(cancel=True, wait=True, timeout=120)
    info["total_seconds"] = round(time.perf_counter() - started, 1)
    save()
    failed = [r for r in info["jobs"] if r["state"] != JobState.DONE]
    print(f"wrote {out} ({info['total_seconds']:.0f} s, {len(info['jobs'])} jobs, {len(failed)} not done)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
