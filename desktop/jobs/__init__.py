"""Job runner: a FIFO queue of image-to-3D (and text-to-3D, new-look) jobs served by one worker thread per GPU.

    runner = JobRunner("microsoft/TRELLIS-image-large", "outputs", gpus=[0, 1])
    job = runner.submit(["photo.png"], GenerationSettings.from_preset("fast"))
    job.wait()                 # or poll job.state / job.progress
    job.files["glb"]           # <outputs>/<YYYYmmdd-HHMMSS>-<id8>/model.glb
    runner.submit_request(JobRequest(prompt="a red wooden chair", settings=settings))  # the text model: lazily
    runner.submit_request(JobRequest(mesh="chair.glb", prompt="made of gold"))        # a new look (or images=photo)

`JobRequest` (request.py) is what every surface asks for: its kind follows from what it holds (images, a prompt, a
3-D model with a prompt or one image), and `request.checked(names)` says what is missing or wrong in the surface's
own words; `runner.submit(images, ...)` is `submit_request` of an image job.

Each worker loads the pipeline once, lazily, on its first job, and switches precision / offloading per
job without reloading. A job of the other image family (`submit(..., family="trellis2")`, where TRELLIS.2 is
installed; the families and the rule for settings a family does not use: desktop/families) unloads it and loads that
family's: one image pipeline is held at a time. A job's folder receives, as they are finished (each written
atomically: a temp file then a rename, so a failure never leaves a half-written file): the input image(s),
`settings.json` (every parameter and the seed actually used), `preprocessed.png`, `preview.mp4`,
`model.ply`, `model.glb`, `model.obj` (+ `model.mtl`, `model.png`) as requested, and `timings.json`
(or `error.json` when the job failed or was cancelled). The folder is made once the input image is
read and the model is loaded, so a wrong file or a missing model leaves no folder behind. A failure of
any kind fails that job only (`Job.error`, a message for the user; `Job.error_kind`, one of
ERROR_KINDS): the worker goes on with the next one.

Preview first, asset later: a job submitted with `keep_result=True` keeps its decoded result (the
Gaussians and the mesh) in memory once it is done; `runner.submit_export(job.id, texture_size=2048)`
then queues an export job that writes other files (GLB, OBJ, PLY, MP4) from that result without
sampling again, into a folder of its own. Only the `keep_results` most recent results are kept.

The package, one concern per module (each imports only those listed before it):

    jsonio.py    the job folder's JSON files written, and read back without trusting them
    job.py       Job, JobState, Progress, the error classes (plain data, no torch)
    request.py   JobRequest: what a surface asks for (images, a prompt, a new look), its kind and what is wrong
                 job_for: the Job a request becomes, by the one family rule (the runner and the batch)
    folder.py    the job folder: its file names, atomic writers, readers (history, recovery), the lock
    progress.py  stage weights -> the job's fraction and ETA
    failures.py  an exception -> (kind, message that says what to do)
    inputs.py    input image -> the pipeline's 518² image (InputError)
    meshes.py    a new-look job's 3-D model file: its format, checked from its header (InputError)
    queued.py    accepted jobs written down until they end (a stop leaves them as interrupted job folders)
    recovery.py  the outputs folder put in order at start (unfinished jobs marked interrupted)
    rerun.py     an ended job queued again from its folder (its inputs, settings and seed)
    context.py   JobContext: what a step gets for one job (models, folder, progress, cancel, kept result)
    sampling.py  settings -> sampler parameters, and the one sampling call (jobs and batch items)
    models.py    the pipelines loaded, the text model fetched (the app's one importer of installer.weights)
    steps.py     generate / text / variant / export, top to bottom, from the job and its context only
    warmup.py    the background warm-up: the load and the tiny generation
    jobqueue.py  the queue of waiting jobs and the runner's record of each job (Entry), under one lock
    worker.py    one thread per device: takes jobs, makes their context, runs their step, records the end
    runner.py    JobRunner: submit, kept results, cancel, warm-up requests, shutdown
    late.py      LateRunner: a server's runner made in a thread while its port already answers

Names are imported lazily (PEP 562), so that `from desktop.jobs import folder` (the UI's history) does
not import torch; `from desktop.jobs import JobRunner` works as before.
"""
import importlib

_EXPORTS = {
    "job": ("JobState", "STAGE_LABELS", "ERROR_KINDS", "JOB_KINDS", "InputError", "ModelLoadError", "UnknownJobError",
            "NoResultError", "RerunError", "Progress", "Job"),
    "request": ("JobRequest", "RequestError", "FieldNames", "REQUEST_KINDS"),
    "folder": ("JobFolder", "atomic_path", "write_atomic"),
    "progress": ("ProgressTracker", "export_stages"),
    "failures": ("classify_failure",),
    "inputs": ("prepare_image", "check_image"),
    "meshes": ("check_mesh", "MAX_MESH_BYTES", "MESH_FORMATS"),
    "runner": ("JobRunner",),
    "jobqueue": ("QueueFullError",),
    "late": ("LateRunner", "RunnerNotStarted"),
    "options": ("DEFAULT_MODEL",),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name):
    module, attr = _WHERE.get(name), name
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    package = "desktop" if module == "options" else __name__
    value = getattr(importlib.import_module(f"{package}.{module}"), attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_WHERE))
