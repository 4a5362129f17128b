"""`python -m desktop retexture MODEL... (--prompt TEXT | --image PHOTO) [-o OUT_DIR] [options]`: a new look for
3-D models you already have. Each model keeps its shape (its 64^3 surface voxels) and gets new surface detail
and colours from the prompt (the text model) or the photo (the image model); stage 1 is skipped. By default the look
is baked onto the model's own mesh (its vertices, faces, UVs, scale and pivot kept; --new-mesh: the shape is made
again instead). `--model-family trellis2` makes the look from --image with TRELLIS.2's texturing pipeline: PBR
materials (base colour, metallic, roughness) baked onto the model's own vertices, faces and UVs (--new-mesh: a new
UV atlas instead of the model's own).

One job (one sub-folder of OUT_DIR) per model, as `generate` makes them: input_mesh.<fmt>, settings.json,
model.glb, model.ply, preview.mp4, ... Exit status as `generate`: 0 ok, 1 a job failed, 2 usage error (also a
file that is not a usable 3-D model: an image, a damaged file, too many triangles), 3 with --strict: a job's files
miss a limit of their --destination, 130 interrupted.
"""
from __future__ import annotations

import argparse
import os

from .cli import DefaultModel, add_common_options, check_common_args, choose_family, run_jobs
from .jobs.request import FieldNames, JobRequest, RequestError
from .options import default_model
from .setting_flags import flag_dest
from .settings import DEFAULT_PRESET, PRESETS

# The command's words for a request's inputs, in its messages.
NAMES = FieldNames(images="--image PHOTO", prompt="--prompt TEXT", mesh="MODEL", family="--model-family")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m desktop retexture",
        usage="python -m desktop retexture MODEL... (--prompt TEXT | --image PHOTO) [-o OUT_DIR] [options]",
        description="Give 3-D models (GLB, OBJ, PLY, STL) a new look from a text prompt or a photo: the shape "
                    "stays, the surface is generated again. One output folder per model.",
        epilog="Exit status: 0 all models succeeded, 1 some failed, 2 usage error (a file that is not a usable "
               "3-D model included), 3 with --strict: a job's files miss a limit of their --destination, 130 "
               f"interrupted. Presets: {', '.join(PRESETS)} (default {DEFAULT_PRESET}).")
    p.add_argument("meshes", nargs="+", metavar="MODEL", help="3-D model files (GLB, OBJ, PLY, STL; at most "
                                                              "4 million triangles)")
    look = p.add_mutually_exclusive_group(required=True)
    look.add_argument("--prompt", metavar="TEXT", help="describe the new look (the text model is downloaded on "
                                                      "first use)")
    look.add_argument("--image", metavar="PHOTO", help="a photo whose look the model takes (the image model)")
    add_common_options(p)
    from .families import FAMILIES, looks_words

    p.add_argument("--model-family", choices=list(FAMILIES), default=None,
                   help=f"the model family that makes the look from --image: {looks_words()} (default: TRELLIS v1), "
                        "from the folder the app installs it in unless --model names one of that family")
    p.set_defaults(model=DefaultModel(default_model()))
    # The other name of --no-keep-mesh, as users say it.
    p.add_argument("--new-mesh", dest=flag_dest("--keep-mesh"), action="store_const", const=False,
                   default=argparse.SUPPRESS, help="make the shape again from the model's voxels (new topology and "
                                                    "UVs) instead of keeping the model's own mesh (--keep-mesh)")
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)                      # exits with 2 on a usage error
    try:                                                # one job per model, each its look
        requests = [JobRequest(mesh=os.path.abspath(m), prompt=args.prompt, images=[args.image] if args.image else [],
                               family=args.model_family).checked(NAMES) for m in args.meshes]
    except RequestError as err:
        parser.error(f"--prompt: {err}" if err.field == "prompt" else str(err))
    settings = check_common_args(parser, args, inputs=[*args.meshes, *([args.image] if args.image else [])])
    from .families import FamilyRefusal, look_family

    try:
        look_family(args.model_family, from_prompt=args.prompt is not None)
    except FamilyRefusal as err:
        parser.error(f"--model-family: {err}")
    choose_family(parser, args)                         # --model: that family's folder, or one that agrees
    from .jobs.job import InputError
    from .jobs.meshes import check_mesh

    for path in args.meshes:                            # a wrong file is a usage error, found at once
        try:
            check_mesh(path)
        except InputError as err:
            parser.error(str(err))
    if args.image is not None and not os.path.isfile(args.image):
        parser.error(f"--image: {args.image}: no such file")

    def variant(request):
        return lambda runner: runner.submit_request(request.replace(settings=settings))
    return run_jobs(args, [(os.path.basename(m) or m, variant(r)) for m, r in zip(args.meshes, requests)])
