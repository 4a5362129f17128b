"""The app's own path on a GPU at full size: `python -m desktop generate` on a random-weight pipeline folder.

    python benchmarks/app_gpu.py [--work DIR] [--preset balanced] [--runs 2] [--object random|bunny|nut]
                                 [--limit-gib 2]

Writes a full-size pipeline folder in the official layout (pipeline.json, ckpts/*.json + *.safetensors,
the published configs of TRELLIS-image-large; random weights; the stage-1 decoder's output bias shifted so
that about 8 % of the 64³ grid is occupied, like a real object, instead of an arbitrary amount) plus a
full-size DINOv2 ViT-L/14-reg4, then runs the command-line generator (the same JobRunner as the browser
UI and the REST API) on an RGBA test image with formats glb, ply, obj, mp4 — one process, `--runs` jobs
(the first includes loading the model and compiling the GPU kernels). Checks every file: the GLB loads
in trimesh with its texture, the mp4 has the frame count, the PLY has the Gaussians. Prints the jobs'
timings.json.

``--object bunny`` (or ``nut``): the typical case beside the random-weight worst case. The job runs exactly
as above (the sampling and both decoders included, so their time counts), but the decoders' Gaussians and
mesh are then replaced by a realistic object of ``benchmarks/realistic_objects.py`` (a scanned / CAD shape
made decoder-like: a 256^3 two-sheet mesh and 500 k surface Gaussians), loaded before the job starts: the
random weights' 6.27 M-face noisy mesh is far from what a trained model decodes, and the export is most of
the job. Stage 1's output is replaced too, by the object's surface voxels at 64^3 (``--structure object``, the
default since 2026-11-23): the random weights' structure is a scatter over ~8 % of the grid whose stage 2 runs
on ~4x the tokens of a surface (4.1 s instead of ~0.5 s on an H100); ``--structure random`` keeps it.

``--limit-gib X``: the job's process is capped at X GiB of GPU memory (``set_memory_limit`` before anything is
allocated, as ``e2e_gpu.py --limits`` does): the whole app job, mp4 included, on a card of that size.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def write_full_pipeline(out: Path) -> None:
    from networks_gpu import KEYS, MANIFESTS
    from trellis.models import from_config
    from trellis.models.dinov2 import DINOV2_VITL14_REG_ARGS
    from trellis.models.image_conditioner import ImageConditioner, save_image_conditioner
    from trellis.tools.tiny_pipeline import calibrate_occupancy, randomise, save_model

    gen = torch.Generator().manual_seed(0)
    (out / "ckpts").mkdir(parents=True, exist_ok=True)
    repo = json.loads((MANIFESTS / "_hf_repo_files.json").read_text())["files"]
    pipeline = json.loads(repo["pipeline.json"]["text"])
    for key in KEYS:
        config = json.loads(json.loads((MANIFESTS / f"{key}.json").read_text())["ckpt_json_text"])
        model = from_config(config)
        randomise(model, gen)
        if key == "sparse_structure_decoder":
            flow = json.loads(json.loads((MANIFESTS / "sparse_structure_flow_model.json").read_text())
                              ["ckpt_json_text"])["args"]
            calibrate_occupancy(model, gen, (config["args"]["latent_channels"], *[flow["resolution"]] * 3))
        stem = pipeline["args"]["models"][key]
        save_model(model, config, str(out / stem))
        del model
    cond = ImageConditioner.from_config(DINOV2_VITL14_REG_ARGS)
    randomise(cond.vit, gen)
    save_image_conditioner(cond, str(out / "ckpts" / "image_cond_dinov2_vitl14_reg"))
    pipeline["args"]["image_cond_model"] = "ckpts/image_cond_dinov2_vitl14_reg"
    (out / "pipeline.json").write_text(json.dumps(pipeline, indent=4))


def test_image(path: Path) -> Path:
    """An RGBA object on a transparent background (no background removal needed)."""
    import numpy as np
    from PIL import Image

    yy, xx = np.mgrid[0:768, 0:768] / 767.0
    r = np.hypot(xx - 0.5, yy - 0.55)
    alpha = (r < 0.33).astype(np.uint8) * 255
    rgb = np.stack([200 * (1 - yy), 120 + 100 * xx, 80 + 150 * (r < 0.2)], -1).clip(0, 255).astype(np.uint8)
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(path)
    return path


def check_outputs(folder: Path) -> dict:
    import imageio.v3 as iio
    import trimesh

    files = {p.name: p.stat().st_size for p in folder.iterdir()}
    glb = trimesh.load(folder / "model.glb", force="mesh")
    tex = glb.visual.material.baseColorTexture
    try:
        frames = len(iio.imread(folder / "preview.mp4", index=None))
    except Exception as e:  # pragma: no cover - report, do not hide
        frames = f"unreadable: {e}"
    with open(folder / "model.ply", "rb") as f:
        head = f.read(2000).decode("latin-1")
    n_gauss = int(head.split("element vertex ")[1].split()[0])
    return {"files": files, "glb_faces": int(len(glb.faces)), "glb_texture": None if tex is None else list(tex.size),
            "mp4_frames": frames, "ply_gaussians": n_gauss,
            "timings": json.loads((folder / "timings.json").read_text())}


# The command-line generator with the pipeline's outputs swapped for a realistic object (``--object``): what runs
# before the hook (REALISTIC_BOOTSTRAP below).
REALISTIC_HEAD = r"""
import importlib.machinery, os, runpy, sys, threading
name = sys.argv.pop(1)
# Lazy, so that the server's start is the app's own: the arrays load in a thread from now on (NumPy), and the
# pipeline class is patched when the app itself first imports it.
arrays = {}
def _load_arrays():
    from realistic_objects import build_arrays
    arrays.update(build_arrays(name))
_loading = threading.Thread(target=_load_arrays, daemon=True)
_loading.start()

def patch_pipeline(cls):
    import numpy as np, torch
    from realistic_objects import make_gaussian
    from trellis.representations.mesh import MeshExtractResult
    _run, _sss = cls.run, cls.sample_sparse_structure
    ready = {}

    def wait_arrays(grid=64):
        # the object's surface voxels on the pipeline's structure grid (64 for TRELLIS; the tiny test pipeline's 16)
        if grid not in ready:
            _loading.join()
            outer_vertices = arrays["vertices"][np.unique(arrays["faces"][arrays["outer"]])]
            ready[grid] = np.unique(np.clip(np.floor((outer_vertices + 0.5) * grid), 0, grid - 1).astype(np.int32),
                                    axis=0)
            print(f"[app_gpu] stage 1's structure replaced by the object's {len(ready[grid])} surface voxels",
                  flush=True)
        return ready[grid]

    def run(self, *args, **kwargs):
        out = _run(self, *args, **kwargs)
        _loading.join()
        device = self.device
        if "gaussian" in out:
            out["gaussian"][0] = make_gaussian({k[3:]: arrays[k] for k in arrays if k.startswith("gs_")}, device)
        if "mesh" in out:
            out["mesh"][0] = MeshExtractResult(torch.as_tensor(arrays["vertices"], dtype=torch.float32, device=device),
                                               torch.as_tensor(arrays["faces"].astype(np.int64), device=device),
                                               res=256)
        return out
    cls.run = run
    if os.environ.get("APP_GPU_STRUCTURE", "object") == "object":
        # Stage 1 runs as always (its time counts) but its random-weight output, a scatter of ~8 % of the 64^3 grid,
        # is replaced by the object's own surface voxels: stage 2's tokens, and so its attention, are then those of
        # a surface, as a trained model's are (the scatter gives ~4x the tokens of a surface with as many voxels).
        def sample_sparse_structure(self, *args, **kwargs):
            coords = _sss(self, *args, **kwargs)
            voxels = wait_arrays(int(getattr(self.models.get("slat_decoder_mesh"), "resolution", 64)))
            n = int(coords[:, 0].max()) + 1
            batch = np.repeat(np.arange(n, dtype=np.int32), len(voxels))[:, None]
            return torch.as_tensor(np.hstack([batch, np.tile(voxels, (n, 1))]), device=coords.device)
        cls.sample_sparse_structure = sample_sparse_structure

"""


def on_import(target: str, then: str) -> str:
    """Python source that, run first in a process, runs the statement ``then`` (``module``: the module) once ``target``
    is imported by whatever imports it first (so that patching it imports nothing early)."""
    return f"""
import importlib.machinery, sys
class _OnImport:
    def find_spec(self, fullname, path=None, target=None):
        if fullname != {target!r}:
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        run_module = spec.loader.exec_module
        def exec_module(module):
            run_module(module)
            {then}
        spec.loader.exec_module = exec_module
        return spec
sys.meta_path.insert(0, _OnImport())
"""


# Runs before the generator in the job's process: the GPU memory cap of ``--limit-gib``, the module settings of the
# measured constants (``SWITCHES``), as JSON {"module": {"NAME": value}}, and the per-machine choices (``TUNED``:
# ``trellis.tuning.TUNING``'s fields), as JSON {"field": value}.
_LIMIT_PRELUDE = r"""
import importlib, json, os
if os.environ.get("APP_GPU_LIMIT_GIB"):
    import torch
    from trellis.pipelines.memory import set_memory_limit
    set_memory_limit(torch.device("cuda"), int(float(os.environ["APP_GPU_LIMIT_GIB"]) * 2 ** 30))
for module, names in json.loads(os.environ.get("APP_GPU_SETTINGS") or "{}").items():
    for name, value in names.items():
        setattr(importlib.import_module(module), name, value)
if os.environ.get("APP_GPU_TUNING"):
    from trellis.tuning import TUNING
    for name, value in json.loads(os.environ["APP_GPU_TUNING"]).items():
        setattr(TUNING, name, value)
"""
# The command line's measured constants: option -> (module, setting, the setting's value for the option's).
SWITCHES = {
    "preview_views": ("trellis.renderers.gaussian_views", "MAX_VIEWS", int),
    "preview_yields": ("trellis.export.gate", "YIELD_STAGES",
                       lambda v: [s for s in v.split(",") if s and s != "none"]),
    "piece_min_faces": ("trellis.export.cleanup.pieces", "PIECE_MIN_FACES", int),
    "child_heap": ("trellis.export.processes", "CHILD_HEAP",
                   lambda v: dict(importlib.import_module("trellis.export.processes").CHILD_HEAP) if v == "on" else {}),
    "video_preset": ("trellis.utils.render_utils", "VIDEO_PRESET", str),
}
# The command line's per-machine choices: option -> (``trellis.tuning.Tuning`` field, its value for the option's).
TUNED = {
    "uv_in_child": ("uv_in_child", lambda v: v == "on"),
}
DESKTOP = r"""
import runpy, sys
sys.argv[0] = "desktop"
runpy.run_module("desktop", run_name="__main__", alter_sys=True)
"""
# The realistic object's patch: its arrays, and the patch applied when the pipeline is first imported; then the app.
REALISTIC_PATCH = REALISTIC_HEAD + on_import("trellis.pipelines.trellis_image_to_3d",
                                             "patch_pipeline(module.TrellisImageTo3DPipeline)")
REALISTIC_BOOTSTRAP = REALISTIC_PATCH + DESKTOP


def job_command(obj: str, image: Path, out: Path, model: Path, runs: int, preset: str, extra=(),
                formats: str = "glb,ply,obj,mp4") -> list:
    """The job process's command: the command-line generator (`runs` jobs of `image` into `out`, ``formats``: GLB +
    PLY + OBJ + MP4 unless told, seed 3) with ``obj``'s realistic object swapped in (or the random weights' own outputs), `extra` flags
    added."""
    # The memory cap and the switches come after the realistic object's import hook (the cap, and a setting of a module
    # under trellis.pipelines, import the pipeline: it must be patched then) and after its arrays have loaded (their
    # thread importing beside the prelude's imports failed).
    head = [sys.executable, "-c", _LIMIT_PRELUDE + DESKTOP] if obj == "random" else \
        [sys.executable, "-c", REALISTIC_PATCH + "\n_loading.join()\n" + _LIMIT_PRELUDE + DESKTOP, obj]
    return [*head, "generate", *[str(image)] * runs, "-o", str(out), "--model", str(model), "--device", "cuda",
            "--preset", preset, "--formats", formats, "--seed", "3", *extra]


def job_env(structure: str = "object", limit_gib: float | None = None, switches: dict | None = None) -> dict:
    """The job process's environment: the repository and benchmarks/ importable, stage 1's structure (``--structure``),
    the memory cap (``--limit-gib``), the module settings and tuning fields of ``switches`` ({option: value} of
    ``SWITCHES`` and ``TUNED``; unset where the value is None or empty)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), str(ROOT / "benchmarks"), *filter(None, [os.environ.get("PYTHONPATH")])])}
    env["APP_GPU_STRUCTURE"] = structure
    if limit_gib:
        env["APP_GPU_LIMIT_GIB"] = str(limit_gib)
    settings: dict = {}
    tuning: dict = {}
    for option, value in (switches or {}).items():
        if value and option in TUNED:
            field, convert = TUNED[option]
            tuning[field] = convert(value)
        elif value:
            module, name, convert = SWITCHES[option]
            settings.setdefault(module, {})[name] = convert(value)
    if settings:
        env["APP_GPU_SETTINGS"] = json.dumps(settings)
    if tuning:
        env["APP_GPU_TUNING"] = json.dumps(tuning)
    return env


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="/tmp/app_gpu")
    ap.add_argument("--preset", default="balanced")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--object", default="random", choices=("random", "bunny", "nut"))
    ap.add_argument("--limit-gib", type=float, default=None, help="cap the job's GPU memory (GiB)")
    ap.add_argument("--out", default=None, help="also write the jobs' summary (seconds per part) to this JSON file")
    ap.add_argument("--structure", default="object", choices=("object", "random"),
                    help="with --object: stage 2 runs on the object's surface voxels (default) or on the random "
                         "weights' own scatter (the measurements before 2026-11-23's fifteenth session)")
    ap.add_argument("--preview-views", type=int, default=None,
                    help="the most preview frames rendered per call (trellis.renderers.gaussian_views.MAX_VIEWS; "
                         "1: one frame at a time, as before the batched preview)")
    ap.add_argument("--uv-in-child", choices=("on", "off"), default=None,
                    help="our chart layout in a child process (on, the default on a GPU) or in a thread of the job's "
                         "process (off: trellis.tuning.Tuning.uv_in_child)")
    ap.add_argument("--preview-yields", default=None,
                    help="the bake's stages the preview beside it waits through, comma-separated, or none "
                         "(trellis.export.gate.YIELD_STAGES; default: visibility)")
    ap.add_argument("--child-heap", choices=("on", "off"), default=None,
                    help="the chart layout's child keeps its freed heap (on, the default) or uses glibc's own "
                         "settings (off: trellis.export.processes.CHILD_HEAP)")
    ap.add_argument("--video-preset", default=None,
                    help="the preview encoder's x264 preset (trellis.utils.render_utils.VIDEO_PRESET; default medium)")
    ap.add_argument("--formats", default="glb,ply,obj,mp4",
                    help="the job's files (default glb,ply,obj,mp4; without mp4: what the preview beside the bake costs)")
    ap.add_argument("--piece-min-faces", type=int, default=None,
                    help="the early decimation's smallest piece (trellis.export.cleanup.pieces.PIECE_MIN_FACES, "
                         "default 80 000: 8 pieces for the nut's 1.1 M faces; 60 000: 16)")
    args = ap.parse_args()
    work = Path(args.work)
    model = work / "TRELLIS-image-large-random"
    if not (model / "pipeline.json").exists():
        t0 = time.perf_counter()
        write_full_pipeline(model)
        print(f"wrote the full-size random pipeline in {time.perf_counter() - t0:.1f} s", flush=True)
    image = test_image(work / "object.png")
    out = work / (f"outputs-{args.object}" + (f"-{args.limit_gib:g}GiB" if args.limit_gib else ""))
    cmd = job_command(args.object, image, out, model, args.runs, args.preset, formats=args.formats)
    from trellis import fastpaths

    print("renderers:", fastpaths.describe("cuda"), flush=True)   # TRELLIS_FAST_PATHS=off reaches the job too
    t0 = time.perf_counter()
    env = job_env(args.structure, args.limit_gib, {option: getattr(args, option) for option in {**SWITCHES, **TUNED}})
    if args.limit_gib:
        print(f"GPU memory cap: {args.limit_gib:g} GiB", flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n", flush=True)
    print(f"exit {proc.returncode}, {wall:.1f} s for {args.runs} jobs (incl. start-up and model load)", flush=True)
    folders = sorted(p for p in out.iterdir() if p.is_dir())
    summary = []
    for f in folders[-args.runs:]:
        if (f / "error.json").exists():
            print(f.name, "FAILED", (f / "error.json").read_text()[:1500], flush=True)
        else:
            checked = check_outputs(f)
            print(f.name, json.dumps(checked, indent=None), flush=True)
            summary.append(job_summary(checked["timings"]))
    for i, row in enumerate(summary, start=1):
        print(f"[app_gpu] job {i}: " + json.dumps(row), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"object": args.object, "preset": args.preset, "wall": round(wall, 2),
                                              "preview_views": args.preview_views, "uv_in_child": args.uv_in_child,
                                              "preview_yields": args.preview_yields,
                                              "piece_min_faces": args.piece_min_faces,
                                              "child_heap": args.child_heap, "video_preset": args.video_preset,
                                              "fast_paths": fastpaths.describe("cuda"), "jobs": summary}, indent=1))
    return proc.returncode


def job_summary(timings: dict) -> dict:
    """What the user waits for, from a job's timings.json: the whole job, sampling + decoding, the files' wall time
    (with the preview made beside the bake where `overlapped`) and each file's own seconds."""
    parts = timings.get("export", {})
    row = {"total": timings.get("total"), "pipeline": timings.get("pipeline", {}).get("seconds"),
           "files_wall": parts.get("files_wall"), "overlapped": parts.get("overlapped")}
    stages_run = timings.get("pipeline", {}).get("stages") or []           # the sampling and decoding's own
    if stages_run:
        row["pipeline_stages"] = {s["stage"]: round(s["seconds"], 3) for s in stages_run if "stage" in s}
    row.update({k: parts[k] for k in ("bake_start", "bake", "mp4", "video", "encode", "preview_held", "glb", "obj", "ply",
                                      "report", "result")
                if k in parts})
    if None not in (row["total"], row["pipeline"], row["files_wall"]):   # the job's own steps around the two
        row["outside"] = round(row["total"] - row["pipeline"] - row["files_wall"], 3)
    for key in ("preprocess", "ready", "folder", "preprocessed_png"):   # before the sampling (the PNGs beside it)
        if key in timings:
            row[key] = round(timings[key], 4)
    stages = timings.get("export_bake_stages") or {}       # the bake's critical path: clean-up steps, UV layout
    row.update({k: v for k, v in ((stages.get("cleanup") or {}).get("seconds") or {}).items()
                if k in ("simplify", "visibility", "remove_invisible")})
    if "uv_unwrap" in (stages.get("seconds") or {}):
        row["uv_unwrap"] = stages["seconds"]["uv_unwrap"]
    timeline = (stages.get("cleanup") or {}).get("decimation_timeline")
    if timeline:                                          # (seconds from the children's start, event)
        row["decimation_timeline"] = [[round(float(t), 3), e] for t, e in timeline]
    if stages.get("uv_phases"):                           # the layout's own steps, and its handover to the child
        row["uv_phases"] = stages["uv_phases"]
    if stages.get("uv_cpu"):                              # the layout thread's time on a core and in the run queue
        row["uv_cpu"] = stages["uv_cpu"]
    if stages.get("uv_packings"):                         # layouts packed (one, plus one per overlap round)
        row["uv_packings"] = stages["uv_packings"]
    for key in ("views_rendered_during_simplify", "views_rendered_during_uv"):   # where the bake's views were made
        if key in stages:
            row[key.replace("views_rendered_", "views_")] = stages[key]
    if "prepared_during_uv" in (stages.get("observations") or {}):
        row["views_prepared_during_uv"] = stages["observations"]["prepared_during_uv"]
    if stages.get("prepare_seconds"):                     # the bake's mesh preparation's own steps
        row["prepare_laps"] = stages["prepare_seconds"]
    if stages.get("seconds"):                             # every lap of the bake's clock, in order
        row["bake_laps"] = stages["seconds"]
    memory = timings.get("memory") or {}
    for key in ("peak_allocated_bytes", "peak_reserved_bytes"):          # the whole job's (desktop.jobs.budget)
        if memory.get(key) is not None:
            row[key.replace("_bytes", "_gib")] = memory[key] / 2 ** 30
    if memory.get("vram_budget_gib") is not None:
        row["vram_budget_gib"] = memory["vram_budget_gib"]
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}


if __name__ == "__main__":
    raise SystemExit(main())
