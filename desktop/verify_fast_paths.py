"""`python -m desktop verify-fast-paths IMAGE... [--model DIR] [--device cpu|cuda|cuda:N] [--seed N] [--steps N]
[--pipeline-type T] [--json OUT]`: whether 8-bit attention changes YOUR assets. Each image is made twice with the same
model, seed and settings, exact attention and then 8-bit attention (trellis.modules.attention.functional's
``attention_precision("8bit")``), both without kept CUDA graphs or compiled blocks (a kept graph would replay the
exact kernels); the two results are compared (desktop/fast_path_measures.py): the structure (occupancy IoU, flipped
voxels), the mesh (Chamfer distance, F-score) and the look (PSNR, SSIM of a few preview frames). One table and one
verdict per image on stdout, progress on stderr, everything as JSON with --json.

Exit status: 0 every image was compared (whatever the verdicts), 1 the model could not be loaded or a run failed,
2 usage error (an image that is missing or not an image, a model folder that is not one, a bad option).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

from . import fast_path_measures as measures
from .options import default_model, device_arg

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
# The previews compared: (frames, side in pixels) on a CPU and on a GPU.
PREVIEW = {"cpu": (4, 128), "cuda": (8, 512)}
MAX_TEXTURE = 1024           # a TRELLIS.2 bake's texture side: twice the preview's, so texels do not blur it


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m desktop verify-fast-paths",
        usage="python -m desktop verify-fast-paths IMAGE... [--model DIR] [--device cpu|cuda|cuda:N] [--seed N] "
              "[--steps N] [--pipeline-type T] [--json OUT]",
        description="Make each image twice, with exact and with 8-bit attention (same model, seed and settings), "
                    "and say how far apart the two assets are: structure (voxel IoU), mesh (Chamfer, F-score) and "
                    "look (preview PSNR, SSIM), with a verdict per image.",
        epilog=f"Verdict: 'same' when {needs('same')}; 'close' when {needs('close')}; else 'differs' "
               "(docs/benchmarks/attention_8bit.md). Exit status: 0 every image compared, 1 a run failed, 2 usage "
               "error.")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, WebP, ...)")
    p.add_argument("--model", default=default_model(), metavar="DIR",
                   help="pipeline folder (TRELLIS v1 or TRELLIS.2) or Hugging Face repo (default: %(default)s)")
    p.add_argument("--device", type=device_arg, default=None, metavar="cpu|cuda[:N]",
                   help="where both runs go (default: cuda when there is a GPU, else cpu)")
    p.add_argument("--seed", type=int, default=42, metavar="N", help="the seed of both runs (default %(default)s)")
    p.add_argument("--steps", type=positive, default=None, metavar="N",
                   help="sampling steps of every flow (default: the model's own)")
    p.add_argument("--pipeline-type", default=None, metavar="T",
                   help=f"the pipeline type of a model that has several ({pipeline_types_words()}; default: the "
                        "model's)")
    p.add_argument("--frames", type=positive, default=None, metavar="N",
                   help="preview frames compared (default: 4 on a CPU, 8 on a GPU)")
    p.add_argument("--resolution", type=positive, default=None, metavar="PX",
                   help="side of the preview frames (default: 128 on a CPU, 512 on a GPU)")
    p.add_argument("--json", default=None, metavar="OUT", help="also write every measure to this JSON file")
    return p


def needs(row: str) -> str:
    """"IoU >= 0.95, F-score >= 0.95, ...": what a verdict needs, from the thresholds themselves."""
    names = {"iou": "IoU", "fscore": "F-score", "psnr_db": "PSNR", "ssim": "SSIM"}
    units = {"psnr_db": " dB"}
    return ", ".join(f"{names[k]} >= {v:g}{units.get(k, '')}" for k, v in measures.THRESHOLDS[row].items())


def pipeline_types_words() -> str:
    from .families import FAMILIES

    return "; ".join(f"{f.words}: {', '.join(f.pipeline_types)}" for f in FAMILIES.values() if f.pipeline_types)


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give at least 1")
    return value


# ------------------------------------------------------------------------------------------- checks

def check_args(parser, args):
    """Every usage error before the model loads (exits 2); returns the model's Family."""
    from .families import family_of_model
    from .jobs.inputs import check_image
    from .jobs.job import InputError

    for path in args.images:
        if not os.path.exists(path):
            parser.error(f"{path}: no such file")
        if not os.path.isfile(path):
            parser.error(f"{path} is not a file; give an image file")
        try:
            check_image(path)
        except InputError as err:
            parser.error(f"{path}: {err}")
    problem = model_folder_problem(args.model)
    if problem:
        parser.error(f"--model: {problem}")
    family = family_of_model(args.model)
    if args.pipeline_type is not None:
        if not family.pipeline_types:
            parser.error(f"--pipeline-type: {family.words} has one path (pipeline types are another family's)")
        if args.pipeline_type not in family.pipeline_types:
            parser.error(f"--pipeline-type {args.pipeline_type!r}: {family.words} has "
                         f"{', '.join(family.pipeline_types)}")
    if family.pipeline_class not in RUNS:
        parser.error(f"--model: verify-fast-paths does not know how to compare {family.words} results yet")
    if args.json is not None:
        folder = os.path.dirname(os.path.abspath(args.json))
        if os.path.isdir(args.json) or not os.path.isdir(folder) or not os.access(folder, os.W_OK):
            parser.error(f"--json: cannot write {args.json} (give a file in a folder that exists and is writable)")
    return family


def model_folder_problem(model: str):
    """None when `model` is a pipeline folder, or names a hub repo (owner/name) that is not a local path; else why
    not."""
    if os.path.isdir(model):
        return None if os.path.isfile(os.path.join(model, "pipeline.json")) else \
            f"{model} is not a model folder (it has no pipeline.json)"
    if os.path.exists(model):
        return f"{model} is a file, not a model folder"
    parts = model.replace("\\", "/").split("/")
    if len(parts) == 2 and all(parts) and not model.startswith((".", "~")):
        return None                                  # a hub repo id: the loader finds it in the cache or fetches it
    return f"{model}: no such folder"


# ------------------------------------------------------------------------------------------- one run per family

class Made:
    """What one run made, as the comparison needs it: voxels (int [N, 3] on a res^3 grid), the mesh (numpy), the
    preview frames (uint8 H x W x 3) and the attention kernels it ran ({kernel: calls})."""

    def __init__(self, coords, res, vertices, faces, frames, kernels, seconds):
        self.coords, self.res, self.vertices, self.faces = coords, res, vertices, faces
        self.frames, self.kernels, self.seconds = frames, kernels, seconds


def sampler(steps):
    return {} if steps is None else {"steps": steps}


def run_v1(pipeline, image, args, preview):
    """TRELLIS v1: the structure is stage 1's voxels (the sparse structure the SLat flow runs on, 64^3), the mesh the
    mesh decoder's, the look the Gaussians' turntable (the app's preview)."""
    from trellis.utils.render_utils import render_video

    structures = []
    own = pipeline.sample_sparse_structure

    def keep_structure(*a, **kw):             # the pipeline returns no structure: keep what stage 1 hands on
        coords = own(*a, **kw)
        structures.append(coords.detach().cpu())
        return coords
    pipeline.sample_sparse_structure = keep_structure
    try:
        out = pipeline.run(image, seed=args.seed, formats=["gaussian", "mesh"], preprocess_image=False,
                           sparse_structure_sampler_params=sampler(args.steps),
                           slat_sampler_params=sampler(args.steps))
    finally:
        del pipeline.sample_sparse_structure      # the class's own method again
    coords = structures[-1][:, 1:].numpy()        # [batch, x, y, z] -> [x, y, z]
    res = pipeline.models["slat_flow_model"].resolution          # stage 1 decodes onto the SLat flow's grid
    mesh = out["mesh"][0]
    frames, side, _ = preview
    shots = render_video(out["gaussian"][0], resolution=side, num_frames=frames, verbose=False,
                         only=("color",))["color"]
    return coords, res, mesh.vertices, mesh.faces, shots


def run_trellis2(pipeline, image, args, preview):
    """TRELLIS.2: the structure is the decoded O-Voxel's voxels (MeshWithVoxel.coords on its res^3 grid), the mesh
    the decoder's, the look the lit PBR turntable of its bake (the app's preview)."""
    from trellis.export import PbrOptions, bake_ovoxel, iter_pbr_video

    meshes = pipeline.run(image, seed=args.seed, pipeline_type=args.pipeline_type, preprocess_image=False,
                          sparse_structure_sampler_params=sampler(args.steps),
                          shape_slat_sampler_params=sampler(args.steps), tex_slat_sampler_params=sampler(args.steps))
    ovoxel = meshes[0]
    frames, side, texture = preview
    shots = []
    if ovoxel.success:
        textured = bake_ovoxel(ovoxel, PbrOptions(texture_size=texture, normal_map=False))
        shots = list(iter_pbr_video(textured, resolution=side, num_frames=frames, device=args.device))
    return ovoxel.coords.cpu().numpy(), ovoxel.res, ovoxel.vertices, ovoxel.faces, shots


# each library pipeline class's run (its outputs differ): family.pipeline_class -> (run, what its structure is)
RUNS = {
    "TrellisImageTo3DPipeline": (run_v1, "stage 1's sparse structure (the voxels the SLat flow runs on)"),
    "Trellis2ImageTo3DPipeline": (run_trellis2, "the decoded O-Voxel's voxels (MeshWithVoxel.coords)"),
}


def made(run, pipeline, image, args, preview) -> Made:
    """One run of `image` (in whatever attention precision holds now) and what the comparison needs of it."""
    t = time.perf_counter()
    coords, res, vertices, faces, frames = run(pipeline, image, args, preview)
    from trellis.modules.attention.kernel_log import calls_by_kernel

    kernels = calls_by_kernel(getattr(pipeline, "last_stats", None))
    return Made(coords, int(res), as_numpy(vertices), as_numpy(faces), [as_numpy(f) for f in frames], kernels,
                time.perf_counter() - t)


def as_numpy(x):
    return x.detach().cpu().numpy() if hasattr(x, "detach") else x


def compare(exact: Made, fast: Made) -> dict:
    """The measures of one image (fast_path_measures), the two runs' voxel grids brought to the coarser one."""
    grid = min(exact.res, fast.res)
    structure = measures.voxel_agreement(measures.coarsened(exact.coords, exact.res, grid),
                                         measures.coarsened(fast.coords, fast.res, grid))
    structure["grid"] = grid
    mesh = measures.mesh_agreement(exact.vertices, exact.faces, fast.vertices, fast.faces)
    if exact.frames and fast.frames:
        look = measures.frames_agreement(exact.frames, fast.frames)
    else:                                              # a run made no surface: nothing to render, nothing alike
        same = not exact.frames and not fast.frames
        look = {"psnr_db": None if same else 0.0, "worst_frame_psnr_db": None, "ssim": 1.0 if same else 0.0,
                "worst_frame_ssim": None, "frames": 0, "identical": same}
    return {"structure": structure, "mesh": mesh, "look": look}


# ------------------------------------------------------------------------------------------- the command

def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)                      # exits with 2 on a usage error
    family = check_args(parser, args)
    run, structure_words = RUNS[family.pipeline_class]

    import torch

    from trellis.modules.attention.functional import attention_precision

    from .jobs.inputs import prepare_image
    from .jobs.job import InputError, ModelLoadError
    from .jobs.models import load_image_pipeline

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    kind = torch.device(args.device).type
    if kind == "cuda" and not torch.cuda.is_available():
        parser.error("--device: there is no CUDA GPU here; use --device cpu")
    if kind == "cuda" and (torch.device(args.device).index or 0) >= torch.cuda.device_count():
        parser.error(f"--device {args.device}: this computer has {torch.cuda.device_count()} GPU(s), "
                     f"cuda:0..cuda:{torch.cuda.device_count() - 1}")
    frames, side = PREVIEW[kind]
    side = args.resolution or side
    preview = (args.frames or frames, side, max(16, min(MAX_TEXTURE, 2 * side)))
    problem = family.load_problem(args.model) if os.path.isdir(args.model) else None
    if problem:                                        # TRELLIS.2 without DINOv3 or with files missing: what to do
        say(f"error: {problem}")
        return EXIT_FAILED
    say(f"loading {family.words} from {args.model} on {args.device} ...")
    try:
        pipeline = load_image_pipeline(args.model, args.device)
    except ModelLoadError as err:
        say(f"error: {err}")
        return EXIT_FAILED
    # a kept CUDA graph or a compiled block would replay or fuse the exact kernels: both runs go eagerly
    policy = pipeline.set_memory_policy(cuda_graphs=False, compile=False)
    if family.pipeline_types and args.pipeline_type is None:
        args.pipeline_type = getattr(pipeline, "default_pipeline_type", None)
    report = {"model": args.model, "family": family.name, "family_words": family.words, "device": args.device,
              "seed": args.seed, "steps": args.steps, "pipeline_type": args.pipeline_type,
              "preview": {"frames": preview[0], "resolution": preview[1], "texture": preview[2]},
              "structure": structure_words, "memory_policy": dataclasses.asdict(policy),
              "thresholds": measures.THRESHOLDS, "fscore_threshold_share": measures.FSCORE_SHARE, "images": []}
    for path in args.images:
        name = os.path.basename(path) or path
        try:
            image = prepare_image(path, remove_background=True)
        except InputError as err:                      # background removal found no object
            say(f"{name}: FAILED: {err}")
            report["images"].append({"image": path, "error": str(err)})
            continue
        try:
            say(f"{name}: exact attention ...")
            exact = made(run, pipeline, image, args, preview)
            say(f"{name}: 8-bit attention ...")
            with attention_precision("8bit"):
                fast = made(run, pipeline, image, args, preview)
        except (ValueError, RuntimeError, MemoryError) as err:   # this image only: the others are still compared
            words = run_failure(err)
            say(f"{name}: FAILED: {words}")
            report["images"].append({"image": path, "error": words})
            continue
        found = compare(exact, fast)
        word, short = measures.verdict(found["structure"], found["mesh"], found["look"])
        entry = {"image": path, **found, "verdict": word, "verdict_words": measures.VERDICT_WORDS[word],
                 "short_of_same": short, "kernels": {"exact": exact.kernels, "8bit": fast.kernels},
                 "seconds": {"exact": round(exact.seconds, 3), "8bit": round(fast.seconds, 3)}}
        report["images"].append(entry)
        print(table(name, entry, report, structure_words), flush=True)
    if args.json is not None:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
        say(f"measures written to {args.json}")
    return EXIT_FAILED if any("error" in item for item in report["images"]) else EXIT_OK


def run_failure(err: BaseException) -> str:
    """What went wrong in a run, with what to try; an error of no known kind is raised on (the entry point's last
    resort reports it)."""
    from trellis.pipelines.base import EmptyStructureError

    from .jobs.failures import is_oom

    if is_oom(err):
        return ("out of memory: try a smaller --pipeline-type (512), fewer --frames or a smaller --resolution "
                "(the 8-bit run's PyTorch twin holds each attention call's whole score matrix)")
    if isinstance(err, EmptyStructureError):
        return f"{err} (try another --seed, or an image with a clearer, larger object)"
    raise err


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def table(name: str, entry: dict, report: dict, structure_words: str) -> str:
    """One image's measures, what "same" needs of each, and its verdict, as plain text."""
    same = measures.THRESHOLDS["same"]
    s, m, look = entry["structure"], entry["mesh"], entry["look"]
    kind = f", pipeline type {report['pipeline_type']}" if report["pipeline_type"] else ""
    steps = report["steps"] or "the model's"

    def num(value, pattern="{:.4f}", none="n/a"):
        return none if value is None else pattern.format(value)
    flipped = f"{s['flipped']} ({s['flipped'] / max(1, s['exact_voxels']) * 100:.2f} % of {s['exact_voxels']})"
    rows = [
        ("occupancy IoU", num(s["iou"]), f">= {same['iou']:g}"),
        ("flipped voxels", flipped, ""),
        ("Chamfer distance (share of diagonal)", num(m["chamfer"], "{:.5f}"), ""),
        (f"F-score at {measures.FSCORE_SHARE:.0%} of diagonal", num(m["fscore"]), f">= {same['fscore']:g}"),
        (f"preview PSNR ({look['frames']} frames)", num(look["psnr_db"], "{:.2f} dB", "identical"),
         f">= {same['psnr_db']:g} dB"),
        ("preview SSIM", num(look["ssim"]), f">= {same['ssim']:g}"),
        ("attention kernels", kernels_words(entry["kernels"]), ""),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [f"{name}: {report['family_words']}{kind}, seed {report['seed']}, steps {steps}, {report['device']}",
             f"  structure: {structure_words}, on a {s['grid']}^3 grid",
             f"  {'measure'.ljust(width)}  {'exact vs 8-bit'.ljust(24)}  same asset at"]
    lines += [f"  {label.ljust(width)}  {value.ljust(24)}  {need}".rstrip() for label, value, need in rows]
    why = f" ({'; '.join(entry['short_of_same'])})" if entry["short_of_same"] else ""
    lines.append(f"  verdict: {entry['verdict_words']}{why}")
    return "\n".join(lines)


def kernels_words(kernels: dict) -> str:
    def one(found):
        return ", ".join(f"{k} x{n}" for k, n in sorted(found.items())) or "none noted"
    return f"exact: {one(kernels['exact'])}; 8-bit: {one(kernels['8bit'])}"
