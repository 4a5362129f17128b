"""The things a worker does with a job, each readable top to bottom in one function:

    generate: input images -> (model) -> job folder -> sample -> decode -> files
    text:     a prompt -> (text model) -> job folder -> sample -> decode -> files
    variant:  a 3-D model + a prompt or an image -> (model) -> job folder -> stage 2 on its voxels -> files
    export:   a kept result of an earlier job -> job folder -> files

and the file writing they share (`write_outputs`), cheapest file first so that something useful lands
early. Each step gets the job and its context (context.JobContext: the models, the folder, progress, cancel,
where a kept result goes), nothing else. A generation and a text job also come in two phases
(`generate_in_phases`, `text_in_phases`): the sampling, then the files, which a batch runs beside the next item's
sampling.
"""
from __future__ import annotations

import contextlib
import sys
import time
from typing import Callable, Optional

import torch

from trellis.core.callbacks import Cancelled
from trellis.export import Background

from ..settings import GenerationSettings, device_change_warning
from ..settings_table import MESH_FORMATS
from . import queued
from .export_reuse import link_preview, source_preview, without_preview
from .budget import set_job_policy
from .context import JobContext
from .folder import JobFolder, jsonable
from .inputs import prepare_image
from .job import InputError, Job
from .meshes import check_mesh
from .mesh_files import start_export, timed, write_mesh_files
from .progress import GENERATE_STAGES, TEXT_STAGES, VARIANT_STAGES, ProgressTracker, export_stages, textured_files
from .sampling import sample


def generate(ctx: JobContext, job: Job) -> None:
    """A generation job: the files of `job.settings.formats` from the job's image(s)."""
    generate_in_phases(ctx, job)()


def generate_in_phases(ctx: JobContext, job: Job) -> Callable[[], None]:
    """A generation job's first phase (the input, the model, the folder, the sampling: the GPU's part); returns its
    second (the files: mostly the CPU's), which a batch runs beside the next item's first phase."""
    settings, progress = start(ctx, job, GENERATE_STAGES)

    # 1-2. The input, then the model (once per worker; precision / offload switched per job without reloading).
    images, pipeline, model = images_then_model(ctx, job, settings, progress)

    # 3. The job folder: inputs and settings (the preprocessed image(s) are written while the model samples).
    t = time.perf_counter()
    folder = make_folder(ctx, job)
    folder.copy_inputs(job)
    job.files.update(folder.write_settings(settings_record(job, settings, model, ctx.device, ctx.record)))
    job.timings["folder"] = time.perf_counter() - t
    if len(images) == 1:
        def run(**a):
            return pipeline.run(images[0], preprocess_image=False, **a)
    else:
        def run(**a):
            return pipeline.run_multi_image(images, mode=settings.multi_image_mode, preprocess_image=False, **a)
    with write_preprocessed(job, folder, images):
        progress("preprocess", 1, 1)

        # 4. Sampling and decoding.
        gaussian, mesh = sample(job, pipeline, run, settings, progress, ctx.cancelled)

    # 5. The files (each atomic).
    return lambda: finish(ctx, job, folder, settings, gaussian, mesh, progress)


def generate_text(ctx: JobContext, job: Job) -> None:
    """A text job: the files of `job.settings.formats` from the job's prompt."""
    text_in_phases(ctx, job)()


def text_in_phases(ctx: JobContext, job: Job) -> Callable[[], None]:
    """A text job's first phase (the model, the folder, the sampling); returns its second (the files), as
    `generate_in_phases` does."""
    settings, progress = start(ctx, job, TEXT_STAGES)

    # 1. The text model, once per worker and size (downloaded on its first use); then the job folder.
    pipeline, model = ready(ctx, f"text:{settings.text_model_size}", settings, progress)
    folder = make_folder(ctx, job)
    job.files.update(folder.write_settings(settings_record(job, settings, model, ctx.device, ctx.record)))

    # 2. Sampling, decoding, the files.
    gaussian, mesh = sample(job, pipeline, lambda **a: pipeline.run(job.prompt, **a), settings, progress,
                            ctx.cancelled)
    note_truncation(job, pipeline)
    return lambda: finish(ctx, job, folder, settings, gaussian, mesh, progress)


def generate_variant(ctx: JobContext, job: Job) -> None:
    """A new-look job: the job's 3-D model keeps its shape (its voxels) and gets the look of the job's prompt
    or image (stage 2 only)."""
    settings, progress = start(ctx, job, VARIANT_STAGES)

    # 1. The inputs first, before any model is loaded and before anything is written: the 3-D model read
    #    and checked (a wrong file fails in a second and leaves no folder), the photo prepared.
    progress("voxelize", 0, 1)
    t = time.perf_counter()
    ext = check_mesh(job.mesh)
    mesh = load_mesh(job.mesh, ext)
    own = load_own_mesh(job.mesh, ext) if settings.keep_mesh else None
    job.timings["read_mesh"] = time.perf_counter() - t
    progress("voxelize", 1, 1)
    check_cancel(ctx)
    if job.prompt is None:
        progress("preprocess", 0, 1)
        images = prepared_images(ctx, job, settings)
    which = "image" if job.prompt is None else f"text:{settings.text_model_size}"
    pipeline, model = ready(ctx, which, settings, progress)

    # 2. The job folder: the 3-D model, the photo, the settings.
    folder = make_folder(ctx, job)
    name = job.mesh[0] if isinstance(job.mesh, tuple) else str(job.mesh)
    job.files.update(folder.copy_mesh(job, ext))
    if job.prompt is None:
        folder.copy_inputs(job)
    # the model's own name, not its copy's
    job.files.update(folder.write_settings(settings_record(job, settings, model, ctx.device,
                                                           {**ctx.record, "mesh": name})))
    if job.prompt is None:
        def run(**a):
            return pipeline.run_variant(mesh, images[0], preprocess_image=False, **a)
    else:
        def run(**a):
            return pipeline.run_variant(mesh, job.prompt, **a)
    with write_preprocessed(job, folder, images if job.prompt is None else []):
        if job.prompt is None:
            progress("preprocess", 1, 1)

        # 3. Stage 2 on the model's voxels, decoding, the files.
        gaussian, shape = sample(job, pipeline, run, settings, progress, ctx.cancelled, stage1=False)
    if job.prompt is not None:
        note_truncation(job, pipeline)
    finish(ctx, job, folder, settings, gaussian, shape, progress, own_mesh=own)


# A new look is the family's `variant` step (worker.family_step); v1's also takes a prompt.
variant = generate_variant


def export(ctx: JobContext, job: Job) -> None:
    """An export job: the files of `job.settings.formats` from the result of job.source_id (kept in memory, or read
    from its folder's result.npz)."""
    settings = job.used_settings = for_device(job, job.settings, ctx.device)
    overlap = overlaps_files(ctx.device)
    preview = source_preview(ctx.source_files, settings)     # the source's, when this one would be the same video
    made = without_preview(settings) if preview else settings        # what is left to make
    progress = ctx.tracker(job, export_stages(made, overlap) if made else [])
    check_cancel(ctx)

    # 1. The job folder: the source's inputs and preprocessed image(s), the settings, the source's preview.
    folder = make_folder(ctx, job)
    job.files.update(folder.copy_from(ctx.source_files))
    job.files.update(folder.write_settings(settings_record(job, settings, ctx.model_path, ctx.device, ctx.record)))
    if preview:
        job.files.update(link_preview(job, folder, preview))

    # 2. The files left: a new look that kept the user's mesh is baked onto that mesh again.
    if made is not None:
        own = load_own_mesh(job.files["mesh"], check_mesh(job.files["mesh"])) if made.keep_mesh and \
            job.files.get("mesh") else None
        write_outputs(job, folder, made, ctx.source_result["gaussian"], ctx.source_result["mesh"], progress,
                      ctx.cancelled, own_mesh=own, overlap=overlap)


# ------------------------------------------------------------------ what the steps share
def start(ctx: JobContext, job: Job, stages: list) -> tuple:
    """(the settings the job runs with on this device, its seed drawn; the job's progress over `stages` and the
    stages that write its files)."""
    settings = job.used_settings = for_device(job, job.settings.with_seed(), ctx.device)
    return settings, ctx.tracker(job, stages + export_stages(settings, overlaps_files(ctx.device)))


def check_cancel(ctx: JobContext) -> None:
    if ctx.cancelled():
        raise Cancelled()


def images_then_model(ctx: JobContext, job: Job, settings: GenerationSettings, progress: ProgressTracker,
                      which: str = "image") -> tuple:
    """(the job's prepared images, the pipeline, the model): the input first, so that a bad image fails in a second,
    before the model is loaded and before anything is written (a wrong file leaves no folder behind); then the
    model `which` ready (``ready``). Their seconds in the job's timings ("preprocess", "ready")."""
    progress("preprocess", 0, 1)
    t = time.perf_counter()
    images = prepared_images(ctx, job, settings)
    job.timings["preprocess"] = time.perf_counter() - t
    check_cancel(ctx)
    t = time.perf_counter()
    pipeline, model = ready(ctx, which, settings, progress)
    job.timings["ready"] = time.perf_counter() - t
    return images, pipeline, model


def keep_finished_result(job: Job, export) -> None:
    """A job that fails or stops while its files are written: ``export`` (an ``ExportJob``) closed, which stops its
    side work (a partial preview goes with it: atomic_path) and waits for the kept result; result.npz, once written
    whole, stays in the folder and in ``job.files``, so that an export makes the files without sampling again."""
    export.close()
    job.files.update(export.side_value_if_any("kept-result") or {})


def ready(ctx: JobContext, which: str, settings: GenerationSettings, progress: ProgressTracker) -> tuple:
    """(the pipeline `which` names, loaded and set to the job's precision and offload (budget.set_job_policy); its
    model). The clock of
    the ETA starts again after a load."""
    pipeline, model = ctx.pipeline(which, progress)
    set_job_policy(pipeline, settings)          # "auto" precision / offload picked to fit a VRAM budget
    check_cancel(ctx)
    progress.restart_clock()
    return pipeline, model


@contextlib.contextmanager
def write_preprocessed(job: Job, folder: JobFolder, images: list):
    """The preprocessed images' PNGs written in a thread while the body (the sampling) runs: their compression
    (zlib, which leaves the GIL to the sampling) and their files are then off the job's path. Joined whatever the
    body does, so that the folder holds them, whole, when the job goes on or fails (each is atomic); a failure to
    write them is the job's, after the body's own."""
    copies = [im.copy() for im in images]           # the thread's own: the sampling reads the images meanwhile
    writer = Background("trellis-preprocessed", lambda: folder.write_preprocessed(copies))
    try:
        yield
    finally:
        writer.join()
    job.files.update(writer.result())
    job.timings["preprocessed_png"] = round(writer.seconds, 4)


def make_folder(ctx: JobContext, job: Job) -> JobFolder:
    folder = ctx.folder()
    job.out_dir = str(folder.path)
    return folder


def finish(ctx: JobContext, job: Job, folder: JobFolder, settings: GenerationSettings, gaussian, mesh,
           progress, own_mesh=None) -> None:
    """The files (`own_mesh`: a new look's mesh files are the user's model textured), the decoded result written for
    exports after a restart (result.npz), then kept in memory for exports in this run (keep_result)."""
    write_outputs(job, folder, settings, gaussian, mesh, progress, ctx.cancelled, keep=True, own_mesh=own_mesh,
                  overlap=overlaps_files(ctx.device))
    if job.keep_result:
        ctx.keep({"gaussian": gaussian, "mesh": mesh})


def load_mesh(source, ext: str):
    """The job's 3-D model as a trimesh.Trimesh, checked as the voxeliser will check it; InputError otherwise."""
    import io

    from trellis.representations import voxels

    try:
        # The library reads it: the format's up axis (glTF / OBJ y up) and regular files only.
        data = io.BytesIO(bytes(source[1])) if isinstance(source, tuple) else source
        mesh = voxels.load_mesh(data, file_type=ext)
        voxels.check_mesh(mesh.vertices, mesh.faces)
    except voxels.MeshInputError as err:
        raise InputError(str(err)) from None
    except Exception as err:           # trimesh raises many kinds on a damaged file
        raise InputError(f"the 3-D model cannot be read ({type(err).__name__}: {err}); export it again as GLB, "
                         f"OBJ, PLY or STL") from None
    return mesh


def load_own_mesh(source, ext: str):
    """The job's 3-D model as its file holds it (``trellis.representations.mesh_input.UserMesh``), for keep_mesh."""
    import io

    from trellis.representations.mesh_input import MeshInputError, load_mesh_as_is

    try:
        data = io.BytesIO(bytes(source[1])) if isinstance(source, tuple) else source
        return load_mesh_as_is(data, file_type=ext)
    except MeshInputError as err:
        raise InputError(str(err)) from None


def prepared_images(ctx: JobContext, job: Job, settings: GenerationSettings) -> list:
    """The job's images prepared for the pipeline (background removed with the worker's session, if loaded)."""
    remover = ctx.background_remover()
    return [prepare_image(x, settings.preprocess, remover) for x in job.inputs]


def for_device(job: Job, settings: GenerationSettings, device: str) -> GenerationSettings:
    """`settings` as the job runs them on `device`; every value lowered for the device is a warning."""
    used = settings.for_device(device)
    text = device_change_warning(settings, used)
    if text:
        job.warn(text)
    return used


def note_bake_coverage(job: Job, info: dict) -> None:
    """A texture baked from almost nothing the renders showed says so (trellis.export.bake.coverage)."""
    from trellis.export import MIN_OBSERVED_SHARE

    fallback = info.get("bake_fallback")
    if not fallback:
        return
    share = info.get("observed_share", 0.0)
    text = (f"The texture bake saw only {fallback['observed_share_before']:.1%} of the texture in its renders of the "
            f"model (under {MIN_OBSERVED_SHARE:.0%}: the Gaussians are mostly transparent, e.g. untrained or test "
            f"weights)")
    if fallback["used"]:
        text += f"; it was baked again from their fainter parts, which showed {share:.1%}"
    else:
        text += "; baking again from their fainter parts showed no more"
    if share < MIN_OBSERVED_SHARE:
        text += ", so its colours are mostly guessed"
    job.warn(text + ". The rest of the texture is filled in from the colours seen: check the GLB / OBJ colours.")


def note_truncation(job: Job, pipeline) -> None:
    """A prompt longer than CLIP's 77 tokens was cut: the job says so (the reference cuts silently)."""
    encoder = getattr(pipeline, "text_cond_model", None)
    if any(getattr(encoder, "last_truncated", ()) or ()):
        job.warn("The prompt is longer than the text model reads (77 tokens, about 60 words): only its "
                 "beginning was used. Put what matters first, or shorten it.")


def overlaps_files(device: str) -> bool:
    """Whether the preview video is made while the mesh is baked (a GPU: the preview's renders and encoder and the
    bake's CPU stages keep each other's gaps busy) rather than before it (a CPU: both want every core)."""
    return not str(device).startswith("cpu")


def write_outputs(job: Job, folder: JobFolder, settings: GenerationSettings, gaussian, mesh, progress,
                  cancel, keep: bool = False, own_mesh=None, overlap: bool = False) -> None:
    """The requested files, cheapest first (so that something useful lands early), each atomic: the library's export
    started (``mesh_files.start_export``, the export's scheduler) with what runs beside it, the PLY written, the
    export waited for, the mesh files written, then what ran beside it waited for. Beside it: with `keep`,
    result.npz (the decoded result, for exports after a restart); with `overlap`, the preview video, rendered and
    encoded while the mesh is baked and its files written, those side by side (``mesh_files.write_mesh_files``; the
    same files; timings["export"] gives each part's seconds, "files_wall" the whole and "preview_held" how long the
    preview waited through the bake's critical GPU stages). `own_mesh`: the mesh files are that model with the look
    baked onto it instead of the decoded mesh."""
    from trellis.export import SideWork

    t0 = time.perf_counter()
    fmt = set(settings.formats)
    meshes = any(kind in fmt for kind in MESH_FORMATS)
    stage = "bake" if textured_files(settings) else "shape"       # "shape": no texture, nothing baked
    beside = []
    if keep:        # compressed in a thread (zlib leaves the GIL to the GPU work): in turn it adds its second
        beside.append(SideWork("kept-result", lambda stopped: folder.write_result(gaussian, mesh)))
    preview_beside = overlap and meshes and "mp4" in fmt
    if preview_beside:       # silent: the bake's progress is the job's
        beside.append(SideWork("preview", lambda stopped: write_preview(job, folder, settings, gaussian, quiet,
                                                                        stopped), on_gpu=True, with_bake=True,
                               imports=("imageio_ffmpeg", "trellis.utils.render_utils")))
    # Started before the PLY and the preview video, so that the mesh's decimation (CPU, child processes) runs while
    # they are written (GPU); with neither to overlap, the bake does it all in turn.
    with timed(job, f"{stage}_start") if meshes else contextlib.nullcontext():
        export = start_export(gaussian, mesh, settings, own_mesh, early=bool(fmt & {"ply", "mp4"}), beside=beside,
                              cancel=cancel)
    try:
        if "ply" in fmt:
            with timed(job, "ply"):
                progress("ply", 0, 1)
                job.files.update(folder.write_ply(gaussian))
                progress("ply", 1, 1)
        if "mp4" in fmt and not preview_beside:
            job.files.update(write_preview(job, folder, settings, gaussian, progress, cancel))
        if meshes:
            with timed(job, stage):
                textured = export.bake(progress=lambda sub, done, total: progress(stage, done, total, sub))
            job.timings[f"export_{stage}_stages"] = jsonable(textured.info)
            note_bake_coverage(job, textured.info)
            write_mesh_files(job, folder, settings, textured, progress, own=own_mesh is not None,
                             together=export if overlap else None, cancel=cancel)
        if preview_beside:
            if export.side_running("preview"):
                progress("encode", 0, 1)
            job.files.update(export.side_result("preview"))
            progress("encode", 1, 1)
            job.timings.setdefault("export", {})["preview_held"] = round(export.held_s, 3)
        if keep:
            job.files.update(export.side_result("kept-result"))
            job.timings.setdefault("export", {})["result"] = export.side_seconds("kept-result")
        job.timings.setdefault("export", {}).update(files_wall=time.perf_counter() - t0, overlapped=preview_beside)
    except BaseException:
        keep_finished_result(job, export)
        raise
    finally:
        export.close()


def quiet(*_args, **_kwargs) -> None:
    """A progress callback that reports nothing."""


def write_preview(job: Job, folder: JobFolder, settings: GenerationSettings, gaussian, progress, cancel) -> dict:
    """preview.mp4: the turntable rendered, then encoded (timings["export"]: "video", "encode" and both, "mp4");
    its files."""
    with timed(job, "mp4"):
        with timed(job, "video"):
            frames = render_preview(gaussian, settings, progress, cancel)
        with timed(job, "encode"):
            return folder.write_video(frames, settings.video_fps, cancel=cancel,
                                      progress=lambda i, n: progress("encode", i, n))


def render_preview(gaussian, settings: GenerationSettings, progress, cancel):
    """The turntable frames of the preview video."""
    from trellis.utils.render_utils import render_video

    return render_video(gaussian, resolution=settings.video_resolution, num_frames=settings.video_frames,
                        verbose=False, progress=lambda i, n: progress("video", i, n), cancel=cancel,
                        only=("color",))["color"]


def settings_record(job: Job, settings: GenerationSettings, model_path: str, device: str,
                    extra: Optional[dict] = None) -> dict:
    """settings.json of a started job: everything needed to run it again (the seed used, the model, the device,
    versions), made by ``queued.settings_record`` as every job's; `extra`: the context's entries (JobContext.record)."""
    return queued.settings_record(job, model_path, settings, device,
                                  {"torch": torch.__version__, "python": sys.version.split()[0]}, extra)
