"""The job steps of a TRELLIS.2 model (the runner's model folder is one: ``models.model_family``), beside v1's
steps.py; the worker's generate and export steps switch family at their top (``by_family``, ``by_result``):

    generate: one image -> (model) -> job folder -> sample the O-Voxel -> PBR bake -> files, result.npz
    export:   a kept O-Voxel of an earlier job -> job folder -> PBR bake -> files

Every file comes from the one ``PbrTexturedMesh`` that ``trellis.export.pbr.bake_ovoxel`` makes with the job's face
target and texture size: the mesh files by v1's writers (mesh_files.write_mesh_files: formats, levels of detail,
export.json); model.ply as that mesh with per-vertex base colours (TRELLIS.2 makes no Gaussians: a PLY of a mesh
model is its coloured mesh, ``trellis.export.pbr.vertex_ply``); preview.mp4 as a lit turntable of its PBR material
on v1's camera path (``trellis.export.pbr.video``). They are written through the library's scheduler as v1's are
(``trellis.export.ExportJob`` with the job's ``PbrOptions``; result.npz and the preview as its ``SideWork``). A job
takes one image, and a VRAM budget of at least its pipeline type's floor where the preset set it
(``check_trellis2_settings``).
"""
from __future__ import annotations

import contextlib
import os
import time

from ..settings import PRESETS, GenerationSettings, device_change_warning, preset_value
from ..settings_table import MESH_FORMATS
from .context import JobContext
from .folder import JobFolder, atomic_path, jsonable
from .job import InputError, Job
from .mesh_files import destination, placement, timed, write_mesh_files
from .models import ignored_pipeline_type, model_family
from .progress import textured_files
from .sampling import sample_ovoxel
from .steps import (check_cancel, make_folder, overlaps_files, prepared_images, quiet, ready, settings_record,
                    write_preprocessed)

# The stages of a TRELLIS.2 generation before its files are written (the pipeline's progress names).
TRELLIS2_STAGES = ["preprocess", "condition", "sparse_structure", "shape_slat", "tex_slat", "decode"]
MADE_FROM_BAKE = (*MESH_FORMATS, "ply", "mp4")      # every file but result.npz comes from the PBR bake
# The texture of a bake whose files hold none (STL, 3MF, geometry only): the smallest the bake takes.
UNSEEN_TEXTURE = 8


# The least VRAM budget (GiB) a TRELLIS.2 job of each pipeline type completes under on the low-VRAM path: the caps its
# measured peaks fit (docs/benchmarks/trellis2.md: 512 3.05 GiB and 1024_cascade 4.80 GiB under 6, 1536_cascade
# 7.40 GiB under 8; 1024's one pass, its largest flow 5.0 GiB at 32 768 tokens, under 6 as its cascade).
TRELLIS2_VRAM_FLOORS = {"512": 6.0, "1024": 6.0, "1024_cascade": 6.0, "1536_cascade": 8.0}


def check_trellis2_settings(settings: GenerationSettings, images: int = 1) -> tuple:
    """(the settings a TRELLIS.2 job runs with, a warning or None); ValueError for what TRELLIS.2 cannot take:
    several images of one object (a TRELLIS v1 feature). Every format is made, PLY and MP4 included; the VRAM
    budget as ``trellis2_budget`` sets it."""
    if images != 1:
        raise ValueError(f"a TRELLIS.2 job takes one image ({images} given): several views of one object are a "
                         "TRELLIS v1 feature")
    return trellis2_budget(settings)


def budget_from_preset(settings: GenerationSettings) -> bool:
    """The VRAM budget is the preset's, not the user's (for "custom" settings: a value some preset gives it), as
    GenerationSettings.for_device tells a preset's value."""
    if "vram_budget" in settings.explicit:
        return False
    presets = [settings.preset] if settings.preset in PRESETS else list(PRESETS)
    return settings.vram_budget in {preset_value(p, "vram_budget") for p in presets}


def trellis2_budget(settings: GenerationSettings) -> tuple:
    """(settings, warning or None): a VRAM budget below the pipeline type's floor (TRELLIS2_VRAM_FLOORS) raised to
    it where the preset set it (the low-VRAM preset's is sized for TRELLIS v1); one the user set is kept, with a
    warning that the job will likely run out of memory."""
    budget, kind = settings.vram_budget, settings.pipeline_type
    floor = TRELLIS2_VRAM_FLOORS[kind]
    if budget is None or budget >= floor:
        return settings, None
    if budget_from_preset(settings):
        whose = f"the {settings.preset} preset's" if settings.preset in PRESETS else "a preset's"
        return settings.replace(vram_budget=floor), (
            f"vram_budget {budget:g} -> {floor:g} GiB: {whose} {budget:g} GiB is sized for TRELLIS v1; TRELLIS.2's "
            f"pipeline type {kind} needs about {floor:g} GiB. Set vram_budget yourself to keep another value.")
    fits = [k for k, need in TRELLIS2_VRAM_FLOORS.items() if need <= budget]     # smaller types this budget takes
    other = f", or pick pipeline type {fits[-1]}" if fits else ""
    return settings, (f"vram_budget {budget:g} GiB is below the {floor:g} GiB TRELLIS.2's pipeline type {kind} needs: "
                      f"the job will likely run out of GPU memory (raise vram_budget{other})")


def trellis2_export_stages(settings: GenerationSettings) -> list:
    """The stages that write a TRELLIS.2 job's files, in the order ``write_ovoxel_outputs`` runs them: the bake,
    the mesh files, the PLY, the preview video."""
    fmt = set(settings.formats)
    baked = ["bake"] if fmt & set(MADE_FROM_BAKE) else []
    return (baked + [kind for kind in MESH_FORMATS if kind in fmt] + (["ply"] if "ply" in fmt else [])
            + (["video", "encode"] if "mp4" in fmt else []))


def by_family(v1_generate):
    """The worker's generation step: this module's for a TRELLIS.2 job (its family, else its model's), else
    `v1_generate` (which ignores a pipeline type, with a warning)."""
    def generate_job(ctx: JobContext, job: Job) -> None:
        if (job.family or model_family(ctx.model_path)) == "trellis2":
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
    progress = ctx.tracker(job, TRELLIS2_STAGES + trellis2_export_stages(settings))
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
    write_ovoxel_outputs(job, folder, settings, ovoxel, progress, ctx.cancelled, device=ctx.device, keep=True,
                         overlap=overlaps_files(ctx.device))
    if job.keep_result:
        ctx.keep({"ovoxel": ovoxel})


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
    warning."""
    used = trellis2_device_settings(settings, device)
    text = device_change_warning(settings, used)
    if text:
        job.warn(text)
    return used


def trellis2_device_settings(settings: GenerationSettings, device: str) -> GenerationSettings:
    """`settings` lowered for `device` where it shapes a TRELLIS.2 job's files: of what a CPU lowers, the texture size
    and the preview video's frames and size (the bake renders are v1's)."""
    lowered = settings.for_device(device)
    return settings.replace(texture_size=lowered.texture_size, video_frames=lowered.video_frames,
                            video_resolution=lowered.video_resolution)


def trellis2_record(job: Job, settings: GenerationSettings, model: str, device: str, extra=None) -> dict:
    """settings.json of a TRELLIS.2 job: v1's record, with the model family (`extra`: JobContext.record)."""
    return settings_record(job, settings, model, device, {"family": "trellis2", **(extra or {})})


def pbr_options(settings: GenerationSettings):
    """The library's ``PbrOptions`` of a job's settings: the face target (the export studio's target, or Simplify's
    share of the decoder mesh; 0: every face), within the destination's limit, the texture size and the normal map,
    as v1's ``mesh_files.export_options`` gives its ``ExportOptions``."""
    from trellis.export import PbrOptions

    # the PLY's vertex colours and the preview's material come from the texture too
    textured = textured_files(settings) or bool({"ply", "mp4"} & set(settings.formats))
    return PbrOptions(target_faces=settings.target_faces, simplify=settings.simplify,
                      destination=destination(settings),
                      texture_size=settings.texture_size if textured else UNSEEN_TEXTURE,
                      normal_map=textured and settings.normal_map and "glb" in settings.formats
                      and not settings.geometry_only)


# What the lit preview imports (``trellis.export.SideWork.imports``: imported before its thread starts).
PREVIEW_IMPORTS = ("imageio_ffmpeg", "trellis.export.pbr.video", "trellis.utils.render_utils")


def write_ovoxel_outputs(job: Job, folder: JobFolder, settings: GenerationSettings, ovoxel, progress, cancel,
                         device: str = "cpu", keep: bool = False, overlap: bool = False) -> None:
    """The files of one PBR bake of `ovoxel`, through the library's scheduler (``trellis.export.ExportJob`` with
    ``pbr_options``) as ``steps.write_outputs`` writes v1's: with `keep`, result.npz (the O-Voxel, for exports after
    a restart) as side work from the start, removed again when the job fails; the bake; with `overlap` (a GPU), the
    preview video (rendered on `device`) as side work on its own stream while the mesh files (side by side) and the
    PLY are written, else after them. The same files either way."""
    from trellis.export import ExportJob, SideWork

    t0 = time.perf_counter()
    fmt = set(settings.formats)
    baked = bool(fmt & set(MADE_FROM_BAKE))
    beside = []
    if keep:            # compressed in a thread (zlib leaves the GIL) while the bake runs
        beside.append(SideWork("kept-result", lambda stopped: folder.write_ovoxel_result(
            ovoxel, {"pipeline_type": settings.pipeline_type})))
    preview_beside = overlap and "mp4" in fmt and bool(fmt & {*MESH_FORMATS, "ply"})
    export = ExportJob(None, ovoxel if baked else None, pbr_options(settings), beside=beside, cancel=cancel)
    try:
        textured = None
        if baked:
            with timed(job, "bake"):
                textured = export.bake(progress=lambda stage, done, total: progress("bake", done, total, stage))
            job.timings["export_bake_stages"] = jsonable(textured.info)
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
        export.close()                         # the preview stopped too, its partial mp4 gone (atomic_path)
        for path in (export.side_value_if_any("kept-result") or {}).values():   # a failed job keeps no result
            with contextlib.suppress(OSError):
                os.remove(path)
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
