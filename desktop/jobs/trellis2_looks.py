"""TRELLIS.2's new look (its family's `variant` step, worker.family_step): PBR materials on the user's own mesh.

    variant: the user's 3-D model + one image -> (texturing pipeline) -> job folder -> O-Voxel of the model,
             texture flow, decode -> PBR bake onto the model -> files

The model is read as its file holds it (meshes.check_mesh, steps.load_own_mesh): keep-my-mesh is the rule, so the
files have its vertices, faces and UVs bit for bit (``trellis.export.pbr.onto_mesh``: new UVs only where its own
cannot carry a texture, or with keep_mesh off, said in a warning), at its own place and size. The texturing pipeline
(``Trellis2TexturingPipeline``) is loaded through the worker's pipelines (models.DevicePipelines.look), in place of
the image pipeline whose networks it shares. Its grid side R comes from the job's pipeline type (512 -> 512, the
1024 types -> 1024, 1536_cascade -> 1536) unless $TRELLIS_DESKTOP_LOOK_RESOLUTION names one (small grids for
tests and quick trials). No result.npz is kept: the look is a bake onto the user's model, not a new shape.
"""
from __future__ import annotations

import os
import time

from ..families.trellis2 import FAMILY as TRELLIS2
from ..settings import GenerationSettings
from ..settings_table import MESH_FORMATS
from .context import JobContext
from .job import InputError, Job
from .meshes import check_mesh
from .mesh_files import timed, write_mesh_files
from .sampling import sampling_block
from .steps import check_cancel, images_then_model, load_own_mesh, make_folder, write_preprocessed
from .trellis2_steps import (for_trellis2_device, trellis2_export_stages, trellis2_record, write_lit_preview,
                             write_mesh_ply)

RESOLUTION_ENV = "TRELLIS_DESKTOP_LOOK_RESOLUTION"
# The texturing pipeline's own stage names that mean something else in the app's progress words.
STAGE_NAMES = {"voxelize": "ovoxel", "encode": "shape_encode"}


def look_resolution(settings: GenerationSettings) -> int:
    """The O-Voxel grid side of a new look: $TRELLIS_DESKTOP_LOOK_RESOLUTION where set, else the pipeline type's."""
    given = os.environ.get(RESOLUTION_ENV, "").strip()
    if given:
        try:
            value = int(given)
        except ValueError:
            value = 0
        if value < 16:
            raise InputError(f"${RESOLUTION_ENV}={given!r}: give a grid side of at least 16 (512, 1024 or 1536)")
        return value
    kind = settings.pipeline_type or TRELLIS2.default_pipeline_type
    return 1536 if kind.startswith("1536") else 512 if kind == "512" else 1024


def look_stages(settings: GenerationSettings) -> list:
    """A TRELLIS.2 new look's stages: reading the model, the texturing pipeline's, then its files'."""
    return [*TRELLIS2.look_stages, *trellis2_export_stages(settings)]


def variant(ctx: JobContext, job: Job) -> None:
    """A TRELLIS.2 new look: the job's 3-D model with PBR materials from the job's image."""
    if job.prompt is not None or len(job.inputs) != 1:
        raise InputError("a TRELLIS.2 new look takes one image (not a prompt)")
    settings = job.used_settings = for_trellis2_device(job, job.settings.with_seed(), ctx.device)
    progress = ctx.tracker(job, look_stages(settings))

    # 1. The inputs before any model is loaded or anything written: a wrong file fails in a second, no folder left.
    progress("voxelize", 0, 1)
    t = time.perf_counter()
    ext = check_mesh(job.mesh)
    own = load_own_mesh(job.mesh, ext)
    job.timings["read_mesh"] = time.perf_counter() - t
    progress("voxelize", 1, 1)
    check_cancel(ctx)
    resolution = look_resolution(settings)
    images, pipeline, model = images_then_model(ctx, job, settings, progress, "look")

    # 2. The job folder: the 3-D model, the image, the settings (the family, the model's own name, the grid).
    folder = make_folder(ctx, job)
    name = job.mesh[0] if isinstance(job.mesh, tuple) else str(job.mesh)
    job.files.update(folder.copy_mesh(job, ext))
    folder.copy_inputs(job)
    job.files.update(folder.write_settings(trellis2_record(job, settings, model, ctx.device,
                                                           {**ctx.record, "mesh": name, "resolution": resolution})))

    # 3. The texturing run (its stages in the job's progress), then the bake onto the model and the files.
    def report(stage, i, n):
        progress(STAGE_NAMES.get(stage, stage), i, n)
    with write_preprocessed(job, folder, images):
        progress("preprocess", 1, 1)
        with sampling_block(job, pipeline, settings, ctx.cancelled):
            try:
                result = pipeline.run((own.vertices, own.faces, own.uvs), images[0], seed=settings.seed,
                                      tex_slat_sampler_params={"steps": settings.slat_steps}, preprocess_image=False,
                                      resolution=resolution, texture_size=settings.texture_size, up="z",
                                      new_uvs=not settings.keep_mesh, progress=report, cancel=ctx.cancelled)
            except ValueError as err:        # a model the grid cannot hold (nothing to texture): the input's fault
                raise InputError(str(err)) from None
    job.timings["look"] = {"resolution": resolution, **{k: v for k, v in result.info.items() if k != "frame"}}
    write_look_files(ctx, job, folder, settings, result, progress)


def write_look_files(ctx: JobContext, job: Job, folder, settings: GenerationSettings, result, progress) -> None:
    """The PBR bake onto the user's model (``bake_onto_user_mesh``), then the files the settings ask: the mesh
    formats written where and as large as the model was (the export studio's writers: GLB, OBJ and USDZ with their
    PBR maps), the PLY, the lit preview."""
    from trellis.export import bake_onto_user_mesh

    fmt = set(settings.formats)
    with timed(job, "bake"):
        textured = bake_onto_user_mesh(result, progress=lambda stage, d, n: progress("bake", d, n, stage),
                                       cancel=ctx.cancelled)
    job.timings["look_bake"] = {k: textured.info.get(k) for k in ("uv", "uv_method", "covered_share", "seconds")}
    uv = str(textured.info.get("uv", "kept"))
    if uv != "kept" and settings.keep_mesh:
        job.warn(f"Your model's UVs could not carry one texture ({uv.split(': ', 1)[-1]}): it got a new UV atlas, "
                 "which splits its vertices along the atlas's seams (positions and faces otherwise kept).")
    check_cancel(ctx)
    if fmt & set(MESH_FORMATS):
        write_mesh_files(job, folder, settings, textured, progress, own=True, cancel=ctx.cancelled)
    if "ply" in fmt:
        with timed(job, "ply"):
            progress("ply", 0, 1)
            job.files.update(write_mesh_ply(folder, settings.replace(height=None, pivot="origin"), textured))
            progress("ply", 1, 1)
    if "mp4" in fmt:
        job.files.update(write_lit_preview(job, folder, settings, textured, ctx.device, progress, ctx.cancelled))
