"""The things a worker does with a job, each readable top to bottom in one function:

    generate: input images -> (model) -> job folder -> sample -> decode -> files
    text:     a prompt -> (text model) -> job folder -> sample -> decode -> files
    variant:  a 3-D model + a prompt or an image -> (model) -> job folder -> stage 2 on its voxels -> files
    export:   a kept result of an earlier job -> job folder -> files

and the file writing they share (`write_outputs`), cheapest file first so that something useful lands
early. Each step gets the job and its context (context.JobContext: the models, the folder, progress, cancel,
where a kept result goes), nothing else.
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from datetime import datetime

import torch

from trellis.core.callbacks import Cancelled

from ..settings import GenerationSettings, device_change_warning, device_changes
from ..settings_table import MESH_FORMATS
from .background import Background
from .export_reuse import link_preview, source_preview, without_preview
from .budget import set_job_policy
from .context import JobContext
from .folder import JobFolder, jsonable
from .inputs import prepare_image
from .job import InputError, Job, describe_input
from .meshes import check_mesh
from .mesh_files import OwnMeshBake, bake_job, timed, write_mesh_files
from .preview_gate import PreviewGate
from .progress import GENERATE_STAGES, TEXT_STAGES, VARIANT_STAGES, ProgressTracker, export_stages, textured_files
from .sampling import sample

# result.npz's thread starts after the bake's start (the merge and the cut into pieces, on the GPU, which the
# decimation's children wait for) rather than before it: its host copies of the decoded result would queue ahead of
# that work (docs/benchmarks/app.md#the-apps-whole-job).
RESULT_AFTER_BAKE_START = True


def generate(ctx: JobContext, job: Job) -> None:
    """A generation job: the files of `job.settings.formats` from the job's image(s)."""
    settings, progress = start(ctx, job, GENERATE_STAGES)

    # 1. The input first: a bad image fails in a second, before the model is loaded and before
    #    anything is written (a wrong file leaves no folder behind).
    progress("preprocess", 0, 1)
    t = time.perf_counter()
    images = prepared_images(ctx, job, settings)
    job.timings["preprocess"] = time.perf_counter() - t
    check_cancel(ctx)

    # 2. The model, once per worker; precision / offload switched per job without reloading.
    t = time.perf_counter()
    pipeline, model = ready(ctx, "image", settings, progress)
    job.timings["ready"] = time.perf_counter() - t

    # 3. The job folder: inputs and settings (the preprocessed image(s) are written while the model samples).
    t = time.perf_counter()
    folder = make_folder(ctx, job)
    folder.copy_inputs(job)
    job.files.update(folder.write_settings(settings_record(job, settings, model, ctx.device)))
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
    finish(ctx, job, folder, settings, gaussian, mesh, progress)


def generate_text(ctx: JobContext, job: Job) -> None:
    """A text job: the files of `job.settings.formats` from the job's prompt."""
    settings, progress = start(ctx, job, TEXT_STAGES)

    # 1. The text model, once per worker and size (downloaded on its first use); then the job folder.
    pipeline, model = ready(ctx, f"text:{settings.text_model_size}", settings, progress)
    folder = make_folder(ctx, job)
    job.files.update(folder.write_settings(settings_record(job, settings, model, ctx.device)))

    # 2. Sampling, decoding, the files.
    gaussian, mesh = sample(job, pipeline, lambda **a: pipeline.run(job.prompt, **a), settings, progress,
                            ctx.cancelled)
    note_truncation(job, pipeline)
    finish(ctx, job, folder, settings, gaussian, mesh, progress)


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
    record = settings_record(job, settings, model, ctx.device)
    record["mesh"] = name
    job.files.update(folder.write_settings(record))
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
    job.files.update(folder.write_settings(settings_record(job, settings, ctx.model_path, ctx.device)))
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
    """The requested files, cheapest first (so that something useful lands early), each atomic; with `keep`, also
    result.npz (the decoded result, for exports after a restart), written alongside them. `own_mesh`: the mesh
    files are that model with the look baked onto it (mesh_files.OwnMeshBake) instead of the decoded mesh.
    `overlap`: the preview video is rendered and encoded in a thread while the mesh is baked and its files written,
    those side by side (``mesh_files.write_mesh_files``; the same files; timings["export"] gives each part's seconds
    and "files_wall" the whole); it waits through the bake's critical GPU stages (``preview_gate``; "preview_held":
    how long)."""
    t0 = time.perf_counter()
    fmt = set(settings.formats)
    meshes = [kind for kind in MESH_FORMATS if kind in fmt]
    export = kept = preview = None
    stop = threading.Event()                   # set when the job fails or is cancelled: the preview stops too
    gate = PreviewGate()                       # the preview beside the bake waits through its critical GPU stages

    def stopped() -> bool:
        return stop.is_set() or cancel()

    def bake_progress(stage, done, total):
        gate.on_progress(stage, done, total)
        progress(getattr(export, "stage", "bake"), done, total, stage)
    try:
        # result.npz is compressed in a thread while the files are made (zlib leaves the GIL to the GPU work):
        # written in turn, it would add its second to the job.
        def keep_result():
            return Background("trellis-kept-result", lambda: folder.write_result(gaussian, mesh)) if keep else None
        kept = None if RESULT_AFTER_BAKE_START else keep_result()
        if meshes:
            # Started before the PLY and the preview video, so that the mesh's decimation (CPU, child processes)
            # runs while they are written (GPU); with neither to overlap, the bake does it all in turn.
            with timed(job, "bake_start" if textured_files(settings) else "shape_start"):
                export = (bake_job(gaussian, mesh, settings, early=bool(fmt & {"ply", "mp4"})) if own_mesh is None
                          else OwnMeshBake(gaussian, own_mesh, settings))
        if RESULT_AFTER_BAKE_START:
            kept = keep_result()
        if "ply" in fmt:
            with timed(job, "ply"):
                progress("ply", 0, 1)
                job.files.update(folder.write_ply(gaussian))
                progress("ply", 1, 1)
        if "mp4" in fmt:
            if overlap and export is not None:   # silent: the bake's progress is the job's
                # What the preview imports is imported here first: two threads importing modules with native parts
                # for the first time at once can deadlock (the bake imports its own meanwhile).
                import imageio_ffmpeg  # noqa: F401
                import trellis.utils.render_utils  # noqa: F401
                preview = Background("trellis-preview", lambda: on_own_stream(
                    gaussian.get_xyz.device, lambda: write_preview(job, folder, settings, gaussian, quiet,
                                                                   lambda: gate.stopped(stopped))))
            else:
                job.files.update(write_preview(job, folder, settings, gaussian, progress, cancel))
        if export is not None:
            stage = getattr(export, "stage", "bake")          # "shape": no texture, nothing baked
            with timed(job, stage):
                try:
                    textured = export.bake(progress=bake_progress, cancel=cancel)
                finally:
                    gate.release()
            job.timings[f"export_{stage}_stages"] = jsonable(textured.info)
            note_bake_coverage(job, textured.info)
            write_mesh_files(job, folder, settings, textured, progress, own=own_mesh is not None, together=overlap,
                             cancel=cancel)
        if preview is not None:
            if preview.running():
                progress("encode", 0, 1)
            job.files.update(preview.result())
            progress("encode", 1, 1)
            job.timings.setdefault("export", {})["preview_held"] = round(gate.held_s, 3)
        if kept is not None:
            job.files.update(kept.result())
            job.timings.setdefault("export", {})["result"] = kept.seconds
        job.timings.setdefault("export", {}).update(files_wall=time.perf_counter() - t0,
                                                    overlapped=preview is not None)
    except BaseException:
        stop.set()
        gate.release()
        if preview is not None:
            preview.join()                     # its partial mp4 is gone (atomic_path) before the job ends
        if kept is not None:                   # a failed or cancelled job keeps no result to export
            for path in (kept.value_if_any() or {}).values():
                with contextlib.suppress(OSError):
                    os.remove(path)
        raise
    finally:
        if export is not None:
            export.close()


def on_own_stream(device: torch.device, fn):
    """`fn()` on a CUDA stream of its own, where `device` is a GPU: its waits (a render's sizes, a frame's copy to
    the host) then wait for its own kernels, not for the bake's queued before them on the default stream."""
    if device.type != "cuda":
        return fn()
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))     # the Gaussians are complete before it reads them
    with torch.cuda.stream(stream):
        out = fn()
    stream.synchronize()
    return out


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


def settings_record(job: Job, settings: GenerationSettings, model_path: str, device: str) -> dict:
    """settings.json: everything needed to run the job again (the seed used, the model, the device, versions)."""
    source = {"source_job": job.source_id} if job.kind == "export" else {}
    prompt = {"prompt": job.prompt} if job.prompt is not None else {}
    return {"job_id": job.id, "kind": job.kind, **source, "seed": settings.seed,
            "seed_was_random": job.settings.randomize_seed, "model": model_path, "device": device,
            "inputs": [describe_input(x) for x in job.inputs], **prompt,
            "created": datetime.fromtimestamp(job.created).isoformat(timespec="seconds"),
            "versions": {"torch": torch.__version__, "python": sys.version.split()[0]},
            "settings": settings.to_dict(), **_device_changes(job, settings)}


def _device_changes(job: Job, settings: GenerationSettings) -> dict:
    """{"changed_for_device": {field: [submitted, used]}} for the fields `for_device` replaced."""
    changed = {k: list(v) for k, v in device_changes(job.settings, settings).items()}
    return {"changed_for_device": changed} if changed else {}
