"""The job steps of a TRELLIS.2 model (the runner's model folder is one: ``models.model_family``), beside v1's
steps.py; the worker's generate and export steps switch family at their top (``by_family``, ``by_result``):

    generate: one image -> (model) -> job folder -> sample the O-Voxel -> PBR bake -> mesh files, result.npz
    export:   a kept O-Voxel of an earlier job -> job folder -> PBR bake -> mesh files

The mesh files are written by v1's writers (mesh_files.write_mesh_files: formats, levels of detail, export.json)
from the one ``PbrTexturedMesh`` that ``trellis.export.pbr.bake_ovoxel`` makes with the job's face target and
texture size. TRELLIS.2 makes no Gaussians: a PLY and the Gaussians' preview video do not exist for it, and jobs
asking for them are refused when submitted (``check_trellis2_settings``).
"""
from __future__ import annotations

import contextlib
import os
import time

from ..settings import GenerationSettings, device_change_warning
from ..settings_table import MESH_FORMATS
from .background import Background
from .context import JobContext
from .folder import JobFolder, jsonable
from .job import InputError, Job
from .mesh_files import face_target, timed, write_mesh_files
from .models import ignored_pipeline_type, model_family
from .progress import export_stages, textured_files
from .sampling import sample_ovoxel
from .steps import check_cancel, make_folder, prepared_images, ready, settings_record, write_preprocessed

# The stages of a TRELLIS.2 generation before its files are written (the pipeline's progress names).
TRELLIS2_STAGES = ["preprocess", "condition", "sparse_structure", "shape_slat", "tex_slat", "decode"]
NO_GAUSSIANS = ("ply", "mp4")           # the files of v1's Gaussians
# The texture of a bake whose files hold none (STL, 3MF, geometry only): the smallest the bake takes.
UNSEEN_TEXTURE = 8


def check_trellis2_settings(settings: GenerationSettings, images: int = 1) -> tuple:
    """(the settings a TRELLIS.2 job runs with, a warning or None); ValueError for what TRELLIS.2 cannot make. The
    table's default formats (which include v1's PLY and preview video) become their mesh files, with a warning;
    PLY or MP4 asked for with other formats are refused."""
    if images != 1:
        raise ValueError(f"a TRELLIS.2 job takes one image ({images} given): several views of one object are a "
                         "TRELLIS v1 feature")
    asked = [kind for kind in NO_GAUSSIANS if kind in settings.formats]
    if not asked:
        return settings, None
    meshes = tuple(kind for kind in settings.formats if kind not in NO_GAUSSIANS)
    names = " and ".join(kind.upper() for kind in asked)
    if settings.formats == GenerationSettings().formats and meshes:
        return settings.replace(formats=meshes), (
            f"TRELLIS.2 makes a mesh with PBR materials, not Gaussian splats: the default files' {names} were "
            f"left out (only {', '.join(k.upper() for k in meshes)} was written).")
    raise ValueError(f"TRELLIS.2 makes a mesh with PBR materials, not Gaussian splats: {names} cannot be made "
                     f"with this model; choose from {', '.join(MESH_FORMATS)} (e.g. formats glb)")


def by_family(v1_generate):
    """The worker's generation step: this module's for a TRELLIS.2 model, else `v1_generate` (which ignores a
    pipeline type, with a warning)."""
    def generate_job(ctx: JobContext, job: Job) -> None:
        if model_family(ctx.model_path) == "trellis2":
            return generate(ctx, job)
        ignored_pipeline_type(job)
        return v1_generate(ctx, job)
    return generate_job


def by_result(v1_export):
    """The worker's export step: this module's for a kept O-Voxel, else `v1_export`."""
    def export_job(ctx: JobContext, job: Job) -> None:
        return (export if "ovoxel" in (ctx.source_result or {}) else v1_export)(ctx, job)
    return export_job


def generate(ctx: JobContext, job: Job) -> None:
    """A TRELLIS.2 generation: the mesh files of `job.settings.formats` from the job's image."""
    settings = job.used_settings = for_trellis2_device(job, job.settings.with_seed(), ctx.device)
    progress = ctx.tracker(job, TRELLIS2_STAGES + export_stages(settings))
    progress("preprocess", 0, 1)
    t = time.perf_counter()
    images = prepared_images(ctx, job, settings)
    job.timings["preprocess"] = time.perf_counter() - t
    check_cancel(ctx)
    t = time.perf_counter()
    pipeline, model = ready(ctx, "image", settings, progress)
    job.timings["ready"] = time.perf_counter() - t
    folder = make_folder(ctx, job)
    folder.copy_inputs(job)
    job.files.update(folder.write_settings(trellis2_record(job, settings, model, ctx.device, ctx.record)))
    with write_preprocessed(job, folder, images):
        progress("preprocess", 1, 1)
        ovoxel = sample_ovoxel(job, pipeline, images[0], settings, progress, ctx.cancelled)
    if not ovoxel.success:
        raise InputError("TRELLIS.2 made no surface from this image: try another seed, or an image with a clearer, "
                         "larger object")
    write_ovoxel_outputs(job, folder, settings, ovoxel, progress, ctx.cancelled, keep=True)
    if job.keep_result:
        ctx.keep({"ovoxel": ovoxel})


def export(ctx: JobContext, job: Job) -> None:
    """An export of a TRELLIS.2 job: the mesh files of `job.settings.formats` from its kept O-Voxel."""
    settings = job.used_settings = for_trellis2_device(job, job.settings, ctx.device)
    settings, warning = check_trellis2_settings(settings)
    if warning:
        job.warn(warning)
    progress = ctx.tracker(job, export_stages(settings))
    check_cancel(ctx)
    folder = make_folder(ctx, job)
    job.files.update(folder.copy_from(ctx.source_files))
    job.files.update(folder.write_settings(trellis2_record(job, settings, ctx.model_path, ctx.device, ctx.record)))
    write_ovoxel_outputs(job, folder, settings, ctx.source_result["ovoxel"], progress, ctx.cancelled)


def for_trellis2_device(job: Job, settings: GenerationSettings, device: str) -> GenerationSettings:
    """`settings` as a TRELLIS.2 job runs them on `device`: of what a CPU lowers, only the texture size shapes its
    files (the bake renders and the preview are v1's Gaussians'); a lowered one is a warning."""
    used = settings.replace(texture_size=settings.for_device(device).texture_size)
    text = device_change_warning(settings, used)
    if text:
        job.warn(text)
    return used


def trellis2_record(job: Job, settings: GenerationSettings, model: str, device: str, extra=None) -> dict:
    """settings.json of a TRELLIS.2 job: v1's record, with the model family (`extra`: JobContext.record)."""
    return settings_record(job, settings, model, device, {"family": "trellis2", **(extra or {})})


def bake_settings(settings: GenerationSettings, n_faces: int) -> dict:
    """``bake_ovoxel``'s face target, texture size and normal map from the job's settings: the export studio's
    target (or Simplify's share of the decoder mesh, within the destination's limit), as v1's bake takes them."""
    from trellis.export import face_budget

    target = face_target(settings, n_faces)             # the bake's clean-up keeps a mesh below it as it is
    textured = textured_files(settings)
    return {"target_faces": target if target is not None else face_budget(n_faces, settings.simplify),
            "texture_size": settings.texture_size if textured else UNSEEN_TEXTURE,
            "normal_map": textured and settings.normal_map and "glb" in settings.formats and not settings.geometry_only}


def write_ovoxel_outputs(job: Job, folder: JobFolder, settings: GenerationSettings, ovoxel, progress, cancel,
                         keep: bool = False) -> None:
    """The mesh files of one PBR bake of `ovoxel`; with `keep`, result.npz (the O-Voxel, for exports after a
    restart) written in a thread meanwhile and removed again when the job fails."""
    from trellis.export import bake_ovoxel

    t0 = time.perf_counter()
    kept = Background("trellis-kept-result", lambda: folder.write_ovoxel_result(
        ovoxel, {"pipeline_type": settings.pipeline_type})) if keep else None
    try:
        if any(kind in settings.formats for kind in MESH_FORMATS):
            with timed(job, "bake"):
                textured = bake_ovoxel(ovoxel, **bake_settings(settings, int(ovoxel.faces.shape[0])),
                                       progress=lambda stage, done, total: progress("bake", done, total, stage),
                                       cancel=cancel)
            job.timings["export_bake_stages"] = jsonable(textured.info)
            write_mesh_files(job, folder, settings, textured, progress, cancel=cancel)
        if kept is not None:
            job.files.update(kept.result())
            job.timings.setdefault("export", {})["result"] = kept.seconds
        job.timings.setdefault("export", {})["files_wall"] = time.perf_counter() - t0
    except BaseException:
        if kept is not None:                   # a failed or cancelled job keeps no result to export
            kept.join()
            for path in (kept.value_if_any() or {}).values():
                with contextlib.suppress(OSError):
                    os.remove(path)
        raise
