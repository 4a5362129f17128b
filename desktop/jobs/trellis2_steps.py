"""The job steps of a TRELLIS.2 model (the runner's model folder is one: ``models.model_family``), beside v1's
steps.py; the worker's generate and export steps switch family at their top (``by_family``, ``by_result``):

    generate: one image -> (model) -> job folder -> sample the O-Voxel -> PBR bake -> files, result.npz
    export:   a kept O-Voxel of an earlier job -> job folder -> PBR bake -> files

Every file comes from the one ``PbrTexturedMesh`` that ``trellis.export.pbr.bake_ovoxel`` makes with the job's face
target and texture size: the mesh files by v1's writers (mesh_files.write_mesh_files: formats, levels of detail,
export.json); model.ply as that mesh with per-vertex base colours (TRELLIS.2 makes no Gaussians: a PLY of a mesh
model is its coloured mesh, ``trellis.export.pbr.vertex_ply``); preview.mp4 as a lit turntable of its PBR material
on v1's camera path (``trellis.utils.pbr_video``). A job takes one image, and a VRAM budget of at least its pipeline
type's floor where the preset set it (``check_trellis2_settings``).
"""
from __future__ import annotations

import contextlib
import os
import threading
import time

from trellis.export import Background

from ..settings import PRESETS, GenerationSettings, device_change_warning, preset_value
from ..settings_table import MESH_FORMATS
from .context import JobContext
from .folder import JobFolder, atomic_path, jsonable
from .job import InputError, Job
from .mesh_files import face_target, note_written, placement, timed, write_mesh_files, written_before
from .models import ignored_pipeline_type, model_family
from .progress import textured_files
from .sampling import sample_ovoxel
from .steps import check_cancel, make_folder, prepared_images, quiet, ready, settings_record, write_preprocessed

# The lit preview's kind among the files this process has written (mesh_files.written_before).
LIT_PREVIEW = "lit-preview"
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
    write_ovoxel_outputs(job, folder, settings, ovoxel, progress, ctx.cancelled, device=ctx.device, keep=True)
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
                         device=ctx.device)


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


def bake_settings(settings: GenerationSettings, n_faces: int) -> dict:
    """``bake_ovoxel``'s face target, texture size and normal map from the job's settings: the export studio's
    target (or Simplify's share of the decoder mesh, within the destination's limit), as v1's bake takes them."""
    from trellis.export import face_budget

    target = face_target(settings, n_faces)             # the bake's clean-up keeps a mesh below it as it is
    # the PLY's vertex colours and the preview's material come from the texture too
    textured = textured_files(settings) or bool({"ply", "mp4"} & set(settings.formats))
    return {"target_faces": target if target is not None else face_budget(n_faces, settings.simplify),
            "texture_size": settings.texture_size if textured else UNSEEN_TEXTURE,
            "normal_map": textured and settings.normal_map and "glb" in settings.formats and not settings.geometry_only}


def write_ovoxel_outputs(job: Job, folder: JobFolder, settings: GenerationSettings, ovoxel, progress, cancel,
                         device: str = "cpu", keep: bool = False) -> None:
    """The files of one PBR bake of `ovoxel` (mesh files, PLY, preview video rendered on `device`); with `keep`,
    result.npz (the O-Voxel, for exports after a restart) written in a thread meanwhile and removed again when the
    job fails."""
    from trellis.export import bake_ovoxel

    t0 = time.perf_counter()
    fmt = set(settings.formats)
    kept = Background("trellis-kept-result", lambda: folder.write_ovoxel_result(
        ovoxel, {"pipeline_type": settings.pipeline_type})) if keep else None
    try:
        if fmt & set(MADE_FROM_BAKE):
            with timed(job, "bake"):
                textured = bake_ovoxel(ovoxel, **bake_settings(settings, int(ovoxel.faces.shape[0])),
                                       progress=lambda stage, done, total: progress("bake", done, total, stage),
                                       cancel=cancel)
            job.timings["export_bake_stages"] = jsonable(textured.info)
            # the preview renders on the GPU while the mesh files are written on the CPU (from the process's second
            # preview on: the first imports and compiles its kernels alone)
            beside = "mp4" in fmt and bool(written_before([LIT_PREVIEW]))
            preview = start_lit_preview(job, folder, settings, textured, device, cancel) if beside else None
            try:
                if fmt & set(MESH_FORMATS):
                    write_mesh_files(job, folder, settings, textured, progress, cancel=cancel)
                if "ply" in fmt:
                    with timed(job, "ply"):
                        progress("ply", 0, 1)
                        job.files.update(write_mesh_ply(folder, settings, textured))
                        progress("ply", 1, 1)
            except BaseException:
                if preview is not None:        # no file of a failed job is written after it ends
                    preview.stop()
                raise
            if preview is not None:
                progress("video", 0, 1)
                job.files.update(preview.result())
                progress("encode", 1, 1)
                job.timings.setdefault("export", {})["preview_beside"] = True
            elif "mp4" in fmt:
                job.files.update(write_lit_preview(job, folder, settings, textured, device, progress, cancel))
                note_written(LIT_PREVIEW)
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


def write_mesh_ply(folder: JobFolder, settings: GenerationSettings, textured) -> dict:
    """model.ply: the baked mesh with per-vertex base colours, placed as the other mesh files (height, pivot, units;
    z up unless the settings name an axis); its files."""
    from trellis.export import save_vertex_color_ply

    with atomic_path(folder.file("ply")) as tmp:
        save_vertex_color_ply(textured, tmp, **placement(settings), units=settings.units,
                              up="z" if settings.up == "auto" else settings.up)
    return {"ply": str(folder.file("ply"))}


class LitPreview:
    """``write_lit_preview`` in a thread (silent: the files written meanwhile report the job's progress); ``result()``
    waits for its files or raises its error, ``stop()`` cancels it and waits."""

    def __init__(self, job: Job, folder: JobFolder, settings: GenerationSettings, textured, device: str, cancel):
        self.stopped = threading.Event()

        def asked():
            return self.stopped.is_set() or bool(cancel is not None and cancel())
        self.work = Background("trellis2-preview", lambda: write_lit_preview(
            job, folder, settings, textured, device, quiet, asked))

    def result(self) -> dict:
        return self.work.result()

    def stop(self) -> None:
        self.stopped.set()
        self.work.join()


def start_lit_preview(job: Job, folder: JobFolder, settings: GenerationSettings, textured, device: str,
                      cancel) -> LitPreview:
    """The lit preview started beside the caller's work; what it imports is imported here first (two threads
    importing modules with native parts for the first time at once can deadlock)."""
    import imageio_ffmpeg  # noqa: F401
    import trellis.utils.pbr_video  # noqa: F401
    import trellis.utils.render_utils  # noqa: F401
    return LitPreview(job, folder, settings, textured, device, cancel)


def write_lit_preview(job: Job, folder: JobFolder, settings: GenerationSettings, textured, device: str, progress,
                      cancel) -> dict:
    """preview.mp4: the lit turntable of the baked PBR mesh, each frame encoded (ffmpeg, its own process) while the
    next renders on `device` (timings["export"]["mp4"]); its files."""
    from trellis.utils.pbr_video import iter_pbr_video

    with timed(job, "mp4"):
        frames = iter_pbr_video(textured, resolution=settings.video_resolution, num_frames=settings.video_frames,
                                device=device, progress=lambda i, n: progress("video", i, n), cancel=cancel)
        files = folder.write_video(frames, settings.video_fps, cancel=cancel, count=settings.video_frames)
        progress("encode", 1, 1)             # the frames were encoded as they came: what is left is ffmpeg's end
        return files
