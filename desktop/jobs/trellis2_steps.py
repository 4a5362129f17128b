"""The job steps of TRELLIS.2 (its family's steps module: desktop/families/trellis2.py), beside v1's steps.py; the
worker runs a job's generate or export from its family's module (worker.family_step):

    generate: one image -> (model) -> job folder -> sample the O-Voxel -> PBR bake -> files, result.npz
              (on a GPU the bake's mesh is prepared while the texture samples: ``EarlyShape``)
    export:   a kept O-Voxel of an earlier job -> job folder -> PBR bake -> files

Every file comes from the one ``PbrTexturedMesh`` that ``trellis.export.pbr.bake_ovoxel`` makes with the job's face
target and texture size: the mesh files by v1's writers (mesh_files.write_mesh_files: formats, levels of detail,
export.json); model.ply as that mesh with per-vertex base colours (TRELLIS.2 makes no Gaussians: a PLY of a mesh
model is its coloured mesh, ``trellis.export.pbr.vertex_ply``); preview.mp4 as a lit turntable of its PBR material
on v1's camera path (``trellis.export.pbr.video``). They are written through the library's scheduler as v1's are
(``trellis.export.ExportJob`` with the job's ``PbrOptions``; result.npz and the preview as its ``SideWork``). What a
job takes (one image, a VRAM budget of at least its pipeline type's floor) JobRunner.submit checked (families.check).
"""
from __future__ import annotations

import time

from ..families.trellis2 import FAMILY as TRELLIS2
from ..settings import GenerationSettings, device_change_warning, with_job_texture
from ..settings_table import MESH_FORMATS
from .context import JobContext
from .folder import JobFolder, atomic_path, jsonable
from .job import InputError, Job
from .mesh_files import destination, placement, timed, write_mesh_files
from .progress import textured_files
from .sampling import sample_ovoxel
from .steps import (check_cancel, images_then_model, keep_finished_result, make_folder, overlaps_files, quiet,
                    settings_record, write_preprocessed)

MADE_FROM_BAKE = (*MESH_FORMATS, "ply", "mp4")      # every file but result.npz comes from the PBR bake
# The texture of a bake whose files hold none (STL, 3MF, geometry only): the smallest the bake takes.
UNSEEN_TEXTURE = 8
# The early preparation raises a job's peak memory (docs/benchmarks/trellis2.md, the app's whole job): a 24 GB card
# keeps the serial order's peak.
EARLY_MIN_GPU_GIB = 30


def trellis2_export_stages(settings: GenerationSettings) -> list:
    """The stages that write a TRELLIS.2 job's files, in the order ``write_ovoxel_outputs`` runs them: the bake,
    the mesh files, the PLY, the preview video."""
    fmt = set(settings.formats)
    baked = ["bake"] if fmt & set(MADE_FROM_BAKE) else []
    return (baked + [kind for kind in MESH_FORMATS if kind in fmt] + (["ply"] if "ply" in fmt else [])
            + (["video", "encode"] if "mp4" in fmt else []))


def generate(ctx: JobContext, job: Job) -> None:
    """A TRELLIS.2 generation: the mesh files of `job.settings.formats` from the job's image."""
    settings = job.used_settings = for_trellis2_device(job, job.settings.with_seed(), ctx.device)
    progress = ctx.tracker(job, [*TRELLIS2.progress_stages, *trellis2_export_stages(settings)])
    images, pipeline, model = images_then_model(ctx, job, settings, progress)
    folder = make_folder(ctx, job)
    folder.copy_inputs(job)
    job.files.update(folder.write_settings(trellis2_record(job, settings, model, ctx.device, ctx.record)))
    early = EarlyShape(settings, ctx.cancelled) if prepares_early(settings, pipeline, ctx.device) else None
    try:
        with write_preprocessed(job, folder, images):
            progress("preprocess", 1, 1)
            ovoxel = sample_ovoxel(job, pipeline, images[0], settings, progress, ctx.cancelled,
                                   on_shape=early.start if early is not None else None)
        if not ovoxel.success:
            raise InputError("TRELLIS.2 made no surface from this image: try another seed, or an image with a "
                             "clearer, larger object")
        write_ovoxel_outputs(job, folder, settings, ovoxel, progress, ctx.cancelled, device=ctx.device, keep=True,
                             overlap=overlaps_files(ctx.device), prepared=early.prepared if early else None)
    finally:
        if early is not None:
            early.close()
    if job.keep_result:
        ctx.keep({"ovoxel": ovoxel})


def prepares_early(settings: GenerationSettings, pipeline, device: str) -> bool:
    """Whether the bake's mesh is prepared while the texture samples (``EarlyShape``): on a GPU (a CPU's texture flow
    wants every core) of at least ``EARLY_MIN_GPU_GIB``, for a triangle bake, and without a VRAM budget (the decoded
    shape and the preparation's memory are held through the texture flow, on top of its peak)."""
    if not (str(device).startswith("cuda") and bool(set(settings.formats) & set(MADE_FROM_BAKE))
            and settings.topology == "triangles" and pipeline.memory_policy.offload == "none"):
        return False
    import torch

    return torch.cuda.get_device_properties(torch.device(device)).total_memory >= EARLY_MIN_GPU_GIB * 2 ** 30


class EarlyShape:
    """The pipeline's ``on_shape`` for a job: the O-Voxel's mesh prepared for the bake with the job's
    ``pbr_options`` (``trellis.export.EarlyPrepare``) while the texture samples; ``close`` stops it if the job
    ends before its bake."""

    def __init__(self, settings: GenerationSettings, cancel):
        self.options, self.cancel, self.prepared = pbr_options(settings), cancel, None

    def start(self, meshes: list) -> None:
        from trellis.export import EarlyPrepare

        if meshes and meshes[0].success:
            self.prepared = EarlyPrepare(meshes[0], self.options, cancel=self.cancel)

    def close(self) -> None:
        if self.prepared is not None:
            self.prepared.close()


def export(ctx: JobContext, job: Job) -> None:
    """An export of a TRELLIS.2 job: the mesh files of `job.settings.formats` from its kept O-Voxel."""
    settings = job.used_settings = for_trellis2_device(job, job.settings, ctx.device)
    progress = ctx.tracker(job, trellis2_export_stages(settings))
    check_cancel(ctx)
    folder = make_folder(ctx, job)
    job.files.update(folder.copy_from(ctx.source_files))
    job.files.update(folder.write_settings(trellis2_record(job, settings, ctx.model_path, ctx.device, ctx.record)))
    write_ovoxel_outputs(job, folder, settings, ctx.source_result["ovoxel"], progress, ctx.cancelled,
                         device=ctx.device, overlap=overlaps_files(ctx.device))


def for_trellis2_device(job: Job, settings: GenerationSettings, device: str) -> GenerationSettings:
    """`settings` as a TRELLIS.2 job runs them on `device` (``trellis2_device_settings``); a lowered value is a
    warning (the family's own texture size is none: the user's value was not lowered)."""
    lowered = trellis2_lowered(settings, device)
    text = device_change_warning(settings, lowered)
    if text:
        job.warn(text)
    return with_job_texture(TRELLIS2, settings, lowered)


def trellis2_lowered(settings: GenerationSettings, device: str) -> GenerationSettings:
    """`settings` lowered for `device` where it shapes a TRELLIS.2 job's files: of what a CPU lowers, the texture size
    and the preview video's frames and size (the bake renders are v1's)."""
    lowered = settings.for_device(device)
    return settings.replace(texture_size=lowered.texture_size, video_frames=lowered.video_frames,
                            video_resolution=lowered.video_resolution)


def trellis2_device_settings(settings: GenerationSettings, device: str) -> GenerationSettings:
    """The settings a TRELLIS.2 job runs with on `device`: ``trellis2_lowered``'s, and where the texture size was not
    lowered, the family's for the pipeline type where the settings do not say (``settings.with_job_texture``)."""
    return with_job_texture(TRELLIS2, settings, trellis2_lowered(settings, device))


def trellis2_record(job: Job, settings: GenerationSettings, model: str, device: str, extra=None) -> dict:
    """settings.json of a TRELLIS.2 job: v1's record, with the model family (`extra`: JobContext.record)."""
    return settings_record(job, settings, model, device, {"family": TRELLIS2.name, **(extra or {})})


def pbr_options(settings: GenerationSettings):
    """The library's ``PbrOptions`` of a job's settings: the face target (the export studio's target, or Simplify's
    share of the decoder mesh; 0: every face), within the destination's limit, the texture size and the normal map,
    as v1's ``mesh_files.export_options`` gives its ``ExportOptions``."""
    from trellis.export import PbrOptions

    # the PLY's vertex colours and the preview's material come from the texture too
    textured = textured_files(settings) or bool({"ply", "mp4"} & set(settings.formats))
    return PbrOptions(target_faces=settings.target_faces, simplify=settings.simplify,
                      destination=destination(settings), topology=settings.topology,
                      texture_size=settings.texture_size if textured else UNSEEN_TEXTURE,
                      normal_map=textured and settings.normal_map and "glb" in settings.formats
                      and not settings.geometry_only)


# What the lit preview imports (``trellis.export.SideWork.imports``: imported before its thread starts).
PREVIEW_IMPORTS = ("imageio_ffmpeg", "trellis.export.pbr.video", "trellis.utils.render_utils")


def write_ovoxel_outputs(job: Job, folder: JobFolder, settings: GenerationSettings, ovoxel, progress, cancel,
                         device: str = "cpu", keep: bool = False, overlap: bool = False, prepared=None) -> None:
    """The files of one PBR bake of `ovoxel`, through the library's scheduler (``trellis.export.ExportJob`` with
    ``pbr_options``) as ``steps.write_outputs`` writes v1's: with `keep`, result.npz (the O-Voxel, for exports after
    a restart) as side work from the start, removed again when the job fails; the bake; with `overlap` (a GPU), the
    preview video (rendered on `device`) as side work on its own stream while the mesh files (side by side) and the
    PLY are written, else after them; `prepared`: the bake's mesh prepared while the texture sampled (``EarlyShape``).
    The same files either way."""
    from trellis.export import ExportJob, SideWork

    t0 = time.perf_counter()
    fmt = set(settings.formats)
    baked = bool(fmt & set(MADE_FROM_BAKE))
    beside = []
    if keep:            # compressed in a thread (zlib leaves the GIL) while the bake runs
        beside.append(SideWork("kept-result", lambda stopped: folder.write_ovoxel_result(
            ovoxel, {"pipeline_type": settings.pipeline_type})))
    preview_beside = overlap and "mp4" in fmt and bool(fmt & {*MESH_FORMATS, "ply"})
    export = ExportJob(None, ovoxel if baked else None, pbr_options(settings), beside=beside, cancel=cancel,
                       prepared=prepared if baked else None)
    try:
        textured = None
        if baked:
            with timed(job, "bake"):
                textured = export.bake(progress=lambda stage, done, total: progress("bake", done, total, stage))
            job.timings["export_bake_stages"] = jsonable(textured.info)
            for text in textured.info.get("warnings", ()):       # what the bake tells the user (a wasteful UV layout)
                job.warn(text)
        if preview_beside:       # silent: the files' progress is the job's
            export.start_side(SideWork("preview", lambda stopped: write_lit_preview(
                job, folder, settings, textured, device, quiet, stopped), on_gpu=True, imports=PREVIEW_IMPORTS))
        if fmt & set(MESH_FORMATS):
            write_mesh_files(job, folder, settings, textured, progress, together=export if overlap else None,
                             cancel=cancel)
        if "ply" in fmt:
            with timed(job, "ply"):
                progress("ply", 0, 1)
                job.files.update(write_mesh_ply(folder, settings, textured))
                progress("ply", 1, 1)
        if preview_beside:
            if export.side_running("preview"):
                progress("video", 0, 1)
            job.files.update(export.side_result("preview"))
            progress("encode", 1, 1)
        elif "mp4" in fmt:
            job.files.update(write_lit_preview(job, folder, settings, textured, device, progress, cancel))
        if keep:
            job.files.update(export.side_result("kept-result"))
            job.timings.setdefault("export", {})["result"] = export.side_seconds("kept-result")
        job.timings.setdefault("export", {}).update(files_wall=time.perf_counter() - t0, overlapped=preview_beside)
    except BaseException:
        keep_finished_result(job, export)
        raise
    finally:
        export.close()


def write_mesh_ply(folder: JobFolder, settings: GenerationSettings, textured) -> dict:
    """model.ply: the baked mesh with per-vertex base colours, placed as the other mesh files (height, pivot, units;
    z up unless the settings name an axis); its files."""
    from trellis.export import save_vertex_color_ply

    with atomic_path(folder.file("ply")) as tmp:
        save_vertex_color_ply(textured, tmp, **placement(settings), units=settings.units,
                              up="z" if settings.up == "auto" else settings.up)
    return {"ply": str(folder.file("ply"))}


def write_lit_preview(job: Job, folder: JobFolder, settings: GenerationSettings, textured, device: str, progress,
                      cancel) -> dict:
    """preview.mp4: the lit turntable of the baked PBR mesh, each frame encoded (ffmpeg, its own process) while the
    next renders on `device` (timings["export"]["mp4"]); its files."""
    from trellis.export import iter_pbr_video

    with timed(job, "mp4"):
        frames = iter_pbr_video(textured, resolution=settings.video_resolution, num_frames=settings.video_frames,
                                device=device, progress=lambda i, n: progress("video", i, n), cancel=cancel)
        files = folder.write_video(frames, settings.video_fps, cancel=cancel, count=settings.video_frames)
        progress("encode", 1, 1)             # the frames were encoded as they came: what is left is ffmpeg's end
        return files

